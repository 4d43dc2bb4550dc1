#!/usr/bin/env bash
# TLS figures for tailcut, side by side with Debian's nginx and tailcut's Go
# equivalent (loadtest/goproxy, crypto/tls):
#
#  1. saturated requests/s over TLS with keep-alive (wrk -c$CONNS), and
#  2. new TLS handshakes per second per core (wrk with Connection: close, so
#     every request is a fresh TLS connection and a full handshake),
#     both as ratios to nginx, rounds interleaved (the order of the three
#     proxies rotates each round);
#  3. whether handshakes stall requests already in flight: the corrected
#     p99 / p99.9 of plain-HTTP requests at a fixed open-loop rate
#     (tailcut-load) through tailcut, alone and while new TLS connections
#     arrive at a steady HANDSHAKE_RATE on a TLS listener of the same
#     single-worker tailcut.
#
# Each proxy alone on PROXY_CPU with one worker; the upstream (nginx, 12
# bytes), wrk and tailcut-load share LOAD_CPU. In part 3 the connection
# client (loadtest/goproxy/cmd/connchurn, Go's crypto/tls) runs on
# HANDSHAKE_CPU, by default LOAD_CPU too, where its TLS work takes CPU from
# the generator: the run's verdicts say when that made a run invalid, and
# only a core of its own separates the two fully.
# The certificate is ECDSA P-256, made with openssl for the run. Part 3 runs
# tailcut only.
#
# Usage: benches/tls.sh [ROUNDS] [DURATION]      defaults: 3 10s
# Env:   CONNS (50), RATE (2000), HANDSHAKE_RATE (200), PROXY_CPU (0), LOAD_CPU (1), BASE_PORT (18180),
#        HANDSHAKE_CPU (LOAD_CPU): where the part-3 connection client runs (give it a core of its
#        own on a machine with three or more), ONLY_STALLS=1 to run part 3 alone
# Needs: nginx, wrk, taskset, openssl, go   (Debian: apt-get install nginx-light wrk util-linux openssl)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
DURATION=${2:-10s}
CONNS=${CONNS:-50}
RATE=${RATE:-2000}
HANDSHAKE_RATE=${HANDSHAKE_RATE:-200}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HANDSHAKE_CPU=${HANDSHAKE_CPU:-$LOAD_CPU}
BASE_PORT=${BASE_PORT:-18180}
UP_PORT=$((BASE_PORT + 1)) NGINX_PORT=$((BASE_PORT + 2)) TAILCUT_PORT=$((BASE_PORT + 3))
PLAIN_PORT=$((BASE_PORT + 4)) ADMIN_PORT=$((BASE_PORT + 5))
GO_PORT=$((BASE_PORT + 6)) GO_PLAIN_PORT=$((BASE_PORT + 7)) GO_ADMIN_PORT=$((BASE_PORT + 8))

SCRIPT=tls
# shellcheck source=benches/lib.sh
source benches/lib.sh
require nginx wrk taskset openssl go

cargo build --release --quiet --bin tailcut -p tailcut -p tailcut-load
TAILCUT=target/release/tailcut
LOAD=target/release/tailcut-load
(cd loadtest/goproxy && go build -trimpath -ldflags="-s -w" -o "$work/goproxy" . &&
  go build -trimpath -o "$work/connchurn" ./cmd/connchurn)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

upstream_conf "$UP_PORT" > "$work/upstream.conf"
cat > "$work/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/nginx.pid; error_log stderr error;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
$(nginx_proxy_location)
  }
}
CONF
cat > "$work/tailcut.toml" <<TOML
[[listeners]]
name = "tls"
address = "127.0.0.1:$TAILCUT_PORT"
[[listeners.tls.certificates]]
chain = "$work/cert.pem"
key = "$work/key.pem"

[[listeners]]
name = "plain"
address = "127.0.0.1:$PLAIN_PORT"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = ["127.0.0.1:$UP_PORT"]

[admin]
address = "127.0.0.1:$ADMIN_PORT"
TOML

sed "s/$TAILCUT_PORT/$GO_PORT/; s/$PLAIN_PORT/$GO_PLAIN_PORT/; s/$ADMIN_PORT/$GO_ADMIN_PORT/" \
  "$work/tailcut.toml" > "$work/goproxy.toml"


taskset -c "$LOAD_CPU" nginx -c "$work/upstream.conf" -e stderr & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/nginx.conf" -e stderr & pids+=($!)
taskset -c "$PROXY_CPU" "$TAILCUT" run --config "$work/tailcut.toml" --workers 1 --log-level warn & pids+=($!)
taskset -c "$PROXY_CPU" "$work/goproxy" run --config "$work/goproxy.toml" --workers 1 --log-level warn & pids+=($!)
for port in "$UP_PORT" "$NGINX_PORT" "$TAILCUT_PORT" "$PLAIN_PORT" "$GO_PORT"; do wait_port "$port"; done

