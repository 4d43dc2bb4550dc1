#!/usr/bin/env bash
# tailcut-load's ceiling next to wrk's, and its backend next to nginx, on
# one core each, measured side by side in one run.
#
# - Generator ceiling: tailcut-load (asked for far more than it can send) and
#   wrk, each alone on GEN_CPU, against tailcut-load's backend on SERVER_CPU.
# - Backend speed: wrk on GEN_CPU against tailcut-load's backend and against
#   Debian's nginx returning a 12-byte body, each on SERVER_CPU.
# - Memory: tailcut-load's peak RSS for a short and a long run at a fixed rate.
#
# Usage: loadtest/benches/vs-wrk.sh [ROUNDS] [DURATION] [LONG_RUN]   defaults: 3 5s 60s
# Needs: wrk, nginx, taskset, /usr/bin/time   (Debian: apt-get install wrk nginx-light time)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${1:-3}
DURATION=${2:-5s}
LONG_RUN=${3:-60s}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
CONNS=${CONNS:-50}
BACKEND_PORT=${BASE_PORT:-18180}
NGINX_PORT=$((BACKEND_PORT + 1))

for tool in wrk nginx taskset /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "vs-wrk: $tool is not installed" >&2; exit 2; }
done
cargo build --release --quiet -p tailcut-load
LOAD=target/release/tailcut-load

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/nginx.pid; error_log stderr error;
events { worker_connections 10000; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$NGINX_PORT; location / { return 200 "hello world\n"; } } }
CONF
taskset -c "$SERVER_CPU" "$LOAD" backend --listen "127.0.0.1:$BACKEND_PORT" --size 12 2>/dev/null & pids+=($!)
taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -e stderr & pids+=($!)
sleep 0.5

wrk_rps() { taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$1/" | awk '/^Requests\/sec:/ {print $2}'; }
load_rps() {
  taskset -c "$GEN_CPU" "$LOAD" run "http://127.0.0.1:$BACKEND_PORT/" --rate 1000000 --duration "$DURATION" \
    --warmup 1s -c "$CONNS" --timeout 2s --quiet --json "$work/max.json" || true
  python3 -c "import json; print(round(json.load(open('$work/max.json'))['achieved_rate']))"
}

printf '%-6s %14s %14s %10s | %16s %14s %10s\n' round wrk tailcut-load ratio "wrk->backend" "wrk->nginx" ratio
for round in $(seq "$ROUNDS"); do
  w=$(wrk_rps "$BACKEND_PORT"); t=$(load_rps); n=$(wrk_rps "$NGINX_PORT")
  printf '%-6s %14.0f %14.0f %10.2f | %16.0f %14.0f %10.2f\n' "$round" "$w" "$t" \
    "$(awk -v a="$t" -v b="$w" 'BEGIN{print a/b}')" "$w" "$n" "$(awk -v a="$w" -v b="$n" 'BEGIN{print a/b}')"
done

echo
for length in 10s "$LONG_RUN"; do
  /usr/bin/time -f "%M" -o "$work/rss" taskset -c "$GEN_CPU" "$LOAD" run "http://127.0.0.1:$BACKEND_PORT/" \
    --rate 5000 --duration "$length" --warmup 1s -c 16 --quiet --interval-log "$work/log" || true
  echo "tailcut-load peak RSS, $length at 5000/s: $(cat "$work/rss") KiB"
done
