# Shared by bench/ab.sh and bench/profile.sh (sourced, not run): one fake
# upstream from the shared harness (its nginx config and fixed answers), the
# harness's nginx and cutover configs rendered on free ports, the CPU split
# (the proxy on the last CPU, wrk and the upstream on the others), and
# measure NAME PID: one wrk run, printing requests, CPU microseconds per
# request (user + system, of PID and its children), the user part and p99.
# The caller sets `needs` (the tools it requires) before sourcing.
harness=${BENCH_HARNESS:-$here/../../shared/bench}
kind=${BENCH_KIND:-chat}
conns=${BENCH_CONNECTIONS:-32}
duration=${BENCH_DURATION:-8}
rounds=${BENCH_ROUNDS:-3}
PATH=$PATH:/usr/sbin:/sbin
for tool in "${needs[@]}"; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install nginx wrk util-linux)" >&2; exit 2; }
done

work=$(mktemp -d)
# nginx's workers run as nobody when started by root: they must be able to
# read the answers (a 700 directory made every answer a 404).
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
read -r up_port px_port admin_port < <(python3 -c '
import socket
s=[socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1",0))
print(*[x.getsockname()[1] for x in s])')
ncpu=$(nproc)
proxy_cpu=$((ncpu - 1))
load_cpus=0-$((proxy_cpu > 0 ? proxy_cpu - 1 : 0))
cp -r "$harness/responses" "$work/"
mkdir -p "$work/upstream-body" "$work/nginx-body" "$work/nginx-proxy" "$work/state"
render() { sed -e "s#@WORK@#$work#g" -e "s#@UPSTREAM_PORT@#$up_port#g" -e "s#@NGINX_PORT@#$px_port#g" \
  -e "s#@CUTOVER_PORT@#$px_port#g" -e "s#@CUTOVER_ADMIN_PORT@#$admin_port#g" "$1"; }
render "$harness/upstream.nginx.conf.tmpl" >"$work/up.conf"
"$(dirname "${BASH_SOURCE[0]}")/typed-answers.sh" "$work/up.conf"
render "$harness/nginx.conf.tmpl" >"$work/px.conf"
render "${BENCH_CUTOVER_TEMPLATE:-$harness/cutover.toml.tmpl}" >"$work/cutover.toml"
taskset -c "$load_cpus" nginx -c "$work/up.conf" -p "$work" >/dev/null 2>&1 &
pids+=($!)

path=/v1/chat/completions stream=0
[[ $kind == sse ]] && { path=/sse/v1/chat/completions; stream=1; }
# CPU ticks (user+system, or user only) of a process and its children.
ticks() { local t=0 p; for p in $1 $(pgrep -P "$1"); do t=$((t + $(awk -v f="$2" '{print f=="user" ? $14 : $14+$15}' /proc/"$p"/stat))); done; echo "$t"; }
# wait_port PORT [TRIES]: every 50 ms, 100 tries (5 s) unless told more.
wait_port() { for _ in $(seq "${2:-100}"); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
# load SECONDS: one wrk run from the load CPUs; prints its BENCH_RESULT line.
load() {
  BENCH_PATH=$path BENCH_STREAM=$stream taskset -c "$load_cpus" wrk -t1 -c"$conns" -d"$1s" \
    -s "$harness/chat.lua" "http://127.0.0.1:$px_port" | grep BENCH_RESULT
}
measure() { # name pid
  local all0 user0 out all1 user1 req bad p99 hz
  hz=$(getconf CLK_TCK)
  all0=$(ticks "$2" all) user0=$(ticks "$2" user)
  out=$(load "$duration")
  all1=$(ticks "$2" all) user1=$(ticks "$2" user)
  req=$(sed 's/.*"requests":\([0-9]*\).*/\1/' <<<"$out")
  # Answers other than 2xx/3xx are not what is being measured.
  bad=$(sed 's/.*"status":\([0-9]*\).*/\1/' <<<"$out")
  ((bad == 0)) || { echo "$1: $bad of $req answers were not 2xx/3xx" >&2; exit 1; }
  p99=$(sed 's/.*"p99":\([0-9]*\).*/\1/' <<<"$out")
  python3 -c "import sys; n,r,a,u,p,hz=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4]),sys.argv[5],int(sys.argv[6]); \
print(f'{n:<40} requests={r:<8} cpu_us_per_req={a*1e6/hz/r:7.2f} user_us={u*1e6/hz/r:6.2f} p99_us={p}')" \
    "$1" "$req" $((all1 - all0)) $((user1 - user0)) "$p99" "$hz"
}
