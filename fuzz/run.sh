#!/usr/bin/env bash
# Build the fuzz targets once, then run them one after another, each for
# SECONDS (default 480), at the lowest CPU priority, and print one summary
# line per target:
#   target  runs  seconds  cpu_seconds  result
# (cpu_seconds is the fuzzer's user+system time: at nice 19 on a busy
# machine it can be well below the wall-clock seconds).
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (no targets: all of them)
# FUZZ_BIN_DIR=dir runs already-built target binaries from dir instead of
# building (so a long run is not rebuilt under you while you edit).
# FUZZ_BUILD=dev builds without optimisation (debug assertions on): a third
# of the release build's time, for CI's smoke run; long runs want release.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# The corpus grows in fuzz/corpus/TARGET (not committed); the seeds in
# fuzz/seeds/TARGET and the inputs that once crashed, in
# fuzz/regressions/TARGET, are read too. A crash leaves its input in
# fuzz/artifacts/TARGET and makes the script exit 1 after the other targets.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${1:-480}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

bin_dir="${FUZZ_BIN_DIR:-}"
if [ -z "$bin_dir" ]; then
  case "${FUZZ_BUILD:-release}" in
    release) profile=(-O) out=release ;;
    dev) profile=(--dev) out=debug ;;
    *) echo "FUZZ_BUILD is release or dev" >&2; exit 2 ;;
  esac
  nice -n 19 cargo +nightly fuzz build "${profile[@]}" || exit 2
  bin_dir="target/x86_64-unknown-linux-gnu/$out"
fi

mkdir -p logs
status=0
printf 'target\truns\tseconds\tcpu_seconds\tresult\n'
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  dirs=("corpus/$t")
  for extra in "seeds/$t" "regressions/$t"; do
    if [ -d "$extra" ]; then dirs+=("$extra"); fi
  done
  start=$(date +%s)
  mkdir -p "artifacts/$t"
  cpu_file="logs/$t.cpu"
  if [ -x /usr/bin/time ]; then
    timer=(/usr/bin/time -f '%U %S' -o "$cpu_file")
  else
    timer=()
    : >"$cpu_file"
  fi
  "${timer[@]}" nice -n 19 "$bin_dir/$t" "${dirs[@]}" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$seconds" -print_final_stats=1 >"logs/$t.log" 2>&1
  rc=$?
  cpu=$(awk 'NF == 2 && $1 ~ /^[0-9.]+$/ { printf "%.0f", $1 + $2 }' "$cpu_file" 2>/dev/null || true)
  took=$(( $(date +%s) - start ))
  runs=$(grep -o 'Done [0-9]* runs' "logs/$t.log" | tail -1 | grep -o '[0-9]*' || true)
  if [ -z "$runs" ]; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)
  fi
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="CRASH (see fuzz/logs/$t.log, fuzz/artifacts/$t)"
    status=1
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "${runs:-?}" "$took" "${cpu:-?}" "$result"
done
exit "$status"
