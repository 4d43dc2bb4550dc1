#!/usr/bin/env bash
# Saturated requests/s of tailcut, its Go equivalent (loadtest/goproxy), a
# stock httputil proxy and Debian's nginx as reverse proxies, measured side by
# side in one run as ratios to nginx; then each one's RSS while it holds
# IDLE_CONNS idle keep-alive client connections.
#
# Method (see BENCHMARKING notes in the README): each proxy alone on one core
# (PROXY_CPU) with one worker (tokio workers = GOMAXPROCS = 1); the upstream
# (nginx returning a 12-byte body) and wrk share the other core (LOAD_CPU).
# Closed loop, fixed connection count. Rounds interleave direct, nginx,
# tailcut, goproxy, stock Go, so drift lands on all. nginx, tailcut and
# goproxy add X-Forwarded-For/-Proto/-Host and keep pooled keep-alive
# connections to the upstream, so they do the same work per request; the
# stock proxy shows what goproxy's tuning changes.
#
# Usage: benches/vs-nginx.sh [ROUNDS] [DURATION]      defaults: 3 10s
# Env:   CONNS (50), IDLE_CONNS (2000), PROXY_CPU (0), LOAD_CPU (1), BASE_PORT (18080)
# Needs: nginx, wrk, taskset, go, python3   (Debian: apt-get install nginx-light wrk util-linux)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
DURATION=${2:-10s}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18080}
IDLE_CONNS=${IDLE_CONNS:-2000}
UP_PORT=$((BASE_PORT + 1)) NGINX_PORT=$((BASE_PORT + 2)) TAILCUT_PORT=$((BASE_PORT + 3))
GO_PORT=$((BASE_PORT + 4)) STOCK_PORT=$((BASE_PORT + 5))
TAILCUT_ADMIN=$((BASE_PORT + 6)) GO_ADMIN=$((BASE_PORT + 7))

SCRIPT=vs-nginx
# shellcheck source=benches/lib.sh
source benches/lib.sh
require nginx wrk taskset go python3

cargo build --release --quiet
TAILCUT=target/release/tailcut
(cd loadtest/goproxy && go build -trimpath -o "$work/goproxy" . && go build -trimpath -o "$work/stockproxy" ./cmd/stockproxy)

upstream_conf "$UP_PORT" > "$work/upstream.conf"
nginx_proxy_conf "$NGINX_PORT" "$UP_PORT" > "$work/proxy.conf"
{
  tailcut_conf "$TAILCUT_PORT" "$UP_PORT"
  printf '\n[admin]\naddress = "127.0.0.1:%s"\n' "$TAILCUT_ADMIN"
} > "$work/tailcut.toml"

sed "s/$TAILCUT_PORT/$GO_PORT/; s/$TAILCUT_ADMIN/$GO_ADMIN/" "$work/tailcut.toml" > "$work/goproxy.toml"

# Pin before exec: nginx, tokio and Go's GOMAXPROCS size themselves from the affinity mask.
taskset -c "$LOAD_CPU" nginx -c "$work/upstream.conf" -e stderr & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/proxy.conf" -e stderr & pids+=($!)
nginx_pid=$!
taskset -c "$PROXY_CPU" "$TAILCUT" run --config "$work/tailcut.toml" --workers 1 --log-level warn & pids+=($!)
tailcut_pid=$!
taskset -c "$PROXY_CPU" "$work/goproxy" run --config "$work/goproxy.toml" --workers 1 --log-level warn & pids+=($!)
go_pid=$!
taskset -c "$PROXY_CPU" "$work/stockproxy" --listen "127.0.0.1:$STOCK_PORT" --upstream "http://127.0.0.1:$UP_PORT" 2>/dev/null & pids+=($!)
stock_pid=$!
for port in $UP_PORT $NGINX_PORT $TAILCUT_PORT $GO_PORT $STOCK_PORT; do wait_port "$port"; done

warm_up "$UP_PORT" "$NGINX_PORT" "$TAILCUT_PORT" "$GO_PORT" "$STOCK_PORT"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

printf '\n%-6s %10s %10s %10s %10s %10s %9s %9s %9s\n' \
  round direct nginx tailcut goproxy stock-go tc/nginx go/nginx stock/ngx
tc_ratios=() go_ratios=() stock_ratios=()
for round in $(seq "$ROUNDS"); do
  direct=$(rps "$UP_PORT")
  ngx=$(rps "$NGINX_PORT")
  tc=$(rps "$TAILCUT_PORT")
  gp=$(rps "$GO_PORT")
  st=$(rps "$STOCK_PORT")
  tc_ratios+=("$(ratio "$tc" "$ngx")") go_ratios+=("$(ratio "$gp" "$ngx")") stock_ratios+=("$(ratio "$st" "$ngx")")
  printf '%-6s %10.0f %10.0f %10.0f %10.0f %10.0f %9s %9s %9s\n' "$round" "$direct" "$ngx" "$tc" "$gp" "$st" \
    "${tc_ratios[-1]}" "${go_ratios[-1]}" "${stock_ratios[-1]}"
done
echo
echo "requests/s per core relative to nginx, median of $ROUNDS interleaved rounds:"
echo "  tailcut  $(printf '%s\n' "${tc_ratios[@]}" | median)"
echo "  goproxy  $(printf '%s\n' "${go_ratios[@]}" | median)"
echo "  stock Go $(printf '%s\n' "${stock_ratios[@]}" | median)"

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo
echo "RSS with $IDLE_CONNS idle keep-alive client connections (measured 1 s after they are all open):"
printf '%-9s %12s %12s %14s\n' proxy "before (kB)" "idle (kB)" "per conn (B)"
for entry in "nginx $NGINX_PORT $nginx_pid" "tailcut $TAILCUT_PORT $tailcut_pid" \
  "goproxy $GO_PORT $go_pid" "stock-go $STOCK_PORT $stock_pid"; do
  read -r name port pid <<<"$entry"
  before=$(rss_kb "$pid")
  # Held for 3 s: well inside every proxy's idle and header timeouts.
  python3 benches/idle-conns.py "$port" "$IDLE_CONNS" 3 > "$work/idle.out" &
  holder=$!
  for _ in $(seq 600); do grep -q ready "$work/idle.out" && break; sleep 0.05; done
  grep -q ready "$work/idle.out" || { echo "vs-nginx: could not open $IDLE_CONNS connections to $name" >&2; exit 1; }
  sleep 1
  idle=$(rss_kb "$pid")
  wait "$holder"
  printf '%-9s %12s %12s %14s\n' "$name" "$before" "$idle" "$(( (idle - before) * 1024 / IDLE_CONNS ))"
  : > "$work/idle.out"
  sleep 1
done
