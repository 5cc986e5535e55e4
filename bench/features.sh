#!/usr/bin/env bash
# cutover's own features through the side-by-side harness (../shared/bench):
#   shadow  cutover with one 100 % shadow (with compare) to the same upstream
#   cache   cutover with the response cache on, at a 90 % hit ratio
# Each variant is one harness run beside nginx, so its ratios come from the
# same interleaved rounds. The harness itself is copied, never edited: the
# copy gets the variant's cutover template, (for cache) a wrk script whose
# every tenth request is a question never asked before, and a metrics
# summary that also counts shadow and cache results.
#
# Usage (from the checkout, after cargo build --release):
#   bench/features.sh            # both variants
#   bench/features.sh cache      # one
# Settings are the harness's (BENCH_TARGETS, BENCH_SCENARIOS, BENCH_ROUNDS,
# BENCH_DURATION, ...); the defaults here are "nginx cutover" and
# "chat/32 sse/32 chat/1". Results go to bench-VARIANT.json.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
harness=${BENCH_HARNESS:-$here/../../shared/bench}
[[ -x $harness/run.sh ]] || { echo "no harness at $harness (set BENCH_HARNESS)" >&2; exit 2; }
variants=("$@")
((${#variants[@]})) || variants=(shadow cache)

for variant in "${variants[@]}"; do
  [[ -f $here/$variant.toml.tmpl ]] || { echo "unknown variant $variant (shadow, cache)" >&2; exit 2; }
  copy=$(mktemp -d "${TMPDIR:-/tmp}/cutover-bench-$variant.XXXXXX")
  cp -r "$harness"/. "$copy"/
  cp "$here/$variant.toml.tmpl" "$copy/cutover.toml.tmpl"
  if [[ $variant == cache ]]; then cp "$here/chat-miss-10.lua" "$copy/chat.lua"; fi
  python3 "$here/count_features.py" "$copy/bench.py"
  echo "[features] $variant: harness copy in $copy" >&2
  BENCH_TARGETS=${BENCH_TARGETS:-nginx cutover} \
    BENCH_SCENARIOS=${BENCH_SCENARIOS:-chat/32 sse/32 chat/1} \
    BENCH_OUT=${BENCH_OUT_DIR:-$PWD}/bench-$variant.json \
    "$copy/run.sh"
  rm -rf "$copy"
done
