#!/usr/bin/env bash
# What config reloads cost the requests around them: plain requests at a
# fixed open-loop rate (tailcut-load) through one single-worker tailcut, in
# three modes, interleaved round by round:
#
#   none     no reload;
#   kept     SIGHUP every INTERVAL, the config alternating between two files
#            that send the route to one of two clusters defined alike, so
#            every reload swaps the routes and keeps both pools;
#   rebuilt  SIGHUP every INTERVAL, the two files also differing in
#            timeouts.connect, so every reload builds new clusters with empty
#            pools and the next requests open new backend connections.
#
# For each: corrected p99 and p99.9 (tailcut-load's latency from the
# intended send time), the run's verdict, failed requests (transport errors
# and 5xx), and how many reloads tailcut logged as applied.
# tailcut alone on PROXY_CPU with one worker; the backend (tailcut-load
# backend, 12 bytes), the generator and the signal loop share LOAD_CPU.
#
# Usage: benches/reload.sh [ROUNDS] [DURATION]      defaults: 3 10s
# Env:   RATE (5000), INTERVAL (0.2, seconds between reloads), PROXY_CPU (0),
#        LOAD_CPU (1), BASE_PORT (18280)
# Needs: taskset   (Debian: apt-get install util-linux)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
DURATION=${2:-10s}
RATE=${RATE:-5000}
INTERVAL=${INTERVAL:-0.2}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18280}
UP_PORT=$((BASE_PORT + 1)) TAILCUT_PORT=$((BASE_PORT + 2)) ADMIN_PORT=$((BASE_PORT + 3))

SCRIPT=reload
# shellcheck source=benches/lib.sh
source benches/lib.sh
require taskset

cargo build --release --quiet --bin tailcut -p tailcut -p tailcut-load
TAILCUT=target/release/tailcut
LOAD=target/release/tailcut-load

# variant ROUTE_TO CONNECT : the config, with the route to cluster ROUTE_TO
# and the given connect timeout.
variant() {
  cat <<TOML
[timeouts]
connect = "$2"

[[listeners]]
name = "public"
address = "127.0.0.1:$TAILCUT_PORT"

[[routes]]
name = "all"
upstream = "$1"

[upstreams.a]
backends = ["127.0.0.1:$UP_PORT"]

[upstreams.b]
backends = ["127.0.0.1:$UP_PORT"]

[admin]
address = "127.0.0.1:$ADMIN_PORT"
TOML
}
variant a 1s > "$work/kept-1.toml"
variant b 1s > "$work/kept-2.toml"
variant a 1s > "$work/rebuilt-1.toml"
variant b 2s > "$work/rebuilt-2.toml"
cp "$work/kept-1.toml" "$work/tailcut.toml"

taskset -c "$LOAD_CPU" "$LOAD" backend --listen "127.0.0.1:$UP_PORT" --delay none & pids+=($!)
taskset -c "$PROXY_CPU" "$TAILCUT" run --config "$work/tailcut.toml" --workers 1 --log-format json \
  --log-level info 2> "$work/tailcut.log" & pids+=($!)
tailcut_pid=$!
for port in "$UP_PORT" "$TAILCUT_PORT"; do wait_port "$port"; done

# reloads MODE : until killed, every INTERVAL, swap in the other file of
# MODE (renamed over the config, as an editor saves) and send SIGHUP.
reloads() {
  local n=0
  while true; do
    n=$((n % 2 + 1))
    cp "$work/$1-$n.toml" "$work/next.toml"
    mv "$work/next.toml" "$work/tailcut.toml"
    kill -HUP "$tailcut_pid"
    sleep "$INTERVAL"
  done
}

applied() { grep -c '"message":"config reloaded"' "$work/tailcut.log" || true; }

# trial MODE : one measured run; prints p99 p99.9 verdict failed reloads.
trial() {
  local signaller="" before after
  before=$(applied)
  if [ "$1" != none ]; then
    taskset -c "$LOAD_CPU" bash -c "$(declare -f reloads); work=$work INTERVAL=$INTERVAL tailcut_pid=$tailcut_pid; reloads $1" &
    signaller=$!
  fi
  # An invalid run exits 3, one with errors 5; the verdict is printed, not fatal here.
  local out
  out=$({ taskset -c "$LOAD_CPU" "$LOAD" run "http://127.0.0.1:$TAILCUT_PORT/" --rate "$RATE" \
    --duration "$DURATION" --warmup 2s -c 16 2>&1 || true; })
  if [ -n "$signaller" ]; then
    kill "$signaller"
    wait "$signaller" 2>/dev/null || true
  fi
  after=$(applied)
  echo "$out" | awk -v reloads=$((after - before)) '
    # "75us", "6.56ms", "1.20s" -> milliseconds.
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
    /^latency \(from intended send\)/ { p99 = ms($7); p999 = ms($8) }
    /^errors   refused/ { failed = $3 + $5 + $7 + $9 + $21 }
    /^verdict/ { verdict = $2; sub(":", "", verdict) }
    END { printf "%.3f %.3f %s %d %d\n", p99, p999, verdict, failed, reloads }'
}

echo "plain requests at $RATE/s through tailcut; a reload every ${INTERVAL}s in 'kept' and 'rebuilt'"
printf '%-6s %-8s %10s %10s %-10s %8s %8s\n' round mode "p99 ms" "p99.9 ms" verdict failed reloads
declare -A p99s p999s
for round in $(seq "$ROUNDS"); do
  modes=(none kept rebuilt)
  shift_by=$(((round - 1) % 3))
  for mode in "${modes[@]:shift_by}" "${modes[@]:0:shift_by}"; do
    read -r p99 p999 verdict failed reloads < <(trial "$mode")
    printf '%-6s %-8s %10s %10s %-10s %8s %8s\n' "$round" "$mode" "$p99" "$p999" "$verdict" "$failed" "$reloads"
    p99s[$mode]+="$p99 " p999s[$mode]+="$p999 "
  done
done
echo
for mode in none kept rebuilt; do
  echo "$mode: median p99 $(printf '%s\n' ${p99s[$mode]} | median) ms, p99.9 $(printf '%s\n' ${p999s[$mode]} | median) ms"
done
grep '"message":"config reload failed' "$work/tailcut.log" | head -3 || true
