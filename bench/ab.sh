#!/usr/bin/env bash
# A/B CPU per request of cutover builds, beside nginx, in interleaved
# rounds: what a change to the data path costs or saves.
#
#   bench/ab.sh BIN_A [BIN_B ...]
#
# One fake upstream (the shared harness's nginx config and fixed answers),
# then per round: nginx as the proxy, then each binary, each loaded by wrk
# for BENCH_DURATION seconds with BENCH_CONNECTIONS connections. The proxy
# is pinned to the last CPU, wrk and the upstream to the others, and the
# proxy runs one worker (CUTOVER_WORKERS=1), as in the shared harness. Each
# line gives requests, CPU microseconds per request (user + system, of the
# proxy's processes) and the user part, and wrk's p99. Quote ratios from one
# run, never absolute figures: these machines are shared and noisy.
#
# Settings: BENCH_KIND (chat | sse, default chat), BENCH_CONNECTIONS (32),
# BENCH_DURATION (8), BENCH_ROUNDS (3), BENCH_HARNESS (../shared/bench),
# BENCH_CUTOVER_TEMPLATE (cutover's config template, default the harness's;
# bench/shadow.toml.tmpl, say, to A/B a feature's cost).
set -euo pipefail
((${#@})) || { echo "usage: bench/ab.sh BIN_A [BIN_B ...]" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
needs=(nginx wrk taskset python3)
# shellcheck source=bench/ab_lib.sh
source "$here/ab_lib.sh"
echo "# $kind/$conns, $rounds rounds of ${duration}s, proxy on CPU $proxy_cpu"
for round in $(seq "$rounds"); do
  taskset -c "$proxy_cpu" nginx -c "$work/px.conf" -p "$work" >/dev/null 2>&1 &
  px=$!
  wait_port "$px_port"
  measure "nginx" "$px"
  kill "$px"; wait "$px" 2>/dev/null || true
  for bin in "$@"; do
    CUTOVER_WORKERS=1 TOKIO_WORKER_THREADS=1 taskset -c "$proxy_cpu" "$bin" serve --config "$work/cutover.toml" \
      >"$work/cutover.log" 2>&1 &
    co=$!
    wait_port "$px_port"
    measure "$bin" "$co"
    kill "$co"; wait "$co" 2>/dev/null || true
    : >"$work/cutover.log"
  done
done
