#!/usr/bin/env bash
# CPU time and context switches per request, thread by thread, of nginx and
# of a cutover build under the same load: what the workers cost beside what
# the side threads (access log writer, config watcher, control plane) cost,
# and how often each is woken. /proc only, so it works where `perf stat`
# has no hardware counters.
#
#   bench/threads.sh BIN        # BENCH_CONNECTIONS (32), BENCH_KIND (chat)
#
# The setup is bench/ab.sh's (bench/ab_lib.sh). Per target: a 2 s warm-up,
# then one wrk run of BENCH_DURATION seconds; threads that used no CPU and
# were woken less than once per 1,000 requests are not shown.
set -euo pipefail
((${#@} == 1)) || { echo "usage: bench/threads.sh BIN" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
needs=(nginx wrk taskset python3)
# shellcheck source=bench/ab_lib.sh
source "$here/ab_lib.sh"
echo "# $kind/$conns for ${duration}s, proxy on CPU $proxy_cpu"

snapshot() { # PID: one line per thread: tid name utime stime voluntary nonvoluntary
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s %s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" \
      "$(awk '{print $14, $15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt/ {print $2}' "$t/status")" \
      "$(awk '/^nonvoluntary_ctxt/ {print $2}' "$t/status")"
  done
}

run() { # NAME PID
  load 2 >/dev/null
  snapshot "$2" >"$work/before"
  local out
  out=$(load "$duration")
  snapshot "$2" >"$work/after"
  python3 - "$1" "$(sed 's/.*"requests":\([0-9]*\).*/\1/' <<<"$out")" "$(getconf CLK_TCK)" \
    "$work/before" "$work/after" <<'PY'
import sys
name, requests, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def read(path):
    return {f[0]: f for f in (line.split() for line in open(path))}
before, after = read(sys.argv[4]), read(sys.argv[5])
print(f"{name}  requests={requests}")
for tid, a in after.items():
    b = before.get(tid, [tid, a[1], "0", "0", "0", "0"])
    user, sys_ = ((int(a[i]) - int(b[i])) * 1e6 / hz / requests for i in (2, 3))
    vol, nonvol = ((int(a[i]) - int(b[i])) / requests for i in (4, 5))
    if user + sys_ > 0 or vol + nonvol >= 0.001:
        print(f"  {a[1]:<18} user_us={user:6.2f} sys_us={sys_:6.2f} woken/req={vol:.3f} preempted/req={nonvol:.3f}")
PY
}

taskset -c "$proxy_cpu" nginx -c "$work/px.conf" -p "$work" >/dev/null 2>&1 &
px=$!
wait_port "$px_port"
sleep 0.3
run nginx "$(pgrep -P "$px" -n)" # the one worker
kill "$px"
wait "$px" 2>/dev/null || true

CUTOVER_WORKERS=1 TOKIO_WORKER_THREADS=1 taskset -c "$proxy_cpu" "$1" serve --config "$work/cutover.toml" \
  >"$work/cutover.log" 2>&1 &
co=$!
pids+=("$co")
wait_port "$px_port"
run cutover "$co"
