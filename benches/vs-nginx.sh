#!/usr/bin/env bash
# Saturated requests/s of tailcut and Debian's nginx as reverse proxies,
# measured side by side in one run, as a ratio.
#
# Method (see BENCHMARKING notes in the README): each proxy alone on one core
# (PROXY_CPU) with one worker; the upstream (nginx returning a 12-byte body)
# and wrk share the other core (LOAD_CPU). Closed loop, fixed connection
# count. Rounds interleave direct, nginx, tailcut, so drift lands on all.
# Both proxies add X-Forwarded-For/-Proto/-Host and keep pooled keep-alive
# connections to the upstream, so they do the same work per request.
#
# Usage: benches/vs-nginx.sh [ROUNDS] [DURATION]      defaults: 3 10s
# Env:   CONNS (50), PROXY_CPU (0), LOAD_CPU (1), BASE_PORT (18080)
# Needs: nginx, wrk, taskset   (Debian: apt-get install nginx-light wrk util-linux)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
DURATION=${2:-10s}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18080}
UP_PORT=$((BASE_PORT + 1)) NGINX_PORT=$((BASE_PORT + 2)) TAILCUT_PORT=$((BASE_PORT + 3))

for tool in nginx wrk taskset; do
  command -v "$tool" >/dev/null || { echo "vs-nginx: $tool is not installed (apt-get install nginx-light wrk)" >&2; exit 2; }
done

cargo build --release --quiet
TAILCUT=target/release/tailcut

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

nginx_common="daemon off; master_process off; worker_processes 1; pid $work/PID; error_log stderr error;
events { worker_connections 10000; }"

cat > "$work/upstream.conf" <<CONF
${nginx_common//PID/upstream.pid}
http {
  access_log off;
  keepalive_requests 10000000;
  server { listen 127.0.0.1:$UP_PORT; location / { return 200 "hello world\n"; } }
}
CONF

cat > "$work/proxy.conf" <<CONF
${nginx_common//PID/proxy.pid}
http {
  access_log off;
  keepalive_requests 10000000;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      add_header Via "1.1 nginx";
    }
  }
}
CONF

cat > "$work/tailcut.toml" <<CONF
[[listeners]]
name = "bench"
address = "127.0.0.1:$TAILCUT_PORT"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = ["127.0.0.1:$UP_PORT"]
CONF

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "vs-nginx: nothing listening on port $1" >&2
  exit 1
}

# Pin before exec: nginx and tokio size themselves from the affinity mask.
taskset -c "$LOAD_CPU" nginx -c "$work/upstream.conf" -e stderr & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/proxy.conf" -e stderr & pids+=($!)
taskset -c "$PROXY_CPU" "$TAILCUT" run --config "$work/tailcut.toml" --workers 1 --log-level warn & pids+=($!)
tailcut_pid=$!
for port in $UP_PORT $NGINX_PORT $TAILCUT_PORT; do wait_port "$port"; done

rps() { # port -> requests/s of one wrk run
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$1/" | awk '/^Requests\/sec:/ {print $2}'
}

echo "warm-up (2 s each)"
for port in $UP_PORT $NGINX_PORT $TAILCUT_PORT; do
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
done

printf '\n%-6s %12s %12s %12s %16s\n' round direct nginx tailcut "tailcut/nginx"
ratios=()
for round in $(seq "$ROUNDS"); do
  direct=$(rps "$UP_PORT")
  ngx=$(rps "$NGINX_PORT")
  tc=$(rps "$TAILCUT_PORT")
  ratio=$(awk -v a="$tc" -v b="$ngx" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  printf '%-6s %12.0f %12.0f %12.0f %16s\n' "$round" "$direct" "$ngx" "$tc" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
echo
echo "tailcut/nginx requests/s per core, median of $ROUNDS interleaved rounds: $median"
echo "tailcut RSS after the run: $(awk '/VmRSS/ {print $2, $3}' "/proc/$tailcut_pid/status")"
