# Shared by bench/routes.sh, bench/idle.sh and bench/stream.sh (sourced,
# never run): a work dir, free ports, an nginx upstream answering every POST
# with the harness's chat completion, cutover started pinned, and /proc
# readings. Everything started here is stopped on exit, by PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
harness=${BENCH_HARNESS:-$here/../../shared/bench}
[[ -d $harness/responses ]] || { echo "no harness at $harness (set BENCH_HARNESS)" >&2; exit 2; }
CUTOVER=${CUTOVER_BIN:-$PWD/target/release/cutover}
[[ -x $CUTOVER ]] || { echo "no cutover at $CUTOVER (cargo build --release, or set CUTOVER_BIN)" >&2; exit 2; }
PATH=$PATH:/usr/sbin:/sbin
for tool in nginx wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install nginx wrk curl python3)" >&2; exit 2; }
done

# On 2+ CPUs the proxy gets the last CPU, the load side the others (as the
# side-by-side harness does); BENCH_PIN=0 leaves placement to the scheduler.
CPUS=$(nproc)
TARGET_CPUS='' LOAD_CPUS=''
if [[ ${BENCH_PIN:-1} == 1 ]] && ((CPUS >= 2)); then
  TARGET_CPUS=${BENCH_TARGET_CPUS:-$((CPUS - 1))}
  LOAD_CPUS=${BENCH_LOAD_CPUS:-0-$((CPUS - 2))}
fi
# Command prefixes, not a function: `"${ON_TARGET[@]}" cmd &` leaves cmd's
# own PID in $! (a function run with & is a subshell, and killing it left
# cmd running).
ON_TARGET=() ON_LOAD=()
[[ -z $TARGET_CPUS ]] || ON_TARGET=(taskset -c "$TARGET_CPUS")
[[ -z $LOAD_CPUS ]] || ON_LOAD=(taskset -c "$LOAD_CPUS")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cutover-scale.XXXXXX")
chmod 755 "$WORK"
STARTED=()
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -z ${BENCH_KEEP:-} ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# free_ports N: N distinct free TCP ports on 127.0.0.1.
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

# start_upstream PORT: nginx answering every POST with the chat completion
# (394 bytes) and GET /big with $WORK/big (when present), pinned with the load.
start_upstream() {
  local port=$1
  cp -r "$harness/responses" "$WORK/"
  mkdir -p "$WORK/upstream-body"
  cat >"$WORK/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream.error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/upstream-body;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $WORK;
        error_page 405 =200 /responses/chat-completion.json;
        location = /big { default_type application/octet-stream; }
        location / {
            default_type application/json;
            try_files /responses/chat-completion.json =404;
        }
    }
}
EOF
  "${ON_LOAD[@]}" nginx -c "$WORK/upstream.conf" &
  STARTED+=($!)
  await_http "http://127.0.0.1:$port/any"
}

# await_http URL: until a POST to URL answers 200 (30 s at most).
await_http() {
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d '{}' "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "$1 not answering after 30 s" >&2; exit 1; }
    sleep 0.2
  done
}

# start_cutover CONFIG: cutover on the proxy CPU, one worker; sets CUTOVER_PID.
start_cutover() {
  CUTOVER_WORKERS=1 TOKIO_WORKER_THREADS=1 "${ON_TARGET[@]}" \
    "$CUTOVER" serve --no-watch --config "$1" >>"$WORK/cutover.log" 2>>"$WORK/cutover.err" &
  CUTOVER_PID=$!
  STARTED+=("$CUTOVER_PID")
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# kib FIELD PID: a /proc/PID/status field (VmRSS, VmHWM) in KiB.
kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

# ticks PID: user + system CPU of the whole process, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# The [server]/[admin]/[log] head of a cutover config: access log off.
config_head() {
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
[admin]
listen = "127.0.0.1:$2"
[log]
format = "json"
access_log = false
[state]
dir = "$WORK/state"
[[upstreams]]
name = "bench-upstream"
url = "http://127.0.0.1:$3"
EOF
}

# route NAME PREFIX [METHODS]: a route as the harness's cutover has it
# (90/10 sticky); METHODS is a TOML list's inside, '"POST"' by default.
route() {
  local methods=${3:-'"POST"'}
  cat <<EOF
[[routes]]
name = "$1"
match = { path_prefix = "$2", methods = [$methods] }
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "stable"
upstream = "bench-upstream"
weight = 90.0
deps = { prompt = "bench-prompt@1", model = "bench-model-2025-01-01" }
[[routes.versions]]
name = "canary"
upstream = "bench-upstream"
weight = 10.0
deps = { prompt = "bench-prompt@2", model = "bench-model-2025-01-01" }
EOF
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
