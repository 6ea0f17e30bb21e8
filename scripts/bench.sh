#!/usr/bin/env bash
# bench.sh: the gateway path against the same handler served directly.
#
# Builds narun and testdata/apps/hello, starts `narun up` (embedded NATS and
# the gateway in one process, talking in-process; its runner idles), hello
# as a NATS consumer over TCP and hello as a plain HTTP server, then runs wrk
# against both for each case and prints requests/s, p50, p99, the ratio
# gateway/direct and the latency the gateway path adds at the median.
#
# Usage: scripts/bench.sh [DURATION]   (default 10s per run)
# Env:   BENCH_CONNS="1 16 64"  BENCH_CASES="16B 64KiB 1MiB"  BENCH_PORT_BASE=18000
# Not a test: the figures depend on the machine. wrk runs on the same cores.
set -euo pipefail

DURATION=${1:-10s}
CONNS=${BENCH_CONNS:-"1 16 64"}
CASES=${BENCH_CASES:-"16B 64KiB 1MiB"}
BASE=${BENCH_PORT_BASE:-18000}
NATS_ADDR=127.0.0.1:$((BASE + 1))
GW_ADDR=127.0.0.1:$((BASE + 2))
ADMIN_ADDR=127.0.0.1:$((BASE + 3))
DIRECT_ADDR=127.0.0.1:$((BASE + 4))
RUNNER_ADMIN_ADDR=127.0.0.1:$((BASE + 5))

command -v wrk >/dev/null || { echo "bench: wrk not found (apt-get install wrk)" >&2; exit 1; }
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "building narun and hello..." >&2
CGO_ENABLED=0 go build -o "$WORK/narun" .
CGO_ENABLED=0 go build -o "$WORK/hello" ./testdata/apps/hello

cat >"$WORK/narun.toml" <<EOF
log_level = "warn"
[gateway]
[[gateway.routes]]
path = "/hello/"
service = "hello"
EOF

"$WORK/narun" up --config "$WORK/narun.toml" --data-dir "$WORK/data" --nats-listen "$NATS_ADDR" \
	--listen "$GW_ADDR" --admin-listen "$ADMIN_ADDR" --runner-admin-listen "$RUNNER_ADMIN_ADDR" >"$WORK/up.out" 2>"$WORK/up.log" &
PIDS+=($!)
export NARUN_NATS_URL=nats://$NATS_ADDR
"$WORK/hello" 2>"$WORK/hello-nats.log" &
PIDS+=($!)
"$WORK/hello" --http "$DIRECT_ADDR" 2>"$WORK/hello-http.log" &
PIDS+=($!)

wait_ok() { # url what
	for _ in $(seq 200); do
		if curl -fsS -o /dev/null -X POST -d '{"name":"x"}' "$1" 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "bench: $2 not ready; logs in $WORK" >&2
	cat "$WORK"/*.log >&2
	exit 1
}
wait_ok "http://$DIRECT_ADDR/hello/" "direct hello"
wait_ok "http://$GW_ADDR/hello/" "gateway"

# Bodies: 16 B is the greeting; larger ones go to the echo path, which
# reads the body and answers its length.
printf '{"name":"bench"}' >"$WORK/16B"
head -c 65536 /dev/urandom >"$WORK/64KiB"
head -c 1048576 /dev/urandom >"$WORK/1MiB"
cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
function done(summary, latency, requests)
	io.write(string.format("BENCH %.1f %.3f %.3f %d %d\n",
		summary.requests / (summary.duration / 1e6),
		latency:percentile(50) / 1000, latency:percentile(99) / 1000,
		summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
		summary.requests))
end
EOF

run() { # url body conns -> "rps p50ms p99ms errors requests"
	local threads=2
	[ "$3" -lt 2 ] && threads=1
	BENCH_BODY="$WORK/$2" wrk -t"$threads" -c"$3" -d"$DURATION" --timeout 10s -s "$WORK/post.lua" "$1" | awk '/^BENCH/ {print $2, $3, $4, $5, $6}'
}

printf '%-6s %4s | %10s %8s %8s | %10s %8s %8s | %6s %9s\n' body conns "direct/s" "p50 ms" "p99 ms" "gateway/s" "p50 ms" "p99 ms" ratio "+p50 ms"
for body in $CASES; do
	path=/hello/echo
	[ "$body" = 16B ] && path=/hello/
	for c in $CONNS; do
		read -r drps dp50 dp99 derr dn < <(run "http://$DIRECT_ADDR$path" "$body" "$c")
		read -r grps gp50 gp99 gerr gn < <(run "http://$GW_ADDR$path" "$body" "$c")
		ratio=$(awk -v g="$grps" -v d="$drps" 'BEGIN { printf "%.0f%%", (d > 0 ? 100 * g / d : 0) }')
		added=$(awk -v g="$gp50" -v d="$dp50" 'BEGIN { printf "%.3f", g - d }')
		printf '%-6s %4s | %10.0f %8.3f %8.3f | %10.0f %8.3f %8.3f | %6s %9s\n' "$body" "$c" "$drps" "$dp50" "$dp99" "$grps" "$gp50" "$gp99" "$ratio" "$added"
		if [ "$derr" != 0 ] || [ "$gerr" != 0 ]; then
			echo "  errors: direct $derr of $dn, gateway $gerr of $gn" >&2
		fi
	done
done
