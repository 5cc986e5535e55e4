#!/usr/bin/env bash
# Soak: cutover (release build) under steady load for SOAK_MINUTES (default
# 30) at about SOAK_RATE requests a second (default 1000): chat JSON and
# SSE, a 10 % shadow, a caching route and a rollout, a config reload every
# minute, and an upstream failing 5 % of its requests (rescued by a
# fallback). Every 10 s it samples cutover's RSS, open file descriptors
# and cutover_buffered_bytes into samples.csv, then draws soak.png and
# checks the targets:
#   * RSS over the last 10 minutes within 5 % of the 10 minutes after
#     warm-up (5 minutes; a shorter run warms up for half its length and
#     compares two windows of a quarter each);
#   * no growth in open file descriptors;
#   * zero client-visible errors: every answer a 200, every event stream
#     complete (the injected failures must all be rescued by the fallback);
#   * zero requests lost across reloads: every reload accepted, and no
#     error above while they happened.
# Exit 0 when every target holds, 1 otherwise.
#
# Usage (from the checkout):
#   cargo build --release && bench/soak.sh
#   SOAK_MINUTES=3 bench/soak.sh        # a short validation run
# Needs wrk, python3 (for free ports) and curl. Results go to SOAK_OUT
# (default soak-results/<timestamp>): samples.csv, soak.png, wrk.txt,
# reloads.txt, metrics-end.txt, cutover.log, summary.txt.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
minutes=${SOAK_MINUTES:-30}
rate=${SOAK_RATE:-1000}
bin=${CUTOVER_BIN:-$root/target/release/cutover}
out=${SOAK_OUT:-$root/soak-results/$(date +%Y%m%d-%H%M%S)}
connections=${SOAK_CONNECTIONS:-32}
threads=2

for tool in wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is required" >&2; exit 2; }
done
[[ -x $bin ]] || { echo "soak: no $bin (cargo build --release first, or set CUTOVER_BIN)" >&2; exit 2; }
mkdir -p "$out/state"
log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$out/summary.txt" >&2; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); admin=$(free_port)
primary=$(free_port); canary=$(free_port); backup=$(free_port); shadow=$(free_port)

# The upstreams: the primary fails 5 % of its requests with a 503.
mock() { "$bin" mock-backend --listen "127.0.0.1:$1" "${@:2}" >>"$out/mocks.log" 2>&1 & pids+=($!); }
mock "$primary" --name primary --latency 2ms --latency-max 8ms --chunks 3 \
  --error-rate 0.05 --error-status 503
mock "$canary" --name canary --latency 2ms --latency-max 8ms --chunks 3
mock "$backup" --name backup --latency 2ms --latency-max 8ms --chunks 3
mock "$shadow" --name shadow --latency 10ms --latency-max 30ms --chunks 3

config="$out/cutover.toml"
render() {
  sed -e "s|@PORT@|$port|; s|@ADMIN@|$admin|; s|@STATE@|$out/state|" \
      -e "s|@PRIMARY@|$primary|; s|@CANARY@|$canary|; s|@BACKUP@|$backup|; s|@SHADOW@|$shadow|" \
      -e "s|@VARIANT@|$1|" "$here/soak.toml.tmpl" >"$config.tmp"
  mv "$config.tmp" "$config"
}
render 30s
"$bin" serve --config "$config" >"$out/cutover.log" 2>&1 &
cutover=$!
pids+=("$cutover")
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null || { log "cutover did not start"; exit 1; }
log "cutover pid $cutover on :$port (admin :$admin), $minutes min at ~$rate req/s, results in $out"

metric_sum() { # the sum of every sample of metric $1 whose labels contain $2
  awk -v m="$1" -v l="$2" '$1 ~ "^"m"([{ ]|$)" && index($1, l) { s += $NF } END { printf "%.0f", s + 0 }'
}

# Every 10 s: RSS, descriptors, buffered bytes, requests, reloads.
echo "t_s,rss_kib,fds,buffered_bytes,requests,reloads_ok,reloads_error" >"$out/samples.csv"
sampling_from=$(date +%s)
(
  start=$sampling_from
  while kill -0 "$cutover" 2>/dev/null; do
    m=$(curl -fsS "http://127.0.0.1:$admin/metrics" || true)
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$cutover/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$cutover/fd" 2>/dev/null | wc -l)
    buffered=$(metric_sum cutover_buffered_bytes "" <<<"$m")
    requests=$(metric_sum cutover_requests_total "" <<<"$m")
    ok=$(metric_sum cutover_config_reloads_total 'result="ok"' <<<"$m")
    err=$(metric_sum cutover_config_reloads_total 'result="error"' <<<"$m")
    echo "$(( $(date +%s) - start )),$rss,$fds,$buffered,$requests,$ok,$err" >>"$out/samples.csv"
    sleep 10
  done
) &
pids+=($!)

