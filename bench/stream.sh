#!/usr/bin/env bash
# Streaming memory: cutover's RSS while one large response streams through
# it (256 MiB by default) must stay flat: within 8 MiB of where it started.
# The upstream (nginx) sends a file of zeros; curl downloads it through
# cutover, optionally rate-limited (a slow reader makes cutover hold the
# stream back instead of buffering it); RSS is sampled every 50 ms.
#
# Usage (from the checkout, after cargo build --release):
#   bench/stream.sh              # 256 MiB at full speed
#   BENCH_RATE=20M bench/stream.sh 64
# Settings: BENCH_RATE (curl --limit-rate, e.g. 20M), BENCH_LIMIT_MIB (8),
# CUTOVER_BIN, BENCH_PIN / BENCH_TARGET_CPUS / BENCH_LOAD_CPUS, BENCH_KEEP.
# Exits 1 when RSS grew by more than the limit.
source "$(dirname "${BASH_SOURCE[0]}")/scale_lib.sh"

mib=${1:-256}
limit=${BENCH_LIMIT_MIB:-8}
read -r up port admin < <(free_ports 3)
# Sparse: no disk used, and nginx still sends every byte.
truncate -s "${mib}M" "$WORK/big"
start_upstream "$up"
{
  config_head "$port" "$admin" "$up"
  route big / '"GET", "POST"'
} >"$WORK/stream.toml"
start_cutover "$WORK/stream.toml"
await_http "http://127.0.0.1:$port/v1/chat/completions"

base=$(kib VmRSS "$CUTOVER_PID")
rate=()
[[ -z ${BENCH_RATE:-} ]] || rate=(--limit-rate "$BENCH_RATE")
started=$(date +%s.%N)
"${ON_LOAD[@]}" curl -fsS -o /dev/null -w '%{size_download}\n' "${rate[@]}" \
  "http://127.0.0.1:$port/big" >"$WORK/curl.out" &
curl_pid=$!
STARTED+=("$curl_pid")
peak=$base
samples=0
while kill -0 "$curl_pid" 2>/dev/null; do
  r=$(kib VmRSS "$CUTOVER_PID")
  ((r > peak)) && peak=$r
  samples=$((samples + 1))
  sleep 0.05
done
wait "$curl_pid" || { echo "the download failed" >&2; exit 1; }
took=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
got=$(cat "$WORK/curl.out")
after=$(kib VmRSS "$CUTOVER_PID")
((got == mib * 1024 * 1024)) || { echo "downloaded $got bytes, expected $((mib * 1024 * 1024))" >&2; exit 1; }
python3 -c "
base, peak, after, limit = $base, $peak, $after, $limit
print(f'$mib MiB in ${took}s, $samples samples: RSS {base / 1024:.1f} MiB at start, peak {peak / 1024:.1f} (+{(peak - base) / 1024:.1f} MiB), {after / 1024:.1f} after; limit +{limit} MiB')"
(((peak - base) <= limit * 1024)) || { echo "RSS grew by more than $limit MiB" >&2; exit 1; }
