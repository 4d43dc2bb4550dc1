#!/usr/bin/env bash
# User-space instructions per proxied request of tailcut and Debian's nginx,
# counted by callgrind. Unlike requests/s, an instruction count does not move
# with the load on a shared VM, so it resolves changes of 1% that
# benches/vs-nginx.sh cannot. It leaves out the kernel's share (about 60% of a
# proxied request here), and an instruction is not a cycle: it ranks changes
# to tailcut's own code, and vs-nginx.sh says what they are worth.
#
# Method: each proxy runs under callgrind with one worker, in front of the
# same nginx upstream, which logs one line per request. wrk warms the proxy
# (pooled upstream connections, allocator), callgrind's counters are zeroed,
# wrk runs again, and the counters are dumped. Instructions / requests the
# upstream logged in between = instructions per request.
#
# Usage: benches/instructions.sh [DURATION]      default: 5s
# Env:   CONNS (50), BASE_PORT (18180), KEEP (folder to keep callgrind's
#        output in, for callgrind_annotate), TAILCUT (the binary measured,
#        target/release/tailcut; another build's, to compare two commits)
# Needs: nginx, wrk, valgrind
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-5s}
CONNS=${CONNS:-50}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18180}
UP_PORT=$((BASE_PORT + 1)) NGINX_PORT=$((BASE_PORT + 2)) TAILCUT_PORT=$((BASE_PORT + 3))

SCRIPT=instructions
# shellcheck source=benches/lib.sh
source benches/lib.sh
require nginx wrk valgrind callgrind_control

cargo build --release --quiet
TAILCUT=${TAILCUT:-target/release/tailcut}

# The upstream as in the other scripts, but logging each request.
upstream_conf "$UP_PORT" | sed "s|access_log off;|access_log $work/access.log;|" > "$work/upstream.conf"
nginx_proxy_conf "$NGINX_PORT" "$UP_PORT" > "$work/proxy.conf"
tailcut_conf "$TAILCUT_PORT" "$UP_PORT" > "$work/tailcut.toml"

nginx -c "$work/upstream.conf" -e stderr & pids+=($!)
wait_port "$UP_PORT"

logged() { wc -l < "$work/access.log"; }

# count NAME PORT COMMAND... : starts COMMAND under callgrind and prints
# NAME, requests counted and instructions per request.
count() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$work/$name"
  valgrind --tool=callgrind --callgrind-out-file="$work/$name/callgrind.out.%p" "$@" 2>"$work/$name/valgrind.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  local before
  before=$(logged)
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/" >/dev/null
  local requests=$(($(logged) - before))
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # The requested dump (callgrind.out.PID.1) covers the second run; the
  # file written at exit covers only the shutdown.
  local ir
  ir=$(awk '/^totals:/ {print $2}' "$work/$name"/callgrind.out.*.1)
  printf '%-8s %10d %14d %12.0f\n' "$name" "$requests" "$ir" "$(awk -v i="$ir" -v r="$requests" 'BEGIN { print i / r }')"
  [[ -z ${KEEP:-} ]] || cp "$work/$name"/callgrind.out.*.1 "$KEEP/$name.callgrind"
}

printf '%-8s %10s %14s %12s\n' proxy requests instructions "per request"
count nginx "$NGINX_PORT" nginx -c "$work/proxy.conf" -e stderr
count tailcut "$TAILCUT_PORT" "$TAILCUT" run --config "$work/tailcut.toml" --workers 1 --log-level warn