# A reload every minute: the file is rewritten (as an editor does) and
# POST /reload asked; each answer is recorded.
(
  n=0
  while sleep 60; do
    n=$((n + 1))
    if (( n % 2 )); then render 31s; else render 30s; fi
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$admin/reload" || echo 000)
    echo "$(date +%s) $code" >>"$out/reloads.txt"
  done
) &
reloader=$!
pids+=("$reloader")

log "load: wrk -t$threads -c$connections -d${minutes}m"
wrk -t"$threads" -c"$connections" -d"${minutes}m" --timeout 10s --latency \
  -s "$here/soak.lua" "http://127.0.0.1:$port" -- "$rate" "$threads" >"$out/wrk.txt" 2>&1 || true
load_end=$(( $(date +%s) - sampling_from ))
kill "$reloader" 2>/dev/null || true
sleep 11 # one more sample, after the load (plotted, not judged)
curl -fsS "http://127.0.0.1:$admin/metrics" >"$out/metrics-end.txt" || true

# ---- verdict -----------------------------------------------------------------
fail=0
check() { # name, condition (0 = holds), detail
  if [[ $2 == 0 ]]; then log "PASS $1: $3"; else log "FAIL $1: $3"; fail=1; fi
}
line=$(grep '^SOAK requests=' "$out/wrk.txt" || true)
[[ -n $line ]] || { log "FAIL: wrk printed no summary (see $out/wrk.txt)"; exit 1; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<" ${line#SOAK }"; }
total=$(field requests); non200=$(field non200); broken=$(field broken_streams)
sockets=$(( $(field connect) + $(field read) + $(field write) + $(field timeout) ))
duration=$(field duration_s)
achieved=$(awk -v n="$total" -v d="$duration" 'BEGIN { printf "%.0f", n / d }')
log "wrk: $total requests in ${duration}s (~$achieved req/s), p50 $(field p50_ms) ms, p99 $(field p99_ms) ms"
errors=$(( non200 + broken + sockets ))
check "client-visible errors" "$(( errors != 0 ))" \
  "$non200 non-200, $broken broken streams, $sockets socket errors"

rescued=$(metric_sum cutover_fallbacks_total 'to="backup"' <"$out/metrics-end.txt")
injected=$(metric_sum cutover_upstream_requests_total 'upstream="primary",result="failure_status"' <"$out/metrics-end.txt")
check "injected failures rescued" "$(( injected == 0 || rescued < injected ))" \
  "$injected injected 503s, $rescued answered by the fallback"

reloads=$(wc -l <"$out/reloads.txt" 2>/dev/null || echo 0)
refused=$(awk '$2 != 200' "$out/reloads.txt" 2>/dev/null | wc -l)
reload_errors=$(metric_sum cutover_config_reloads_total 'result="error"' <"$out/metrics-end.txt")
check "reloads" "$(( reloads == 0 || refused != 0 || reload_errors != 0 ))" \
  "$reloads reloads asked, $refused refused, $reload_errors counted as errors; no request lost across them ($errors errors above)"

mirrored=$(metric_sum cutover_shadow_requests_total 'result="ok"' <"$out/metrics-end.txt")
hits=$(metric_sum cutover_cache_requests_total 'result="hit"' <"$out/metrics-end.txt")
step=$(metric_sum cutover_rollout_step 'route="chat"' <"$out/metrics-end.txt")
log "features: $mirrored mirrors answered, $hits cache hits, rollout step $step"

plot=(cargo run --quiet --manifest-path "$root/Cargo.toml" --example soak_plot --)
if "${plot[@]}" "$out/samples.csv" "$out/soak.png" "$load_end" 2>&1 | tee -a "$out/summary.txt"; then
  log "PASS memory and descriptors (see $out/soak.png)"
else
  log "FAIL memory or descriptors (see $out/soak.png)"
  fail=1
fi
exit "$fail"
