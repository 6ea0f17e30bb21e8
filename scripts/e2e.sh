#!/usr/bin/env bash
# End-to-end tests on test hosts made of network namespaces (root only):
# builds narun once and runs testdata/e2e against it. With
# NARUN_E2E_WRITE_REPORT=1 the suite writes its results to docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "e2e: needs root to create network namespaces" >&2
	exit 1
fi
bin=$(mktemp -d)/narun
cleanup() {
	# The tests clean up after themselves; this covers a test binary that
	# was killed (timeout) before its cleanups ran.
	for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^nre2e/ {print $1}'); do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "$ns" 2>/dev/null || true
	done
	for link in $(ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^nre2e/ {sub(/@.*/, "", $2); print $2}'); do
		ip link del "$link" 2>/dev/null || true
	done
	rm -rf "$(dirname "$bin")"
}
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$bin" .
report=
if [ "${NARUN_E2E_WRITE_REPORT:-}" = 1 ]; then
	report=$PWD/docs/RELIABILITY.md
fi
log=$(dirname "$bin")/go-test.log
# The six tests run at once: they spend their time waiting on elections,
# restarts and timeouts (0.7 of a core on average), and go test's default
# of one at a time per core ran them in pairs (211 s against 125 s).
status=0
NARUN_E2E_BINARY=$bin NARUN_E2E_REPORT=$report go test -count=1 -parallel 6 -timeout 20m -v ./testdata/e2e/ 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
	# With -v, the lines of parallel tests interleave and a failure's
	# message can be far above the end of a long log, which is all a CI
	# summary shows: say again what each failed test printed, in one place.
	awk '
		/^=== (RUN|NAME|CONT) / { cur = $3; next }
		/^=== / { next }
		/^(FAIL|PASS|ok)($|[ \t])/ { cur = ""; next }
		/^ *--- FAIL: / { if (!($3 in failed)) order[n++] = $3; failed[$3] = 1; next }
		/^ *--- (PASS|SKIP): / { next }
		cur != "" { out[cur] = out[cur] $0 "\n" }
		END {
			# Subtests first: their parents fail because they did.
			for (i = n - 1; i >= 0; i--) {
				t = order[i]
				if (t in out) printf "== what failed %s printed\n%s", t, out[t]
			}
		}' "$log"
fi
exit "$status"
