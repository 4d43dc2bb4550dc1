#!/usr/bin/env bash
# Saturated requests/s of two proxy binaries side by side, as a ratio B / A:
# the way to tell whether a change made tailcut (or the Go proxy) faster or
# slower, measured in one run instead of compared across runs.
#
# Both binaries must take `run --config FILE --workers 1 --log-level warn`
# (tailcut and loadtest/goproxy do). Method as in vs-nginx.sh: each proxy
# alone on PROXY_CPU with one worker; the upstream (nginx, 12-byte body) and
# wrk -c$CONNS on LOAD_CPU; rounds interleave A and B so drift lands on both.
#
# Usage: benches/ab.sh BIN_A BIN_B [ROUNDS] [DURATION]     defaults: 7 6s
# Env:   CONNS (50), PROXY_CPU (0), LOAD_CPU (1), BASE_PORT (18180)
# Needs: nginx, wrk, taskset   (Debian: apt-get install nginx-light wrk util-linux)
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# < 2)); then
  echo "usage: benches/ab.sh BIN_A BIN_B [ROUNDS] [DURATION]" >&2
  exit 2
fi
BIN_A=$1 BIN_B=$2
ROUNDS=${3:-7}
DURATION=${4:-6s}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18180}
UP_PORT=$((BASE_PORT + 1)) A_PORT=$((BASE_PORT + 2)) B_PORT=$((BASE_PORT + 3))
A_ADMIN=$((BASE_PORT + 4)) B_ADMIN=$((BASE_PORT + 5))

SCRIPT=ab
# shellcheck source=benches/lib.sh
source benches/lib.sh
require nginx wrk taskset
upstream_conf "$UP_PORT" > "$work/upstream.conf"

proxy_config() { # binary port admin-port file
  tailcut_conf "$2" "$UP_PORT" > "$4"
  # Builds from before the admin listener existed reject its table; the
  # others need their own admin port so that A and B can run side by side.
  cp "$4" "$4.base"
  printf '\n[admin]\naddress = "127.0.0.1:%s"\n' "$3" >> "$4"
  "$1" check --config "$4" >/dev/null 2>&1 || mv "$4.base" "$4"
}
proxy_config "$BIN_A" "$A_PORT" "$A_ADMIN" "$work/a.toml"
proxy_config "$BIN_B" "$B_PORT" "$B_ADMIN" "$work/b.toml"

# Pin before exec: tokio and Go size themselves from the affinity mask.
taskset -c "$LOAD_CPU" nginx -c "$work/upstream.conf" -e stderr & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN_A" run --config "$work/a.toml" --workers 1 --log-level warn & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN_B" run --config "$work/b.toml" --workers 1 --log-level warn & pids+=($!)
for port in $UP_PORT $A_PORT $B_PORT; do wait_port "$port"; done

echo "A: $BIN_A"
echo "B: $BIN_B"
warm_up "$A_PORT" "$B_PORT"

printf '\n%-6s %12s %12s %8s\n' round A B B/A
ratios=()
for round in $(seq "$ROUNDS"); do
  # Alternate which goes first, so neither always runs on a warmer machine.
  if ((round % 2)); then a=$(rps "$A_PORT"); b=$(rps "$B_PORT"); else b=$(rps "$B_PORT"); a=$(rps "$A_PORT"); fi
  ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')")
  printf '%-6s %12.0f %12.0f %8s\n' "$round" "$a" "$b" "${ratios[-1]}"
done
median=$(printf '%s\n' "${ratios[@]}" | median)
echo
echo "B/A requests/s, median of $ROUNDS interleaved rounds: $median (range $(printf '%s\n' "${ratios[@]}" | sort -n | sed -n '1p;$p' | paste -sd-))"
