#!/usr/bin/env bash
# cutover's own features through the side-by-side harness (../shared/bench):
#   plain    the harness's own cutover, with the typed answers below: the
#            base a feature's cost is read against (`features.sh plain
#            shadow`), since the plain harness serves text/plain and so
#            skips usage reading
#   shadow   cutover with one 100 % shadow (with compare) to the same upstream
#   mirror   the same shadow without compare: the second upstream exchange
#            alone, the floor under shadow's cost (`features.sh plain mirror
#            shadow`)
#   cache    cutover with the response cache on, at a 90 % hit ratio
#   rollout  cutover with a rollout held at its first step (10 %: the same
#            90/10 split), judged by this process alone
#   cluster  the same rollout with [cluster] on a local redis-server started
#            here: the fleet's sync loop, count pushes and feedback index.
#            Compare its CPU per request with rollout's (`features.sh rollout
#            cluster`); the Redis commands it sent during the run are counted
#            (INFO commandstats) and printed. bench/redis_ops.sh measures
#            them per second at idle and under load.
# Each variant is one harness run beside nginx, so its ratios come from the
# same interleaved rounds. The harness itself is copied, never edited: the
# copy gets the variant's cutover template, an upstream whose answers carry
# their content types (typed-answers.sh: without it a shadow compares
# nothing), (for cache) a wrk script whose
# every tenth request is a question never asked before, and a metrics
# summary that also counts shadow and cache results.
#
# Usage (from the checkout, after cargo build --release):
#   bench/features.sh                  # shadow and cache
#   bench/features.sh cache            # one
#   bench/features.sh rollout cluster  # what [cluster] costs (needs redis-server)
# Settings are the harness's (BENCH_TARGETS, BENCH_SCENARIOS, BENCH_ROUNDS,
# BENCH_DURATION, ...); the defaults here are "nginx cutover" and
# "chat/32 sse/32 chat/1". Results go to bench-VARIANT.json.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
harness=${BENCH_HARNESS:-$here/../../shared/bench}
[[ -x $harness/run.sh ]] || { echo "no harness at $harness (set BENCH_HARNESS)" >&2; exit 2; }
variants=("$@")
((${#variants[@]})) || variants=(shadow cache)

# --- [cluster]: a local redis-server for the cluster variant --------------
redis_pid=""
redis_port=""
stop_redis() { if [[ -n $redis_pid ]]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; redis_pid=""; fi; }
trap stop_redis EXIT
start_redis() {
  command -v redis-server >/dev/null || { echo "the cluster variant needs redis-server (apt-get install redis-server)" >&2; exit 2; }
  redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  redis_pid=$!
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not start on $redis_port" >&2; exit 1
}
# Total calls by command, from INFO commandstats: "cmd calls" lines.
redis_calls() { redis-cli -p "$redis_port" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' | sort; }

for variant in "${variants[@]}"; do
  [[ $variant == plain || -f $here/$variant.toml.tmpl ]] || { echo "unknown variant $variant (plain, shadow, mirror, cache, rollout, cluster)" >&2; exit 2; }
  copy=$(mktemp -d "${TMPDIR:-/tmp}/cutover-bench-$variant.XXXXXX")
  cp -r "$harness"/. "$copy"/
  if [[ $variant != plain ]]; then cp "$here/$variant.toml.tmpl" "$copy/cutover.toml.tmpl"; fi
  "$here/typed-answers.sh" "$copy/upstream.nginx.conf.tmpl"
  if [[ $variant == cache ]]; then cp "$here/chat-miss-10.lua" "$copy/chat.lua"; fi
  if [[ $variant == cluster ]]; then
    start_redis
    sed -i "s/@REDIS_PORT@/$redis_port/g" "$copy/cutover.toml.tmpl"
    redis_calls > "$copy/redis-before.txt"
    started=$(date +%s)
  fi
  python3 "$here/count_features.py" "$copy/bench.py"
  echo "[features] $variant: harness copy in $copy" >&2
  BENCH_TARGETS=${BENCH_TARGETS:-nginx cutover} \
    BENCH_SCENARIOS=${BENCH_SCENARIOS:-chat/32 sse/32 chat/1} \
    BENCH_OUT=${BENCH_OUT_DIR:-$PWD}/bench-$variant.json \
    "$copy/run.sh"
  if [[ $variant == cluster ]]; then
    took=$(( $(date +%s) - started ))
    echo "[features] cluster: Redis commands during the run (${took}s, one replica; it is idle between its wrk runs):" >&2
    redis_calls | join -a1 -e0 -o 0,1.2,2.2 - "$copy/redis-before.txt" \
      | awk -v t="$took" '{ d = $2 - $3; total += d; printf "  %-12s %8d  %6.2f/s\n", $1, d, d / t } END { printf "  %-12s %8d  %6.2f/s\n", "total", total, total / t }' >&2
    stop_redis
  fi
  rm -rf "$copy"
done
