#!/usr/bin/env bash
# Regenerate link/text-order.txt: the functions a running cutover executes,
# hottest first, which release builds pack at the start of .text (build.rs).
#
#   cargo build --release && bench/text-order.sh [target/release/cutover]
#   bench/text-order.sh --check [BIN]   # how much of the list BIN still has
#
# Runs the binary under valgrind's callgrind, beside the shared harness's
# upstream (bench/ab_lib.sh's setup), through what a gateway does: start,
# chat and SSE at 4 connections and at one, a /metrics scrape and the admin
# status, then a shutdown. Then the same with a 100 % shadow and with the
# cache (bench/shadow.toml.tmpl, bench/cache.toml.tmpl), whose functions
# follow the plain run's. Needs valgrind, nginx, wrk. A few minutes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ ${1:-} == --check ]]; then
  exec python3 "$here/text_order.py" --check "${2:-$here/../target/release/cutover}" "$here/../link/text-order.txt"
fi
bin=$(realpath "${1:-$here/../target/release/cutover}")
needs=(nginx wrk valgrind python3)
# shellcheck source=bench/ab_lib.sh
source "$here/ab_lib.sh"
out=$here/../link/text-order.txt

profile() { # template callgrind-out
  render "$1" >"$work/run.toml"
  rm -rf "$work/state"
  CUTOVER_WORKERS=1 TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --dump-instr=no \
    --compress-strings=no --compress-pos=no --demangle=no --callgrind-out-file="$2" \
    "$bin" serve --config "$work/run.toml" >"$work/run.log" 2>&1 &
  local pid=$!
  wait_port "$admin_port" 1200 # valgrind starts it slowly
  local url=http://127.0.0.1:$px_port
  for c in 4 1; do
    wrk -t1 -c$c -d3s -s "$harness/chat.lua" "$url" >/dev/null
    BENCH_PATH=/sse/v1/chat/completions BENCH_STREAM=1 wrk -t1 -c$c -d3s -s "$harness/chat.lua" "$url" >/dev/null
  done
  curl -s -o /dev/null "http://127.0.0.1:$admin_port/metrics"
  curl -s -o /dev/null "http://127.0.0.1:$admin_port/status"
  kill -TERM "$pid"
  wait "$pid"
}

profile "$harness/cutover.toml.tmpl" "$work/plain.cg"
profile "$here/shadow.toml.tmpl" "$work/shadow.cg"
profile "$here/cache.toml.tmpl" "$work/cache.cg"
python3 "$here/text_order.py" "$(basename "$bin")" "$work/plain.cg" "$work/shadow.cg" "$work/cache.cg" >"$out"
echo "$(wc -l <"$out") functions in $out" >&2
