#!/usr/bin/env bash
# What one HTTP/2 client can make cutover hold: it opens BENCH_STREAMS
# (200, the most a connection may have open) streamed answers, grants
# every stream and the connection the largest flow-control window, and
# never reads. Whatever cutover buffers for such a client stays in memory
# until the client leaves; the h2 send buffer per stream
# (`conn::MAX_STREAM_SEND_BUF`) is what bounds it. The upstream is
# cutover's own mock backend (1 s to the first byte, so every stream is
# open before any answer flows; 100,000 SSE chunks each).
#
# Usage (from the checkout, after cargo build --release):
#   bench/h2_hold.sh
# Settings: BENCH_STREAMS (200), BENCH_LIMIT_MIB (40), BENCH_HOLD_SECS (10),
# CUTOVER_BIN, BENCH_PIN / BENCH_TARGET_CPUS / BENCH_LOAD_CPUS, BENCH_KEEP.
# Exits 1 when RSS grew by more than the limit.
source "$(dirname "${BASH_SOURCE[0]}")/scale_lib.sh"

streams=${BENCH_STREAMS:-200}
limit=${BENCH_LIMIT_MIB:-40}
hold=${BENCH_HOLD_SECS:-10}
read -r up port admin < <(free_ports 3)
"${ON_LOAD[@]}" "$CUTOVER" mock-backend --listen "127.0.0.1:$up" --chunks 100000 \
  --latency 1s >>"$WORK/mock.log" 2>&1 &
STARTED+=("$!")
{
  config_head "$port" "$admin" "$up"
  route chat /
} >"$WORK/hold.toml"
start_cutover "$WORK/hold.toml"
await_http "http://127.0.0.1:$port/v1/chat/completions"
base=$(kib VmRSS "$CUTOVER_PID")

# A raw h2c client: preface, SETTINGS (INITIAL_WINDOW_SIZE 2^31-1), a
# connection WINDOW_UPDATE to the same, then each stream's HEADERS and
# DATA; then it sleeps without reading.
"${ON_LOAD[@]}" python3 - "$port" "$streams" "$((hold + 2))" <<'EOF' &
import json, socket, struct, sys, time
port, streams, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def frame(kind, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload
body = json.dumps({"model": "m", "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
path, auth = b"/v1/chat/completions", f"127.0.0.1:{port}".encode()
# HPACK: :method POST, :scheme http (static 3, 6), :path and :authority as
# literals with indexed names (4, 1).
block = bytes([0x83, 0x86, 0x04, len(path)]) + path + bytes([0x01, len(auth)]) + auth
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
          + frame(0x4, 0, 0, struct.pack(">HI", 0x4, 2**31 - 1))
          + frame(0x8, 0, 0, struct.pack(">I", 2**31 - 1 - 65535)))
for i in range(streams):
    sid = 1 + 2 * i
    s.sendall(frame(0x1, 0x4, sid, block) + frame(0x0, 0x1, sid, body))
time.sleep(hold)
EOF
client=$!
STARTED+=("$client")
peak=$base
for _ in $(seq $((hold * 10))); do
  r=$(kib VmRSS "$CUTOVER_PID")
  ((r > peak)) && peak=$r
  sleep 0.1
done
wait "$client"
sleep 1
after=$(kib VmRSS "$CUTOVER_PID")
python3 -c "
base, peak, after, limit = $base, $peak, $after, $limit
print(f'one h2 client holding $streams streams: RSS {base / 1024:.1f} MiB at start, peak {peak / 1024:.1f} (+{(peak - base) / 1024:.1f} MiB), {after / 1024:.1f} after it left; limit +{limit} MiB')"
(((peak - base) <= limit * 1024)) || { echo "RSS grew by more than $limit MiB" >&2; exit 1; }
