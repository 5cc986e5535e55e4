#!/usr/bin/env bash
# The three model APIs' streams through cutover, side by side in one run of
# the shared harness (../shared/bench), beside nginx: the same 20-token
# answer as OpenAI Chat Completions chunks (the harness's own chat stream),
# Responses API events and Anthropic Messages events (bench/sse/). cutover
# reads each stream's usage by its API (the path's end), so the `CPU x`
# and `CPU us/req` of `responses` and `messages` against `sse` are what the
# Responses and Messages paths cost beside the chat path.
#
# The harness is copied, never edited: the copy's upstream also serves
# bench/sse/responses.sse at /sse/v1/responses and messages.sse at
# /sse/v1/messages, its bench.py gains the scenario kinds `responses` and
# `messages` (bench/apis_harness.py), and cutover runs bench/apis.toml.tmpl
# (the harness's 90/10 canary, with prices and refusal.format = "auto").
#
# Usage (from the checkout, after cargo build --release):
#   bench/apis.sh
# Settings are the harness's (BENCH_ROUNDS, BENCH_DURATION, ...); the
# defaults here are BENCH_TARGETS="nginx cutover" and BENCH_SCENARIOS=
# "sse/32 responses/32 messages/32 sse/1 responses/1 messages/1" (nginx
# passes every path through; LiteLLM would not). Results go to
# bench-apis.json.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
harness=${BENCH_HARNESS:-$here/../../shared/bench}
[[ -x $harness/run.sh ]] || { echo "no harness at $harness (set BENCH_HARNESS)" >&2; exit 2; }

copy=$(mktemp -d "${TMPDIR:-/tmp}/cutover-bench-apis.XXXXXX")
trap 'rm -rf "$copy"' EXIT
cp -r "$harness"/. "$copy"/
cp "$here/apis.toml.tmpl" "$copy/cutover.toml.tmpl"
python3 "$here/apis_harness.py" "$copy" "$here/sse"
echo "[apis] harness copy in $copy" >&2
BENCH_TARGETS=${BENCH_TARGETS:-nginx cutover} \
  BENCH_SCENARIOS=${BENCH_SCENARIOS:-sse/32 responses/32 messages/32 sse/1 responses/1 messages/1} \
  BENCH_OUT=${BENCH_OUT_DIR:-$PWD}/bench-apis.json \
  "$copy/run.sh"
