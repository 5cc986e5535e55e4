#!/usr/bin/env bash
# What [cluster] costs per request, in ONE interleaved run (issue 13 asks
# for less than 3 % more CPU than the same rollout without it): bench/ab.sh
# with two "binaries" that are wrappers around the release build, one
# serving bench/rollout.toml.tmpl and one bench/cluster.toml.tmpl (the same
# rollout with [cluster] on a local redis-server started here), each
# rendered on the ports of the config ab.sh hands it (bench/ab_render.py).
#
#   cargo build --release && bench/ab_cluster.sh
#
# Settings are ab.sh's (BENCH_KIND, BENCH_CONNECTIONS, BENCH_DURATION,
# BENCH_ROUNDS); CUTOVER_BIN picks the binary (default target/release).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$(realpath "${CUTOVER_BIN:-$here/../target/release/cutover}")
[[ -x $bin ]] || { echo "no $bin (cargo build --release)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 2; }
work=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for variant in rollout cluster; do
  mkdir -p "$work/$variant"
  cat >"$work/cutover-$variant" <<WRAP
#!/usr/bin/env bash
# bench/ab.sh runs: BIN serve --config FILE
python3 "$here/ab_render.py" "$here/$variant.toml.tmpl" "\$3" "$work/$variant.toml" "$redis_port" "$work/$variant"
exec "$bin" serve --config "$work/$variant.toml"
WRAP
  chmod +x "$work/cutover-$variant"
done
"$here/ab.sh" "$work/cutover-rollout" "$work/cutover-cluster"
echo "# Redis commands during the run: $(redis-cli -p "$redis_port" info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p')"
