#!/usr/bin/env bash
# Idle keep-alive connections: what N client connections cost cutover (and,
# with BENCH_NGINX=1, nginx proxying the same) once each has made one
# request and sits idle, as SDK clients keep them. A Python client opens
# the N connections (a few hundred at a time), sends one chat request on
# each, reads the whole answer, and keeps them all open; the proxy's RSS is
# read before and after.
#
# Usage (from the checkout, after cargo build --release):
#   bench/idle.sh            # 10000 connections
#   bench/idle.sh 2000
# Settings: CUTOVER_BIN, BENCH_NGINX=1, BENCH_SETTLE (s to wait once all
# are open, 2), BENCH_PIN / BENCH_TARGET_CPUS / BENCH_LOAD_CPUS, BENCH_KEEP.
#
# The open-file limit is raised to what N needs (the hard limit must allow
# it). cutover's request_header_timeout (10 s by default) also bounds how
# long an idle keep-alive connection is kept, so the config here sets it
# to 300 s, like nginx's keepalive_timeout in its config.
source "$(dirname "${BASH_SOURCE[0]}")/scale_lib.sh"

n=${1:-10000}
settle=${BENCH_SETTLE:-2}
need=$((n + 1024))
if (($(ulimit -n) < need)); then
  ulimit -n "$need" 2>/dev/null || { echo "ulimit -n $need refused (hard limit $(ulimit -Hn))" >&2; exit 2; }
fi

read -r up port admin nginx_port < <(free_ports 4)
start_upstream "$up"
{
  config_head "$port" "$admin" "$up" | sed 's/^\[server\]$/[server]\nrequest_header_timeout = "300s"/'
  route chat /
} >"$WORK/idle.toml"

cat >"$WORK/client.py" <<'EOF'
import asyncio, sys

host, port, n = "127.0.0.1", int(sys.argv[1]), int(sys.argv[2])
body = (b'{"model":"bench-model","messages":[{"role":"user","content":"Say hello."}],'
        b'"temperature":0.2,"stream":false}')

async def one(i, gate):
    async with gate:
        r, w = await asyncio.open_connection(host, port)
        w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
                b"Content-Type: application/json\r\nx-user-id: user-%d\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (i, len(body), body))
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit("unexpected answer: %r" % head[:60])
        await r.readexactly(length)
        return r, w

async def main():
    gate = asyncio.Semaphore(256)
    conns = await asyncio.gather(*(one(i, gate) for i in range(n)))
    print("open", len(conns), flush=True)
    # Hold them until told to stop (stdin closes).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
EOF

# measure NAME PORT PIDS...: RSS (summed over PIDS) before and with N idle
# connections open.
measure() {
  local name=$1 port=$2
  shift 2
  local pids=("$@") before=0 after=0 pid
  await_http "http://127.0.0.1:$port/v1/chat/completions"
  for pid in "${pids[@]}"; do before=$((before + $(kib VmRSS "$pid"))); done
  mkfifo "$WORK/hold-$name"
  "${ON_LOAD[@]}" python3 "$WORK/client.py" "$port" "$n" <"$WORK/hold-$name" >"$WORK/client-$name.out" &
  local client=$!
  STARTED+=("$client")
  exec 9>"$WORK/hold-$name"
  local deadline=$((SECONDS + 300))
  until grep -q '^open' "$WORK/client-$name.out" 2>/dev/null; do
    running=$(kill -0 "$client" 2>/dev/null && echo yes || echo no)
    [[ $running == yes ]] || { echo "$name: the client failed" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "$name: connections not open after 300 s" >&2; exit 1; }
    sleep 0.5
  done
  sleep "$settle"
  for pid in "${pids[@]}"; do after=$((after + $(kib VmRSS "$pid"))); done
  local fds
  fds=$(ls "/proc/${pids[-1]}/fd" | wc -l)
  exec 9>&-
  wait "$client" 2>/dev/null || true
  rm -f "$WORK/hold-$name"
  python3 -c "
b, a, n = $before, $after, $n
print(f'{\"$name\":<8} {n:>6} conns  RSS {b / 1024:7.1f} -> {a / 1024:7.1f} MiB  +{(a - b) / 1024:6.1f} MiB  {(a - b) / n:6.2f} KiB/conn  ({$fds} fds)')"
}

start_cutover "$WORK/idle.toml"
measure cutover "$port" "$CUTOVER_PID"
stop "$CUTOVER_PID"

if [[ ${BENCH_NGINX:-0} == 1 ]]; then
  mkdir -p "$WORK/nginx-body" "$WORK/nginx-proxy"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.error.log;
worker_rlimit_nofile $need;
events { worker_connections $need; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx-body;
    proxy_temp_path $WORK/nginx-proxy;
    upstream agent { server 127.0.0.1:$up; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_port backlog=4096;
        location / {
            proxy_pass http://agent;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
  "${ON_TARGET[@]}" nginx -c "$WORK/nginx.conf" &
  nginx_pid=$!
  STARTED+=("$nginx_pid")
  await_http "http://127.0.0.1:$nginx_port/v1/chat/completions"
  measure nginx "$nginx_port" "$nginx_pid" $(pgrep -P "$nginx_pid")
fi
