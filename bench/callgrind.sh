#!/usr/bin/env bash
# Instructions per request of cutover builds, counted by valgrind's
# callgrind: exact and repeatable where CPU time is noisy, so it shows a
# change of a few hundred instructions that `bench/ab.sh` cannot. It does
# not show what a change does to cache misses and stalls: check a change
# that moves instructions with `bench/ab.sh` too.
#
#   bench/callgrind.sh BIN_A [BIN_B ...]
#
# The setup is bench/ab.sh's (bench/ab_lib.sh): the shared harness's fake
# upstream with typed answers, the harness's cutover config (or
# BENCH_CUTOVER_TEMPLATE), one worker. Per binary: start it under callgrind
# with counting off, warm it up with wrk for 2 s, count over a wrk run of
# BENCH_DURATION seconds (default 5) at BENCH_CONNECTIONS (default 4), and
# print the instructions counted divided by the requests wrk completed.
# Keeps each profile (callgrind.out.N in BENCH_KEEP, if set) for
# callgrind_annotate. Needs valgrind, nginx, wrk.
set -euo pipefail
((${#@})) || { echo "usage: bench/callgrind.sh BIN_A [BIN_B ...]" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
needs=(nginx wrk taskset python3 valgrind callgrind_control)
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-4}
BENCH_DURATION=${BENCH_DURATION:-5}
# shellcheck source=bench/ab_lib.sh
source "$here/ab_lib.sh"
echo "# $kind/$conns under callgrind for ${duration}s"
n=0
for bin in "$@"; do
  n=$((n + 1))
  out=$work/callgrind.out.$n
  rm -rf "$work/cutover-state"
  CUTOVER_WORKERS=1 TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
    --dump-instr=no --callgrind-out-file="$out" "$bin" serve --config "$work/cutover.toml" \
    >"$work/cutover.log" 2>&1 &
  vg=$!
  pids+=("$vg")
  wait_port "$px_port" 1200
  load 2 >/dev/null
  callgrind_control -i on "$vg" >/dev/null 2>&1
  result=$(load "$duration")
  callgrind_control -i off "$vg" >/dev/null 2>&1
  kill -TERM "$vg"
  wait "$vg" 2>/dev/null || true
  requests=$(sed 's/.*"requests":\([0-9]*\).*/\1/' <<<"$result")
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  printf '%-40s requests=%-8s instructions_per_request=%d\n' "$bin" "$requests" $((total / requests))
  if [[ -n ${BENCH_KEEP:-} ]]; then
    mkdir -p "$BENCH_KEEP"
    cp "$out" "$BENCH_KEEP/"
  fi
done
