#!/usr/bin/env bash
# bench.sh: the gateway path against the same handler served directly, and
# the runner's deploy, restart, scale and memory figures.
#
# gateway part: builds narun and testdata/apps/hello, starts `narun up`
# (embedded NATS and the gateway in one process, talking in-process; its
# runner idles), hello as a NATS consumer over TCP and hello as a plain HTTP
# server, then runs wrk against both for each case and prints requests/s,
# p50, p99, the ratio gateway/direct and the latency the gateway path adds at
# the median.
#
# runner part: a fresh `narun up` (temp data dir, free loopback ports, node
# id "bench") per scenario, measuring
#   - `narun ctl deploy` of hello padded to at least 10 MiB -> first 200
#     through the gateway;
#   - `kill -9` of the instance -> new process and -> first 200 again;
#   - the idle RSS of `narun up`, the time for BENCH_APPS apps (hello on a
#     plain HTTP port, no NATS connection of their own) to be reconciled and
#     running, and the runner's RSS per idle instance.
# It prints each figure next to its target (docs/PERFORMANCE.md). The
# app-count figures write the specs with the `nats` CLI (PATH, then
# $(go env GOPATH)/bin) and are skipped without it.
#
# Usage: scripts/bench.sh [DURATION]   (default 10s per wrk run)
# Env:   BENCH_PARTS="gateway runner"  BENCH_CONNS="1 16 64"
#        BENCH_CASES="16B 64KiB 1MiB"  BENCH_PORT_BASE (default: free ports)
#        BENCH_APPS=100  BENCH_KILLS=5
# Not a test: the figures depend on the machine. wrk runs on the same cores.
set -euo pipefail

DURATION=${1:-10s}
PARTS=${BENCH_PARTS:-"gateway runner"}
CONNS=${BENCH_CONNS:-"1 16 64"}
CASES=${BENCH_CASES:-"16B 64KiB 1MiB"}
APPS=${BENCH_APPS:-100}
KILLS=${BENCH_KILLS:-5}

cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
# A signal (Ctrl-C, a closed pipe) must run cleanup too, or narun up and its
# instances would outlive the script.
trap 'exit 130' INT TERM HUP PIPE

USED_PORTS=" "
# Ports are picked below the kernel's ephemeral range: one the range holds
# may be the local end of a connection (wrk's, curl's) when narun binds it.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
PORT_LOW=$((EPHEMERAL_LOW > 20000 ? 10000 : 1024))
port() { # VAR n: sets VAR to BENCH_PORT_BASE+n, or to a free loopback port
	local p
	if [ -n "${BENCH_PORT_BASE:-}" ]; then
		printf -v "$1" '%s' $((BENCH_PORT_BASE + $2))
		return
	fi
	while :; do
		p=$((PORT_LOW + RANDOM % (EPHEMERAL_LOW - PORT_LOW)))
		case $USED_PORTS in *" $p "*) continue ;; esac
		if [ -z "$(ss -Htan "sport = :$p")" ]; then
			USED_PORTS="$USED_PORTS$p "
			printf -v "$1" '%s' "$p"
			return
		fi
	done
}

