#!/usr/bin/env bash
# The whole test suite: installs the tools it needs, vets, runs every Go
# test (root-only sandbox tests included when run as root), those of the
# concurrent packages under the race detector, the pure packages again under
# qemu for arm64 and riscv64, the static release builds, the consumer
# library for other systems, short fuzz runs and, as root, the end-to-end
# suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$(go env GOPATH)/bin"
export NARUN_REQUIRE_TOOLS=1
export CGO_ENABLED=0

# Each stage says when it starts, so a slow CI run shows which one grew.
stage() { echo "== $* (at $SECONDS s)"; }

scripts/deps.sh

# ./... leaves out testdata; the test app has a test of its own.
stage "go vet"
go vet ./... ./testdata/apps/hello/

# The packages where goroutines meet (request pools, reply muxes, process
# supervision) run under the race detector below, which needs cgo; the
# others run here. The same tests run either way (none depends on the
# detector), and the suite is bound by the CPU of two cores: running
# those four twice cost about 75 s for nothing the race run misses.
# The runner's package runs here, not under the detector: its tests
# start an embedded NATS server each, and two thirds of the CPU its
# test process took under -race (342 s of CPU, 212 s of the stage's
# 414) went to the detector watching nats-server's own goroutines. The
# runner's code still runs under it in ctl's tests, which drive a real
# runner through deploys, restarts and deletions, and its supervisor in
# its own package. ctl's package, the longest, comes first: go test
# starts the packages in the order given, two at a time, and the others
# then share the second slot rather than leave ctl to finish alone.
raced=(./applets/ctl/ ./consumer/ ./applets/internal/gateway/ ./applets/internal/supervisor/)
# The runner's package, the longest of the others, comes first for the
# same reason.
runner=./applets/internal/runner/
unraced=$(go list ./... ./testdata/apps/hello/ | grep -v -x -F "$(go list "${raced[@]}" "$runner")")

# Most tests wait on servers, processes and timers rather than the CPU:
# four at a time in each package, and three packages at a time (go test's
# default is one per core), keep two cores busy: two packages at a time
# left a third of them idle (173 s of wall time for 223 s of CPU; 132 s
# with three).
stage "go test (linux/$(go env GOARCH))"
# shellcheck disable=SC2086 # one package a word
go test -count=1 -p 3 -parallel 4 -timeout 12m "$runner" $unraced

# Under the race detector their tests wait as the others do: four at a
# time here too, not the default of one per core. The timeout only catches
# a hang.
stage "go test -race (ctl, consumer, gateway, supervisor)"
CGO_ENABLED=1 go test -race -count=1 -parallel 4 -timeout 20m "${raced[@]}"

# The pure packages run under user-mode qemu, so the three architectures
# are exercised, not just compiled. Tests that exec the test binary again
# are left out: without binfmt_misc the kernel cannot run a foreign binary.
# So is the one that starts processes from several threads by the hundred:
# user-mode qemu can hang in a fork of a multi-threaded process (seen on
# riscv64), and the file lock it checks is the kernel's, alike on every arch.
# So are the cluster-member tests, half a minute each of nats-server's own
# elections and catch-up, which no architecture changes.
# These tests are built with the release build's -trimpath and tags, so
# that the release build below finds the packages they compiled for each
# architecture in the build cache: with other flags it compiled them all
# again (50 s against 270 s for riscv64 on this 2-core VM).
release_flags=(-trimpath -tags urfave_cli_no_docs)
for arch in arm64 riscv64; do
	case $arch in arm64) q=qemu-aarch64-static ;; riscv64) q=qemu-riscv64-static ;; esac
	stage "go test under $q (linux/$arch)"
	GOARCH=$arch go test "${release_flags[@]}" -count=1 -timeout 5m -exec "$q" -skip '^(TestDataDirFreeDespiteProcessStarts|TestClusterMember.*)$' ./applets/internal/config/ ./embednats/
	GOARCH=$arch go test "${release_flags[@]}" -count=1 -timeout 5m -exec "$q" -run '^(TestDispatchInProcess|TestInstall)$' ./applets/
done

stage "release build (scripts/build.sh)"
scripts/build.sh

# narun runs on Linux, but services that import the consumer package are
# written on any machine: it must keep building there. macOS is where most
# are written, Windows the system least like Linux; the other Unix systems
# differ from these two in nothing the package (the standard library and
# nats.go) uses, and each build compiles the standard library again.
for os in darwin windows; do
	stage "consumer builds for $os"
	GOOS=$os GOARCH=arm64 go build ./consumer/
done

# The sandbox holds what differs between architectures (system call
# numbers, the seccomp filter, stat's field sizes): beyond the three
# released, it must build for the other kinds of edge device narun may be
# built for by hand: 32-bit x86 and ARM (older boards), and big-endian
# MIPS (routers). Each build costs a compile of the standard library, so
# the architectures of servers and mainframes (ppc64, s390x, loong64) are
# left to whoever ports narun there.
stage "sandbox builds for other Linux architectures"
for arch in 386 arm mips; do
	GOARCH=$arch go build ./sandbox/
done

stage "fuzz (short runs)"
# A count, not a duration: with -fuzztime 10s, Go 1.26's fuzz coordinator
# may report "context deadline exceeded" as a failure when the time runs
# out while a worker is busy (go.dev/issue/75804, fixed in Go 1.27).
# 3000 inputs per target keep this stage to about a minute for its
# nineteen targets (10000 took two): a check that each still runs on its
# seeds and what grows from them; NARUN_FUZZTIME=1000000x (say) fuzzes for
# real.
# The list is taken first because a failing command substitution in a for
# list does not trip set -e: the loop would run no target and pass.
pkgs=$(go list ./...)
for pkg in $pkgs; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "-- $pkg $target"
		go test -run '^$' -fuzz "^$target\$" -fuzztime "${NARUN_FUZZTIME:-3000x}" "$pkg"
	done
done
if [ -x scripts/e2e.sh ] && [ "$(id -u)" -eq 0 ]; then
	stage "end to end (scripts/e2e.sh)"
	scripts/e2e.sh
fi
echo "== all tests passed in $SECONDS s"
