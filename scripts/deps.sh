#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine with Go: the real
# nats CLI, qemu-user-static, chromium, iproute2, readelf for
# scripts/build.sh, a C toolchain for the race detector (it needs cgo) and
# python3 for docs/PROTOCOL.md's Python responder; and wrk, for
# scripts/bench.sh.
# Idempotent; quiet when everything is already there.
set -euo pipefail

gobin=$(go env GOPATH)/bin
if ! command -v nats >/dev/null && [ ! -x "$gobin/nats" ]; then
	echo "deps: installing the nats CLI (natscli v0.5.0)"
	go install github.com/nats-io/natscli/nats@v0.5.0
fi

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v chromium >/dev/null || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)
command -v readelf >/dev/null || missing+=(binutils)
command -v gcc >/dev/null || missing+=(gcc)
command -v python3 >/dev/null || missing+=(python3)
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${missing[*]}; run as root or install them with apt-get" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