stop() { # pid: SIGTERM, then SIGKILL after 30 s
	kill "$1" 2>/dev/null || return 0
	for _ in $(seq 300); do
		kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	echo "bench: pid $1 ignored SIGTERM for 30 s, killing it" >&2
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

echo "building narun and hello..." >&2
# narun as scripts/build.sh builds it: the flags change its RSS.
CGO_ENABLED=0 go build -trimpath -tags urfave_cli_no_docs -ldflags "-s -w" -o "$WORK/narun" .
CGO_ENABLED=0 go build -o "$WORK/hello" ./testdata/apps/hello

gateway_bench() {
command -v wrk >/dev/null || { echo "bench: wrk not found (apt-get install wrk)" >&2; exit 1; }
local np gp ap dp rp
port np 1; port gp 2; port ap 3; port dp 4; port rp 5
NATS_ADDR=127.0.0.1:$np
GW_ADDR=127.0.0.1:$gp
ADMIN_ADDR=127.0.0.1:$ap
DIRECT_ADDR=127.0.0.1:$dp
RUNNER_ADMIN_ADDR=127.0.0.1:$rp
local gpids=()
cat >"$WORK/narun.toml" <<EOF
log_level = "warn"
[gateway]
[[gateway.routes]]
path = "/hello/"
service = "hello"
EOF

"$WORK/narun" up --config "$WORK/narun.toml" --data-dir "$WORK/data" --nats-listen "$NATS_ADDR" \
	--listen "$GW_ADDR" --admin-listen "$ADMIN_ADDR" --runner-admin-listen "$RUNNER_ADMIN_ADDR" >"$WORK/up.out" 2>"$WORK/up.log" &
gpids+=($!)
NARUN_NATS_URL=nats://$NATS_ADDR "$WORK/hello" 2>"$WORK/hello-nats.log" &
gpids+=($!)
"$WORK/hello" --http "$DIRECT_ADDR" 2>"$WORK/hello-http.log" &
gpids+=($!)
PIDS+=("${gpids[@]}")

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
for p in "${gpids[@]}"; do stop "$p"; done
}

now_us() { echo "${EPOCHREALTIME/./}"; }
ms_since() { # start_us -> milliseconds since then, 1 decimal
	awk -v a="$1" -v b="$(now_us)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
children() { cat /proc/"$1"/task/*/children 2>/dev/null | xargs; } # pid -> its children's pids

# start_up NAME [FLAG...]: a fresh `narun up` with node id "bench" in $WORK/NAME; sets
# UP_PID, UP_NATS (URL) and UP_GW (host:port) once its runner admin answers.
start_up() {
	local np gp ap rp
	port np 11; port gp 12; port ap 13; port rp 14
	mkdir -p "$WORK/$1"
	printf 'log_level = "warn"\n' >"$WORK/$1/narun.toml"
	"$WORK/narun" up --config "$WORK/$1/narun.toml" --data-dir "$WORK/$1/data" --node-id bench \
		--nats-listen "127.0.0.1:$np" --listen "127.0.0.1:$gp" --admin-listen "127.0.0.1:$ap" \
		--runner-admin-listen "127.0.0.1:$rp" "${@:2}" >"$WORK/$1/up.out" 2>"$WORK/$1/up.log" &
	UP_PID=$!
	PIDS+=("$UP_PID")
	UP_NATS=nats://127.0.0.1:$np
	UP_GW=127.0.0.1:$gp
	for _ in $(seq 200); do
		if curl -fsS -o /dev/null "http://127.0.0.1:$rp/healthz" 2>/dev/null &&
			curl -sS -o /dev/null "http://127.0.0.1:$gp/" 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "bench: narun up ($1) not ready; log:" >&2
	cat "$WORK/$1/up.log" >&2
	exit 1
}

ctl() { "$WORK/narun" ctl --nats-url "$UP_NATS" "$@"; }

# wait_200 TIMEOUT_S: polls POST /hello/ through the gateway until it answers
# 200; fails after TIMEOUT_S.
wait_200() {
	local end=$(($(now_us) + $1 * 1000000))
	while [ "$(now_us)" -lt "$end" ]; do
		if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -X POST -d '{"name":"x"}' "http://$UP_GW/hello/")" = 200 ]; then
			return 0
		fi
	done
	return 1
}

# median_max: figures on stdin -> "median max"
median_max() { sort -n | awk '{ v[NR] = $1 } END { printf "%s %s\n", v[int((NR + 1) / 2)], v[NR] }'; }

RESULTS=()
result() { # what figure unit target_op target
	local ok
	ok=$(awk -v f="$2" -v op="$4" -v t="$5" 'BEGIN { if (f == "") print "n/a"; else if ((op == "<=" && f + 0 <= t + 0) || (op == ">=" && f + 0 >= t + 0)) print "yes"; else print "NO" }')
	RESULTS+=("$(printf '%-48s %10s %-4s %3s %-8s %s' "$1" "${2:-n/a}" "$3" "$4" "$5" "$ok")")
}

runner_bench() {
	local nats_cli
	nats_cli=$(command -v nats || true)
	[ -z "$nats_cli" ] && [ -x "$(go env GOPATH)/bin/nats" ] && nats_cli=$(go env GOPATH)/bin/nats

	# hello is ~10 MiB unstripped; pad it after the ELF image if a smaller
	# build comes out, so the upload and fetch are those of a 10 MiB binary.
	local big=$WORK/hello-10MiB size
	cp "$WORK/hello" "$big"
	size=$(stat -c %s "$big")
	if [ "$size" -lt 10485760 ]; then head -c $((10485760 - size)) /dev/urandom >>"$big"; fi
	size=$(stat -c %s "$big")

	# 1. deploy -> first 200, and 2. kill -9 -> serving again.
	start_up deploy
	cat >"$WORK/deploy/hello.toml" <<-EOF
		name = "hello"
		version = "1.0.0"
		nodes = ["bench"]
		[restart]
		reset_after = "1s"   # each kill below starts from the first (fastest) backoff step
		[[routes]]
		path = "/hello/"
	EOF
	echo "runner: deploy of a $size-byte binary..." >&2
	local t0 deploy_ms ctl_ms
	t0=$(now_us)
	ctl deploy "$WORK/deploy/hello.toml" --binary "$big" >"$WORK/deploy/ctl.out" 2>&1 &
	local ctl_pid=$!
	PIDS+=("$ctl_pid")
	if wait_200 20; then deploy_ms=$(ms_since "$t0"); else deploy_ms=; echo "bench: no 200 within 20 s of deploy" >&2; fi
	wait "$ctl_pid" || { echo "bench: ctl deploy failed:" >&2; cat "$WORK/deploy/ctl.out" >&2; exit 1; }
	ctl_ms=$(ms_since "$t0")
	result "deploy 10 MiB -> first 200 via gateway" "$deploy_ms" ms "<=" 1000
	RESULTS+=("$(printf '  (ctl deploy itself returned after %s ms)' "$ctl_ms")")

	echo "runner: $KILLS x kill -9..." >&2
	local i old cur p t restart_ms=() serve_ms=() end found
	for i in $(seq "$KILLS"); do
		sleep 1.5 # past reset_after: every kill is a first failure
		old=$(children "$UP_PID")
		[ "$(wc -w <<<"$old")" = 1 ] || { echo "bench: want one instance, have: $old" >&2; exit 1; }
		t0=$(now_us)
		kill -9 "$old"
		end=$(($(now_us) + 5000000))
		found=
		while [ -z "$found" ] && [ "$(now_us)" -lt "$end" ]; do
			cur=$(children "$UP_PID")
			for p in $cur; do [ "$p" != "$old" ] && found=$p; done
		done
		[ -n "$found" ] || { echo "bench: no restart within 5 s" >&2; exit 1; }
		restart_ms+=("$(ms_since "$t0")")
		wait_200 5 || { echo "bench: no 200 within 5 s of restart" >&2; exit 1; }
		serve_ms+=("$(ms_since "$t0")")
	done
	local med max
	read -r med max < <(printf '%s\n' "${restart_ms[@]}" | median_max)
	result "kill -9 -> new process (median of $KILLS)" "$med" ms "<=" 200
	RESULTS+=("$(printf '  (max %s ms; each: %s)' "$max" "${restart_ms[*]}")")
	read -r med max < <(printf '%s\n' "${serve_ms[@]}" | median_max)
	result "kill -9 -> first 200 via gateway (median)" "$med" ms "<=" 200
	RESULTS+=("$(printf '  (max %s ms; each: %s)' "$max" "${serve_ms[*]}")")
	stop "$UP_PID"

	# 3. and 4. on a fresh node: idle RSS, then APPS idle apps.
	# The specs written straight to narun-apps below carry no signature.
	start_up scale --signing=false
	echo "runner: idle RSS..." >&2
	sleep 5
	local rss0 rss1 rssn
	rss0=$(rss_kib "$UP_PID")
	result "narun up idle RSS (nothing deployed)" "$(awk -v k="$rss0" 'BEGIN { printf "%.1f", k / 1024 }')" MiB "<=" 25
	if [ -z "$nats_cli" ]; then
		echo "bench: nats CLI not found (go install github.com/nats-io/natscli/nats@v0.5.0): skipping the $APPS-app figures" >&2
		stop "$UP_PID"
		return
	fi
	# One app deployed through ctl uploads the binary; the others are written
	# to narun-apps in one go, pinning the same object, as ctl would write them.
	cat >"$WORK/scale/idle.toml" <<-EOF
		name = "idle"
		version = "1.0.0"
		nodes = ["bench"]
		args = ["--http", "127.0.0.1:0"]
	EOF
	ctl deploy "$WORK/scale/idle.toml" --binary "$big" --wait >"$WORK/scale/ctl.out" 2>&1 ||
		{ echo "bench: ctl deploy idle failed:" >&2; cat "$WORK/scale/ctl.out" >&2; exit 1; }
	sleep 5
	rss1=$(rss_kib "$UP_PID")
	local sha arch
	sha=$(sha256sum "$big" | cut -d' ' -f1)
	arch=$(go env GOARCH)
	echo "runner: $APPS apps..." >&2
	t0=$(now_us)
	"$nats_cli" --server "$UP_NATS" pub --jetstream --count "$APPS" --quiet '$KV.narun-apps.app{{ Count }}' "$(
		cat <<-EOF
			name = "app{{ Count }}"
			version = "1.0.0"
			nodes = ["bench"]
			args = ["--http", "127.0.0.1:0"]
			[binaries.$arch]
			object = "idle/1.0.0/linux-$arch-${sha:0:12}"
			sha256 = "$sha"
		EOF
	)" >"$WORK/scale/pub.out" 2>&1 || { echo "bench: nats pub failed:" >&2; cat "$WORK/scale/pub.out" >&2; exit 1; }
	local pub_ms scale_ms n
	pub_ms=$(ms_since "$t0")
	end=$(($(now_us) + 60000000))
	scale_ms=
	while [ "$(now_us)" -lt "$end" ]; do
		n=$(children "$UP_PID" | wc -w)
		if [ "$n" -ge $((APPS + 1)) ]; then scale_ms=$(ms_since "$t0"); break; fi
		sleep 0.01
	done
	[ -n "$scale_ms" ] || echo "bench: only $n of $((APPS + 1)) instances after 60 s" >&2
	result "$APPS apps written -> all running" "$scale_ms" ms "<=" 10000
	RESULTS+=("$(printf '  (writing the %s specs took %s ms)' "$APPS" "$pub_ms")")
	sleep 5
	rssn=$(rss_kib "$UP_PID")
	result "runner RSS per idle instance, vs 1 app" "$(awk -v a="$rssn" -v b="$rss1" -v n="$APPS" 'BEGIN { printf "%.3f", (a - b) / 1024 / n }')" MiB "<=" 1
	RESULTS+=("$(printf '  (RSS: none %s KiB, 1 app %s KiB, %s apps %s KiB; (last - none)/%s = %s MiB)' "$rss0" "$rss1" $((APPS + 1)) "$rssn" "$APPS" "$(awk -v a="$rssn" -v b="$rss0" -v n="$APPS" 'BEGIN { printf "%.3f", (a - b) / 1024 / n }')")")
	echo "runner: stopping $((APPS + 1)) instances..." >&2
	t0=$(now_us)
	stop "$UP_PID"
	RESULTS+=("$(printf '  (narun up stopped with %s instances in %s ms)' $((APPS + 1)) "$(ms_since "$t0")")")
	n=$(pgrep -fc "$WORK/scale/data/" || true)
	[ "$n" = 0 ] || echo "bench: $n instance processes outlived narun up" >&2
}

for part in $PARTS; do
	case $part in
	gateway) gateway_bench ;;
	runner) runner_bench ;;
	*) echo "bench: unknown part $part (gateway, runner)" >&2; exit 2 ;;
	esac
done
if [ "${#RESULTS[@]}" -gt 0 ]; then
	printf '\n%-48s %10s %-4s %-12s %s\n' "runner" figure unit target met
	printf '%s\n' "${RESULTS[@]}"
fi
