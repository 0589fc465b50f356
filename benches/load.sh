#!/usr/bin/env bash
# Bounded loopback load test of Mirage's cache-hit path, next to nginx serving the same file (the static ceiling).
#
#   benches/load.sh                 # build release, then: nginx | mirage memory hit | mirage disk hit, logs at warn,
#                                   # then the two mirage runs again with info logging (one access-log line a request)
#   DURATION=5 ROUNDS=3 benches/load.sh
#
# Everything listens on 127.0.0.1 (ports picked free by the kernel), every run is bounded (wrk -d under `timeout`),
# and every process started here is stopped on exit by its pid. Installs nginx and wrk with apt-get when missing.
# Env: DURATION (10 s per run), CONNS (32), THREADS (2), ROUNDS (1), NO_BUILD=1 (use the existing release binary),
# NO_INFO=1 (skip the info-logging runs), FILE (photo-500x355.jpg, a file in tests/fixtures/).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-1}"
FILE="${FILE:-photo-500x355.jpg}"
FIXTURES="$ROOT/tests/fixtures"
WORK="$(mktemp -d /tmp/mirage-load.XXXXXX)"
MIRAGE_PID=""
NGINX_PID=""

cleanup() {
  local pid
  for pid in "$MIRAGE_PID" "$NGINX_PID"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "$MIRAGE_PID" "$NGINX_PID"; do
    [ -z "$pid" ] && continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() {
  command -v "$1" >/dev/null && return 0
  echo "== installing $2 (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need nginx nginx-light || need nginx nginx
need wrk wrk
command -v curl >/dev/null || need curl curl

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # port, seconds
  for _ in $(seq 1 $(( $2 * 20 ))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on 127.0.0.1:$1 after $2 s" >&2
  return 1
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

if [ -z "${NO_BUILD:-}" ]; then
  echo "== cargo build --release" >&2
  (cd "$ROOT" && cargo build --release --bin mirage)
fi
MIRAGE_BIN="$ROOT/target/release/mirage"
[ -x "$MIRAGE_BIN" ] || { echo "no $MIRAGE_BIN (run without NO_BUILD)" >&2; exit 1; }

# --- the loopback origin (and static ceiling): nginx tuned like /work/shared/bench/nginx/nginx.conf.in ---
ORIGIN_PORT="$(free_port)"
mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    server_tokens off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $FIXTURES;
    }
}
EOF
# daemon off + background: \$! is the master's pid, so cleanup can stop it by id.
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx/stderr.log" &
NGINX_PID=$!
wait_port "$ORIGIN_PORT" 5
SRC="http://127.0.0.1:$ORIGIN_PORT/$FILE"
curl -sf -o "$WORK/direct" "$SRC"
cmp -s "$WORK/direct" "$FIXTURES/$FILE" || { echo "nginx does not serve $FILE as is" >&2; exit 1; }

MIRAGE_PORT="$(free_port)"
CACHE_DIR="$WORK/cache"

start_mirage() { # rust_log, log file, extra flags...
  local rust_log="$1" log="$2"
  shift 2
  RUST_LOG="$rust_log" "$MIRAGE_BIN" serve --listen "127.0.0.1:$MIRAGE_PORT" --cache-dir "$CACHE_DIR" \
    --allow-private-networks --log-format json "$@" 2>"$log" &
  MIRAGE_PID=$!
  wait_port "$MIRAGE_PORT" 10
}
stop_mirage() {
  [ -z "$MIRAGE_PID" ] && return 0
  kill -TERM "$MIRAGE_PID" 2>/dev/null || true
  wait "$MIRAGE_PID" 2>/dev/null || true
  MIRAGE_PID=""
}
# Requests the proxied URL until it answers with the wanted X-Cache (at most 5 tries); checks the bytes.
warm() { # wanted x-cache
  local got=""
  for _ in 1 2 3 4 5; do
    got="$(curl -s -o "$WORK/proxied" -D - "http://127.0.0.1:$MIRAGE_PORT/?$SRC" | tr -d '\r' \
      | awk -F': ' 'tolower($1)=="x-cache" {print $2}')"
    [ "$got" = "$1" ] && break
  done
  cmp -s "$WORK/proxied" "$FIXTURES/$FILE" || { echo "mirage's answer differs from $FILE" >&2; exit 1; }
  echo "$got"
}

# A short extra wrk run that counts X-Cache values (a Lua response() callback slows wrk down, so this run is
# not one of the measured ones): tells how many answers of a "disk-hit" run really came from disk.
cat >"$WORK/xcache.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) mem = 0; disk = 0; other = 0 end
function response(status, headers, body)
  local x = headers["x-cache"] or headers["X-Cache"]
  if x == "HIT-MEMORY" then mem = mem + 1 elseif x == "HIT-DISK" then disk = disk + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local m, d, o = 0, 0, 0
  for _, t in ipairs(threads) do m = m + t:get("mem"); d = d + t:get("disk"); o = o + t:get("other") end
  io.write(string.format("HIT-MEMORY %d, HIT-DISK %d, other %d\n", m, d, o))
