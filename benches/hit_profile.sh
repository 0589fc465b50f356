#!/usr/bin/env bash
# Instructions per memory hit, by function, with callgrind: repeatable on a busy machine (it counts, not times).
#
#   benches/hit_profile.sh [REQUESTS] [extra `mirage serve` flags...]
#
# Starts a loopback upstream (python3 http.server over benches/fixtures), `target/release/mirage serve` under
# `valgrind --tool=callgrind` (access log at info to a file unless RUST_LOG says otherwise), warms the hit URL
# (`/width=300/?{upstream}/photo-500x355.jpg`, the peer harness's hit), zeroes the counters, sends REQUESTS
# (default 2000) keep-alive requests from one client, dumps, and prints the total per request and the top
# functions (inclusive). Needs valgrind and a release build. Everything binds 127.0.0.1 on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
shift || true
bin=target/release/mirage
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port)
port=$(free_port)
cleanup() { kill "${up_pid:-}" "${vg_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
python3 -m http.server "$up_port" --bind 127.0.0.1 --directory benches/fixtures >/dev/null 2>&1 &
up_pid=$!
export RUST_LOG=${RUST_LOG:-info}
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$bin" serve --listen "127.0.0.1:$port" --cache-dir "$work/cache" --allow-net 127.0.0.1/32 "$@" \
    >"$work/serve.log" 2>&1 &
vg_pid=$!
url="http://127.0.0.1:$port/width=300/?http://127.0.0.1:$up_port/photo-500x355.jpg"
python3 - "$url" "$requests" "$vg_pid" <<'PY'
import http.client, subprocess, sys, time, urllib.parse
url, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
u = urllib.parse.urlsplit(url)
path = u.path + "?" + u.query
for _ in range(600):
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60); c.request("GET", path); r = c.getresponse(); r.read(); break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the server did not start")
for _ in range(5):
    c.request("GET", path); r = c.getresponse(); r.read()
assert r.getheader("X-Cache") == "HIT-MEMORY", r.getheader("X-Cache")
subprocess.run(["callgrind_control", "--zero", pid], check=True, stdout=subprocess.DEVNULL)
for _ in range(n):
    c.request("GET", path); r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"status {r.status}")
subprocess.run(["callgrind_control", "--dump", pid], check=True, stdout=subprocess.DEVNULL)
PY
sleep 1
dump=$(ls -t "$work"/callgrind.out* | grep -v '^$' | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
echo "requests: $requests  instructions: $total  per request: $((total / requests))"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/Ir/,$p' | head -60
echo "(raw dump: $dump)"
