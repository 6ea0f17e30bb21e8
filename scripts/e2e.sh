#!/usr/bin/env bash
# End-to-end tests on test hosts made of network namespaces (root only):
# builds narun once and runs testdata/e2e against it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "e2e: needs root to create network namespaces" >&2
	exit 1
fi
bin=$(mktemp -d)/narun
trap 'rm -rf "$(dirname "$bin")"' EXIT
CGO_ENABLED=0 go build -o "$bin" .
NARUN_E2E_BINARY=$bin go test -count=1 -timeout 10m -v ./testdata/e2e/
