#!/usr/bin/env bash
# Redis commands per second per replica of a fleet ([cluster]), at idle and
# under load (issue 13): the count should not grow with the request rate,
# beyond one round per sync_interval.
#
# A local redis-server, a mock upstream (cutover mock-backend) and REPLICAS
# replicas on bench/cluster.toml.tmpl (sync_interval 1s, a rollout at its
# first step, the feedback index on). Redis's own INFO commandstats is read
# before and after IDLE_SECONDS of silence, then before and after
# LOAD_SECONDS of wrk against every replica at once; the table shows each
# command's calls per second, for the fleet and per replica.
#
# Usage (from the checkout, after cargo build --release):
#   bench/redis_ops.sh
# Settings: CUTOVER_BIN (./target/release/cutover), REPLICAS (3),
# IDLE_SECONDS (20), LOAD_SECONDS (20), LOAD_CONNECTIONS (16 per replica),
# BENCH_HARNESS (../shared/bench, for its chat.lua).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${CUTOVER_BIN:-$PWD/target/release/cutover}
replicas=${REPLICAS:-3}
idle=${IDLE_SECONDS:-20}
load=${LOAD_SECONDS:-20}
conns=${LOAD_CONNECTIONS:-16}
harness=${BENCH_HARNESS:-$here/../../shared/bench}
for tool in redis-server redis-cli wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "redis_ops.sh needs $tool (apt-get install redis-server wrk curl)" >&2; exit 2; }
done
[[ -x $bin ]] || { echo "no cutover at $bin (cargo build --release, or set CUTOVER_BIN)" >&2; exit 2; }
lua=$harness/chat.lua
[[ -f $lua ]] || { echo "no $lua (set BENCH_HARNESS)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cutover-redis-ops.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }

redis_port=$(port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

up_port=$(port)
"$bin" mock-backend --listen "127.0.0.1:$up_port" --name bench >"$work/mock.log" 2>&1 &
pids+=($!)
ready "http://127.0.0.1:$up_port/healthz"

traffic=()
for i in $(seq "$replicas"); do
  t=$(port); a=$(port)
  mkdir -p "$work/r$i"
  sed -e "s/@CUTOVER_PORT@/$t/; s/@CUTOVER_ADMIN_PORT@/$a/; s/@UPSTREAM_PORT@/$up_port/" \
      -e "s#@WORK@#$work/r$i#; s/@REDIS_PORT@/$redis_port/; s/replica = \"bench-1\"/replica = \"bench-$i\"/" \
      "$here/cluster.toml.tmpl" > "$work/r$i/cutover.toml"
  "$bin" serve --no-watch --config "$work/r$i/cutover.toml" >/dev/null 2>"$work/r$i/stderr.log" &
  pids+=($!)
  ready "http://127.0.0.1:$a/readyz"
  traffic+=("$t")
done
sleep 5   # every replica synced a few times; the leader chosen

calls() { redis-cli -p "$redis_port" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' | sort; }
# delta BEFORE AFTER SECONDS -> "cmd per_second" lines
delta() { join -a1 -e0 -o 0,1.2,2.2 "$2" "$1" | awk -v t="$3" '{ printf "%s %.2f\n", $1, ($2 - $3) / t }'; }

calls >"$work/a"; sleep "$idle"; calls >"$work/b"
delta "$work/a" "$work/b" "$idle" >"$work/idle"

calls >"$work/c"
started=$(date +%s.%N)
wrks=()
for t in "${traffic[@]}"; do
  wrk -t1 -c"$conns" -d"${load}s" --timeout 30s -s "$lua" "http://127.0.0.1:$t/v1/chat/completions" >"$work/wrk-$t.txt" 2>&1 &
  wrks+=($!)
done
wait "${wrks[@]}"
calls >"$work/d"
took=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
delta "$work/c" "$work/d" "$took" >"$work/load"
rps=$(cat "$work"/wrk-*.txt | sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' | awk '{ s += $1 } END { printf "%.0f", s }')

echo "Redis commands per second: $replicas replicas, sync_interval 1s; load = ${rps} requests/s in all (wrk, $conns connections per replica)"
printf "%-14s %12s %12s %14s %14s\n" command "idle fleet" "load fleet" "idle/replica" "load/replica"
join -a1 -a2 -e0 -o 0,1.2,2.2 "$work/idle" "$work/load" | awk -v n="$replicas" '
  { printf "%-14s %12.2f %12.2f %14.2f %14.2f\n", $1, $2, $3, $2 / n, $3 / n; i += $2; l += $3 }
  END { printf "%-14s %12.2f %12.2f %14.2f %14.2f\n", "total", i, l, i / n, l / n }'
