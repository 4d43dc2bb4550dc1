# Shared by the throughput scripts in benches/ (sourced, not run): tool
# checks, a scratch folder with process cleanup, the nginx upstream, port
# waits, one wrk run, and the median of a column of numbers.
#
# The sourcing script sets SCRIPT (its name, for messages), LOAD_CPU,
# CONNS and DURATION before calling these.

# require TOOL... : exits 2 naming the first missing tool.
require() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$SCRIPT: $tool is not installed (Debian: apt-get install nginx-light wrk util-linux)" >&2
      exit 2
    }
  done
}

# A scratch folder in $work; every pid added to $pids is killed on exit.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# upstream_conf PORT : an nginx config answering a 12-byte body on PORT.
upstream_conf() {
  cat <<CONF
daemon off; master_process off; worker_processes 1; pid $work/upstream.pid; error_log stderr error;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 10000000;
  server { listen 127.0.0.1:$1; location / { return 200 "hello world\n"; } }
}
CONF
}

# nginx_proxy_location : the location block that makes nginx do tailcut's
# job in front of the `app` upstream: pooled keep-alive HTTP/1.1, Host,
# X-Forwarded-For/-Proto/-Host, and Via.
nginx_proxy_location() {
  cat <<'CONF'
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      add_header Via "1.1 nginx";
    }
CONF
}

# nginx_proxy_conf PORT UPSTREAM_PORT : a whole nginx config doing
# tailcut's job on PORT (one worker, pooled keep-alive connections) in front
# of the upstream on UPSTREAM_PORT.
nginx_proxy_conf() {
  cat <<CONF
daemon off; master_process off; worker_processes 1; pid $work/proxy-$1.pid; error_log stderr error;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream app { server 127.0.0.1:$2; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
$(nginx_proxy_location)
  }
}
CONF
}

# tailcut_conf PORT UPSTREAM_PORT : a tailcut config with one listener on
# PORT sending every request to the upstream on UPSTREAM_PORT.
tailcut_conf() {
  cat <<CONF
[[listeners]]
name = "bench"
address = "127.0.0.1:$1"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = ["127.0.0.1:$2"]
CONF
}

# wait_port PORT : until something listens on 127.0.0.1:PORT (5 s at most).
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$SCRIPT: nothing listening on port $1" >&2
  exit 1
}

# rps PORT : requests/s of one wrk run against PORT, from LOAD_CPU.
rps() {
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$1/" | awk '/^Requests\/sec:/ {print $2}'
}

# warm_up PORT... : two seconds of load on each.
warm_up() {
  echo "warm-up (2 s each)"
  for port in "$@"; do
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
  done
}

# median : the median of the numbers on standard input, one per line.
median() {
  sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
