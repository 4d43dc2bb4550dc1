#!/usr/bin/env bash
# One slow backend of five: what each proxy's balancing does to the tail.
#
# Five tailcut-load backends, one answering every request 50 ms late, behind
# each of: tailcut with each balancing policy (peak_ewma, least_request,
# round_robin), the Go proxy (httputil.ReverseProxy, round-robin, as its
# users run it), nginx with least_conn and max_fails, and HAProxy with
# leastconn and health checks. Each target gets the same open-loop load
# from tailcut-load (latency from each request's intended send time), in
# interleaved rounds; the table gives each target's median over the rounds
# of p50, p99 and p99.9, and the range of its p99.9.
#
# With FAILING=1, backend 0 answers every request at once with 503 instead,
# trials have no warm-up (the first failures count), and the table also
# gives the median count of 5xx answers per trial. The proxies keep their
# state from trial to trial: tailcut's ejection lasts 30 s and grows with
# each one.
#
# Usage: benches/slow-backend.sh [DURATION]     default: 10s per trial
# Env:   RATE (2000 requests/s), CONNS (64), ROUNDS (3), BASE_PORT (18300),
#        PROXY_CPU (0), LOAD_CPU (1), FAILING (unset), WARMUP (2s; 0s with FAILING)
# Needs: nginx, haproxy, go, taskset
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10s}
RATE=${RATE:-2000}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18300}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WARMUP=${WARMUP:-2s}
[ -n "${FAILING:-}" ] && WARMUP=${WARMUP/2s/0s}

SCRIPT=slow-backend
# shellcheck source=benches/lib.sh
source benches/lib.sh
require nginx haproxy go taskset

cargo build --release --quiet --bin tailcut -p tailcut -p tailcut-load
LOAD=target/release/tailcut-load
(cd loadtest/goproxy && go build -trimpath -o "$work/goproxy" .)

# The backends: 0 is the slow one.
backends=()
for i in 0 1 2 3 4; do
  port=$((BASE_PORT + i))
  delay=none status=200
  if [ "$i" = 0 ]; then
    if [ -n "${FAILING:-}" ]; then status=503; else delay=fixed:50ms; fi
  fi
  taskset -c "$LOAD_CPU" "$LOAD" backend --listen "127.0.0.1:$port" --delay "$delay" --status "$status" >/dev/null 2>&1 &
  pids+=($!)
  backends+=("$port")
done
for port in "${backends[@]}"; do wait_port "$port"; done
quoted=$(printf '"127.0.0.1:%s", ' "${backends[@]}")
quoted=${quoted%, }

# proxy_conf PORT BALANCE : a tailcut (or Go proxy, BALANCE empty) config in
# front of the five backends.
proxy_conf() {
  cat <<CONF
[[listeners]]
name = "bench"
address = "127.0.0.1:$1"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = [$quoted]
${2:+balance = \"$2\"}

[admin]
address = "127.0.0.1:0"
CONF
}

targets=()
port=$((BASE_PORT + 10))
for policy in peak_ewma least_request round_robin; do
  proxy_conf "$port" "$policy" > "$work/tailcut-$policy.toml"
  taskset -c "$PROXY_CPU" target/release/tailcut run --config "$work/tailcut-$policy.toml" --workers 1 --log-level error &
  pids+=($!)
  targets+=("tailcut-$policy=$port")
  port=$((port + 1))
done

proxy_conf "$port" "" > "$work/goproxy.toml"
GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$work/goproxy" run --config "$work/goproxy.toml" --workers 1 --log-level error &
pids+=($!)
targets+=("goproxy=$port")
port=$((port + 1))

# nginx: least_conn, and max_fails to take out a backend that fails.
servers=$(printf '    server 127.0.0.1:%s max_fails=3 fail_timeout=30s;\n' "${backends[@]}")
cat > "$work/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/nginx.pid; error_log stderr error;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream app {
    least_conn;
$servers
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
$(nginx_proxy_location)
  }
}
CONF
taskset -c "$PROXY_CPU" nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
targets+=("nginx-least_conn=$port")
port=$((port + 1))

# HAProxy: leastconn, active health checks, idle connections reused.
servers=$(for i in "${!backends[@]}"; do printf '  server b%s 127.0.0.1:%s check inter 1s\n' "$i" "${backends[$i]}"; done)
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:$port
  default_backend app
backend app
  balance leastconn
  option httpchk GET /
$servers
CONF
taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
pids+=($!)
targets+=("haproxy-leastconn=$port")

for target in "${targets[@]}"; do wait_port "${target#*=}"; done

# One trial: "p50 p99 p99.9" in microseconds, from the corrected latency
# line, then the count of 5xx answers.
trial() {
  taskset -c "$LOAD_CPU" "$LOAD" run "http://127.0.0.1:$1/" --rate "$RATE" --duration "$DURATION" \
    --warmup "$WARMUP" -c "$CONNS" --max-send-lag 1s --max-stall 1s --max-error-rate 1 2>/dev/null > "$work/trial"
  latency=$(awk '/^latency \(from intended send\)/ { print $5, $7, $8 }' "$work/trial" | to_us)
  failed=$(grep -o '5xx [0-9]*' "$work/trial" | awk '{print $2}')
  echo "$latency ${failed:-0}"
}

# to_us : "63us 1.2ms 50.1ms" -> microseconds, space separated.
to_us() {
  awk '{ for (i = 1; i <= NF; i++) { v = $i; m = 1;
           if (v ~ /us$/) { sub(/us$/, "", v) } else if (v ~ /ms$/) { sub(/ms$/, "", v); m = 1000 }
           else if (v ~ /s$/) { sub(/s$/, "", v); m = 1000000 } else { v = -1 }
           printf "%s%d", (i > 1 ? " " : ""), v * m } print "" }'
}

what="answers in 50 ms"
[ -n "${FAILING:-}" ] && what="answers 503 at once"
echo "rate $RATE/s, $CONNS connections, $DURATION per trial, $ROUNDS interleaved rounds; backend 0 of 5 $what"
for round in $(seq "$ROUNDS"); do
  n=${#targets[@]}
  for k in $(seq 0 $((n - 1))); do
    target=${targets[$(((k + round - 1) % n))]}
    name=${target%%=*}
    figures=$(trial "${target#*=}")
    echo "$name $figures" >> "$work/results"
    echo "round $round $name: p50 p99 p99.9 (us), 5xx = $figures"
  done
done

echo
printf '%-22s %10s %10s %10s %22s %8s\n' target p50_us p99_us p99.9_us "p99.9 range (us)" 5xx
for target in "${targets[@]}"; do
  name=${target%%=*}
  rows=$(awk -v n="$name" '$1 == n' "$work/results")
  p50=$(echo "$rows" | awk '{print $2}' | median)
  p99=$(echo "$rows" | awk '{print $3}' | median)
  p999=$(echo "$rows" | awk '{print $4}' | median)
  range=$(echo "$rows" | awk '{print $4}' | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }')
  failed=$(echo "$rows" | awk '{print $5}' | median)
  printf '%-22s %10s %10s %10s %22s %8s\n' "$name" "$p50" "$p99" "$p999" "$range" "$failed"
done