# https_rps PORT [HEADER] : requests/s of one wrk run over TLS.
https_rps() {
  local header=()
  [ $# -gt 1 ] && header=(-H "$2")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "${header[@]}" "https://127.0.0.1:$1/" |
    awk '/^Requests\/sec:/ {print $2}'
}
if [ -z "${ONLY_STALLS:-}" ]; then
echo "warm-up (2 s each)"
for port in "$NGINX_PORT" "$TAILCUT_PORT" "$GO_PORT"; do
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "https://127.0.0.1:$port/" >/dev/null
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf '\n%-6s %9s %9s %9s %8s %8s   %9s %9s %9s %8s %8s\n' round \
  "nginx ka" "tc ka" "go ka" "tc/ngx" "go/ngx" "nginx hs" "tc hs" "go hs" "tc/ngx" "go/ngx"
declare -A ka_all hs_all
for round in $(seq "$ROUNDS"); do
  # Rotate the order: each proxy runs first, second and third in turn.
  ports=("$NGINX_PORT" "$TAILCUT_PORT" "$GO_PORT")
  shift_by=$(((round - 1) % 3))
  order=("${ports[@]:shift_by}" "${ports[@]:0:shift_by}")
  declare -A ka hs
  for port in "${order[@]}"; do ka[$port]=$(https_rps "$port"); done
  for port in "${order[@]}"; do hs[$port]=$(https_rps "$port" "Connection: close"); done
  printf '%-6s %9s %9s %9s %8s %8s   %9s %9s %9s %8s %8s\n' "$round" \
    "${ka[$NGINX_PORT]}" "${ka[$TAILCUT_PORT]}" "${ka[$GO_PORT]}" \
    "$(ratio "${ka[$TAILCUT_PORT]}" "${ka[$NGINX_PORT]}")" "$(ratio "${ka[$GO_PORT]}" "${ka[$NGINX_PORT]}")" \
    "${hs[$NGINX_PORT]}" "${hs[$TAILCUT_PORT]}" "${hs[$GO_PORT]}" \
    "$(ratio "${hs[$TAILCUT_PORT]}" "${hs[$NGINX_PORT]}")" "$(ratio "${hs[$GO_PORT]}" "${hs[$NGINX_PORT]}")"
  for port in "${ports[@]}"; do
    ka_all[$port]+="${ka[$port]} " hs_all[$port]+="${hs[$port]} "
  done
  ka_all[tc]+="$(ratio "${ka[$TAILCUT_PORT]}" "${ka[$NGINX_PORT]}") " ka_all[go]+="$(ratio "${ka[$GO_PORT]}" "${ka[$NGINX_PORT]}") "
  hs_all[tc]+="$(ratio "${hs[$TAILCUT_PORT]}" "${hs[$NGINX_PORT]}") " hs_all[go]+="$(ratio "${hs[$GO_PORT]}" "${hs[$NGINX_PORT]}") "
done
med() { printf '%s\n' $1 | median; }
echo
echo "keep-alive over TLS, req/s (medians): nginx $(med "${ka_all[$NGINX_PORT]}"), tailcut $(med "${ka_all[$TAILCUT_PORT]}"), goproxy $(med "${ka_all[$GO_PORT]}")"
echo "  per-round ratio to nginx (median): tailcut $(med "${ka_all[tc]}"), goproxy $(med "${ka_all[go]}")"
echo "new TLS handshakes/s on one core (medians): nginx $(med "${hs_all[$NGINX_PORT]}"), tailcut $(med "${hs_all[$TAILCUT_PORT]}"), goproxy $(med "${hs_all[$GO_PORT]}")"
echo "  per-round ratio to nginx (median): tailcut $(med "${hs_all[tc]}"), goproxy $(med "${hs_all[go]}")"
fi

# Part 3: plain requests at RATE through tailcut, alone, with HANDSHAKE_RATE
# new cleartext connections/s (the control: the same client-side churn on
# LOAD_CPU, no TLS), and with HANDSHAKE_RATE new TLS connections/s on the
# same single-worker tailcut. Only the difference between the last two is
# TLS's; what the control adds over "alone" is the shared load core's.
seconds=${DURATION%s}
plain_tail() {
  # An invalid run exits 3; its verdict is printed, not fatal here.
  { taskset -c "$LOAD_CPU" "$LOAD" run "http://127.0.0.1:$PLAIN_PORT/" --rate "$RATE" --duration "$DURATION" \
    --warmup 2s -c 16 2>&1 || true; } | awk '/^latency \(from intended send\)/ {print $7, $8} /^verdict/ {print $2}' | paste -sd' '
}
# with_churn PORT [plain] : plain_tail while new connections arrive on PORT.
with_churn() {
  taskset -c "$HANDSHAKE_CPU" "$work/connchurn" -port "$1" -rate "$HANDSHAKE_RATE" -seconds "$((seconds + 2))" \
    ${2:+-plain} > "$work/churn.out" &
  local churn=$!
  local result
  result=$(plain_tail)
  wait "$churn"
  echo "$result ($(cat "$work/churn.out" | awk '{print $1 " ok " $2 " failed"}'))"
}
echo
echo "plain requests at $RATE/s through tailcut: corrected p99 p99.9 verdict; new connections at $HANDSHAKE_RATE/s"
printf '%-6s %-24s %-46s %s\n' round alone "cleartext connections (control)" "TLS connections"
for round in $(seq "$ROUNDS"); do
  alone=$(plain_tail)
  control=$(with_churn "$PLAIN_PORT" plain)
  tls=$(with_churn "$TAILCUT_PORT")
  printf '%-6s %-24s %-46s %s\n' "$round" "$alone" "$control" "$tls"
done
