#!/usr/bin/env bash
# Cross-compiles static narun binaries for the three device architectures
# (or those NARUN_ARCHES names), checks that each is static, and only then
# puts them all into dist/, replacing the older ones, and prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${NARUN_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
pkg=github.com/narun/narun/applets/internal/buildinfo
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit"
arches=${NARUN_ARCHES:-"amd64 arm64 riscv64"}

# Without readelf the check below would find nothing and call any binary
# static.
if ! command -v readelf >/dev/null; then
	echo "build: readelf not found (apt-get install binutils): it checks that the binaries are static" >&2
	exit 1
fi

mkdir -p dist
# Every arch is built into a directory of its own first, and moves into
# dist/ only once all are built and static: a build that fails part-way
# leaves dist/ as it was, not a mix of two commits' binaries.
stage=$(mktemp -d dist/.build.XXXXXX)
trap 'rm -rf "$stage"' EXIT
for arch in $arches; do
	out=$stage/narun-linux-$arch
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -tags urfave_cli_no_docs -ldflags "$ldflags" -o "$out" .
	if readelf -lW "$out" | grep -q INTERP || readelf -dW "$out" 2>/dev/null | grep -q NEEDED; then
		echo "build: narun-linux-$arch is not static; dist/ left as it was" >&2
		exit 1
	fi
done
for arch in $arches; do
	out=dist/narun-linux-$arch
	mv -f "$stage/narun-linux-$arch" "$out"
	size=$(stat -c %s "$out")
	awk -v out="$out" -v size="$size" 'BEGIN { printf "%-26s %6.1f MB (%.1f MiB)  static\n", out, size / 1000000, size / 1048576 }'
done
