#!/usr/bin/env bash
# Where cutover's CPU goes, by perf: one binary under the shared harness's
# load (one worker, pinned), sampled with `perf record` (software clock, so
# it works in VMs without hardware counters), then reported three ways: by
# binary (kernel, cutover, libc), the top symbols, and the top cutover
# functions with what they call (children).
#
#   bench/profile.sh BIN            (needs perf: apt-get install linux-perf)
#
# The setup is bench/ab.sh's (bench/ab_lib.sh): the shared harness's fake
# upstream, the proxy pinned to the last CPU with one worker, wrk on the
# others for BENCH_DURATION seconds; the line it prints is ab.sh's.
#
# Settings: BENCH_KIND (chat | sse, default chat), BENCH_CONNECTIONS (32),
# BENCH_DURATION (8), BENCH_ROUNDS (3), BENCH_HARNESS (../shared/bench).
set -euo pipefail
(($# == 1)) || { echo "usage: bench/profile.sh BIN" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
needs=(nginx wrk taskset python3 perf)
# shellcheck source=bench/ab_lib.sh
source "$here/ab_lib.sh"
echo "# perf of $1 at $kind/$conns for ${duration}s, proxy on CPU $proxy_cpu"
CUTOVER_WORKERS=1 TOKIO_WORKER_THREADS=1 taskset -c "$proxy_cpu" "$1" serve --config "$work/cutover.toml" \
  >"$work/cutover.log" 2>&1 &
co=$!
pids+=("$co")
wait_port "$px_port"
perf record -F 1999 -g --call-graph dwarf,8192 -o "$work/perf.data" -p "$co" -- sleep "$duration" >/dev/null 2>&1 &
rec=$!
measure "$1" "$co"
wait "$rec" || true
report() { perf report -i "$work/perf.data" --stdio "$@" 2>/dev/null | grep -E '^ +[0-9]' ; }
echo "## by binary"
report --no-children --sort dso | head -6
echo "## top symbols (self)"
report --no-children --sort dso,symbol -g none | head -${PROFILE_TOP:-40}
echo "## cutover's functions, with what they call"
report --children --sort symbol -g none | grep -E 'cutover::' | head -${PROFILE_TOP:-40}
