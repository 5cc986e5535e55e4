#!/usr/bin/env bash
# Routing at scale: CPU per request and memory of cutover with 1 route and
# with N routes, every request matching the last one (the worst case of a
# scan in file order). Same request shape as the side-by-side harness
# (its chat.lua: 190-byte chat request, 1000 sticky users), one worker,
# access log off, an nginx upstream; the proxy pinned to one CPU, wrk and
# the upstream to the others; rounds interleaved (1, N, 1, N, ...).
#
# Usage (from the checkout, after cargo build --release):
#   bench/routes.sh              # 1 and 1000 routes
#   bench/routes.sh 1 100 1000   # several sizes; ratios are to the first
# Settings: BENCH_DURATION (s per run, 8), BENCH_ROUNDS (3),
# BENCH_CONNECTIONS (32), CUTOVER_BIN, BENCH_PIN / BENCH_TARGET_CPUS /
# BENCH_LOAD_CPUS as in the harness, BENCH_KEEP=1 keeps the work dir.
#
# Prints per size: median CPU us/req and its ratio to the first size, RSS
# after the runs (VmRSS) and its peak (VmHWM), and RSS per added route.
source "$(dirname "${BASH_SOURCE[0]}")/scale_lib.sh"

sizes=("$@")
((${#sizes[@]})) || sizes=(1 1000)
duration=${BENCH_DURATION:-8}
rounds=${BENCH_ROUNDS:-3}
conns=${BENCH_CONNECTIONS:-32}
hz=$(getconf CLK_TCK)

read -r up port admin < <(free_ports 3)
start_upstream "$up"
for n in "${sizes[@]}"; do
  {
    config_head "$port" "$admin" "$up"
    for ((i = 0; i < n; i++)); do route "r$i" "/r$i/"; done
  } >"$WORK/routes-$n.toml"
done

declare -A cpu rss hwm
for ((round = 1; round <= rounds; round++)); do
  for n in "${sizes[@]}"; do
    start_cutover "$WORK/routes-$n.toml"
    path="/r$((n - 1))/v1/chat/completions"
    await_http "http://127.0.0.1:$port$path"
    # Warm-up: connections, the upstream pool, the allocator.
    BENCH_PATH=$path "${ON_LOAD[@]}" wrk -t1 -c"$conns" -d1s -s "$harness/chat.lua" "http://127.0.0.1:$port" >/dev/null
    before=$(ticks "$CUTOVER_PID")
    out=$(BENCH_PATH=$path "${ON_LOAD[@]}" wrk -t1 -c"$conns" -d"${duration}s" -s "$harness/chat.lua" "http://127.0.0.1:$port")
    after=$(ticks "$CUTOVER_PID")
    requests=$(sed -n 's/.*BENCH_RESULT {"requests":\([0-9]*\).*/\1/p' <<<"$out")
    errors=$(grep -Eo 'Non-2xx or 3xx responses: [0-9]+|Socket errors: .*' <<<"$out" || true)
    [[ -z $errors ]] || log "round $round, $n routes: $errors"
    us=$(python3 -c "print(f'{($after - $before) / $hz * 1e6 / $requests:.2f}')")
    cpu[$n]+="$us "
    rss[$n]+="$(kib VmRSS "$CUTOVER_PID") "
    hwm[$n]+="$(kib VmHWM "$CUTOVER_PID") "
    log "round $round, $n routes: $requests requests, $us us/req, RSS $(kib VmRSS "$CUTOVER_PID") KiB"
    stop "$CUTOVER_PID"
  done
done

first=${sizes[0]}
base_cpu=$(tr ' ' '\n' <<<"${cpu[$first]}" | grep . | median)
base_rss=$(tr ' ' '\n' <<<"${rss[$first]}" | grep . | median)
printf '%-8s %12s %8s %10s %10s %14s\n' routes "CPU us/req" "CPU x" "RSS MiB" "peak MiB" "KiB/route"
for n in "${sizes[@]}"; do
  c=$(tr ' ' '\n' <<<"${cpu[$n]}" | grep . | median)
  r=$(tr ' ' '\n' <<<"${rss[$n]}" | grep . | median)
  h=$(tr ' ' '\n' <<<"${hwm[$n]}" | grep . | median)
  python3 -c "
n, c, bc, r, br, h, first = $n, $c, $base_cpu, $r, $base_rss, $h, $first
per = f'{(r - br) / (n - first):.2f}' if n != first else '-'
print(f'{n:<8} {c:12.2f} {c / bc:8.3f} {r / 1024:10.1f} {h / 1024:10.1f} {per:>14}')"
done
