#!/usr/bin/env bash
# Cross-compiles static narun binaries for the three device architectures
# into dist/, checks that each is static, and prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${NARUN_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
pkg=github.com/narun/narun/applets/internal/buildinfo
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit"
arches=${NARUN_ARCHES:-"amd64 arm64 riscv64"}

mkdir -p dist
for arch in $arches; do
	out=dist/narun-linux-$arch
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -tags urfave_cli_no_docs -ldflags "$ldflags" -o "$out.tmp" .
	if readelf -lW "$out.tmp" | grep -q INTERP || readelf -dW "$out.tmp" 2>/dev/null | grep -q NEEDED; then
		echo "build: $out is not static" >&2
		exit 1
	fi
	mv "$out.tmp" "$out"
	size=$(stat -c %s "$out")
	printf '%-26s %6.1f MB (%.1f MiB)  static\n' "$out" "$(echo "$size / 1000000" | bc -l)" "$(echo "$size / 1048576" | bc -l)"
done