end
LUA
xcache_mix() { # url
  timeout 40 wrk -t"$THREADS" -c"$CONNS" -d3s -s "$WORK/xcache.lua" "$1" 2>&1 | tail -n1
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# wrk one URL; appends: label, req/s, p50, p99, non-2xx+socket errors, load average before, load after.
run_wrk() { # label url
  local label="$1" url="$2" out="$WORK/wrk.out" before after
  before="$(load)"
  timeout $(( DURATION + 30 )) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out" 2>&1 || true
  after="$(load)"
  awk -v label="$label" -v before="$before" -v after="$after" '
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 }
    /^ +99%/ { p99 = $2 }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ { for (i = 4; i <= NF; i += 2) { gsub(",", "", $i); errors += $i } }
    END { printf "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", label, rps, p50, p99, errors, before, after }
  ' "$out" >>"$RESULTS"
  tail -n1 "$RESULTS" >&2
}

echo "== origin $SRC; mirage on 127.0.0.1:$MIRAGE_PORT; wrk -t$THREADS -c$CONNS -d${DURATION}s; load $(load)" >&2
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round" >&2
  run_wrk "nginx-static" "$SRC"

  start_mirage warn "$WORK/mirage-warn.log"
  echo "   warm: $(warm HIT-MEMORY)" >&2
  run_wrk "mirage-memory-hit (log warn)" "http://127.0.0.1:$MIRAGE_PORT/?$SRC"
  stop_mirage

  # The entry is on disk now (written at the miss, flushed at shutdown); a 1 KiB memory tier cannot hold it.
  start_mirage warn "$WORK/mirage-warn-disk.log" --memory-cache-size 1KiB
  echo "   warm: $(warm HIT-DISK)" >&2
  run_wrk "mirage-1KiB-memory (log warn)" "http://127.0.0.1:$MIRAGE_PORT/?$SRC"
  echo "   x_cache of a 3 s wrk run right after it: $(xcache_mix "http://127.0.0.1:$MIRAGE_PORT/?$SRC")" >&2
  stop_mirage

  if [ -z "${NO_INFO:-}" ]; then
    run_wrk "nginx-static" "$SRC"
    start_mirage info "$WORK/mirage-info.log"
    echo "   warm: $(warm HIT-MEMORY)" >&2
    run_wrk "mirage-memory-hit (log info)" "http://127.0.0.1:$MIRAGE_PORT/?$SRC"
    stop_mirage
    start_mirage info "$WORK/mirage-info-disk.log" --memory-cache-size 1KiB
    echo "   warm: $(warm HIT-DISK)" >&2
    run_wrk "mirage-1KiB-memory (log info)" "http://127.0.0.1:$MIRAGE_PORT/?$SRC"
    stop_mirage
    # The access log says where each answer of the disk-hit run came from (moka may briefly keep an
    # over-budget entry that a disk hit promoted, so some answers can be memory hits).
    echo "   x_cache in the info 1KiB-memory run: $(grep -o '"x_cache":"[A-Z-]*"' "$WORK/mirage-info-disk.log" \
      | sort | uniq -c | tr '\n' ' ')" >&2
    echo "   access log: $(wc -c <"$WORK/mirage-info.log") bytes for the memory-hit run" >&2
  fi
  grep -h '"level":"\(WARN\|ERROR\)"' "$WORK"/mirage-*.log | head -5 >&2 || true
done

echo
echo "| run | req/s | p50 | p99 | errors | × nginx (preceding run) | load avg before → after |"
echo "|---|---:|---:|---:|---:|---:|---|"
awk -F'\t' '
  $1 == "nginx-static" { ceiling = $2 }
  { ratio = (ceiling > 0) ? sprintf("%.2fx", $2 / ceiling) : "-"
    printf "| %s | %.0f | %s | %s | %d | %s | %s → %s |\n", $1, $2, $3, $4, $5, ratio, $6, $7 }
' "$RESULTS"

if [ "$ROUNDS" -gt 1 ]; then
  # Medians over rounds; the ratio is taken per round against the nginx run just before, then its median.
  awk -F'\t' '$1 == "nginx-static" { c = $2 } { printf "%s\t%s\t%s\t%s\t%.3f\n", $1, $2, $3, $4, (c > 0 ? $2 / c : 0) }' \
    "$RESULTS" >"$WORK/ratios.tsv"
  median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  ms() { sed -e 's/us$/e-3/' -e 's/ms$//' -e 's/\([0-9.]\)s$/\1e3/'; } # wrk latency -> ms
  echo
  echo "Medians of $ROUNDS rounds:"
  echo
  echo "| run | req/s | p50 ms | p99 ms | × nginx |"
  echo "|---|---:|---:|---:|---:|"
  cut -f1 "$WORK/ratios.tsv" | awk '!seen[$0]++' | while IFS= read -r label; do
    rows="$(awk -F'\t' -v l="$label" '$1 == l' "$WORK/ratios.tsv")"
    printf '| %s | %.0f | %.2f | %.2f | %.2fx |\n' "$label" \
      "$(cut -f2 <<<"$rows" | median)" "$(cut -f3 <<<"$rows" | ms | median)" \
      "$(cut -f4 <<<"$rows" | ms | median)" "$(cut -f5 <<<"$rows" | median)"
  done
fi
