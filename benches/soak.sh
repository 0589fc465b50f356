#!/usr/bin/env bash
# Memory soak of Mirage: distinct keys (originals and variants) at a fixed concurrency against a loopback origin,
# with the memory tier as the only cache, sampling the server's RSS from /proc every second.
#
#   benches/soak.sh                         # build release, 90 s of load, 15 s idle, report
#   DURATION=600 benches/soak.sh            # the 10-minute run
#   NO_BUILD=1 MIRAGE_BIN=/tmp/old-mirage benches/soak.sh   # another binary (before/after comparisons)
#
# The origin (Python, 127.0.0.1, a free port) serves the corpus photos of benches/fixtures under any query string:
# /1920.jpg?n=N is photo-1920x1080.jpg (684 KB), /4000.jpg?n=N is photo-4000x3000.jpg (1.7 MB), so every request
# names a key never seen before. One request in VARIANT_EVERY asks for a variant (`/width=300/`) of a new
# original, the rest mirror new originals: about what the issue measured (2,400 originals and 500 variants).
# Everything is bounded (the load stops after DURATION s; the whole script is under `timeout`) and every process
# started here is stopped by its pid on exit.
# Env: DURATION (90 s of load), IDLE (15 s idle after it), CONCURRENCY (8), BUDGET (64MiB, --memory-cache-size),
# VARIANT_EVERY (5), MIRAGE_FLAGS (extra flags), NO_BUILD=1, MIRAGE_BIN (default target/release/mirage), LARGE,
# SAMPLES (file to keep the per-second samples in).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-90}"
IDLE="${IDLE:-15}"
CONCURRENCY="${CONCURRENCY:-8}"
BUDGET="${BUDGET:-64MiB}"
VARIANT_EVERY="${VARIANT_EVERY:-5}"
FIXTURES="$ROOT/benches/fixtures"
# The large original: the corpus's 1.7 MB 4000x3000 photo, or LARGE=FILE (e.g. a 4.9 MB camera JPEG).
LARGE="${LARGE:-$FIXTURES/photo-4000x3000.jpg}"
WORK="$(mktemp -d /tmp/mirage-soak.XXXXXX)"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # port, seconds
  for _ in $(seq 1 $(( $2 * 20 ))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on 127.0.0.1:$1 after $2 s" >&2
  return 1
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

if [ -z "${NO_BUILD:-}" ]; then
  echo "== cargo build --release" >&2
  (cd "$ROOT" && cargo build --release --bin mirage)
fi
MIRAGE_BIN="${MIRAGE_BIN:-$ROOT/target/release/mirage}"
[ -x "$MIRAGE_BIN" ] || { echo "no $MIRAGE_BIN (run without NO_BUILD)" >&2; exit 1; }

# --- the origin ---
ORIGIN_PORT="$(free_port)"
cat >"$WORK/origin.py" <<'PY'
import http.server, sys
port, fixtures, large = int(sys.argv[1]), sys.argv[2], sys.argv[3]
FILES = {"1920": open(f"{fixtures}/photo-1920x1080.jpg", "rb").read(), "4000": open(large, "rb").read()}
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = FILES.get(self.path.split("?")[0].strip("/").removesuffix(".jpg"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=86400")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
python3 "$WORK/origin.py" "$ORIGIN_PORT" "$FIXTURES" "$LARGE" &
PIDS+=($!)
wait_port "$ORIGIN_PORT" 5

# --- mirage ---
MIRAGE_PORT="$(free_port)"
# shellcheck disable=SC2086
RUST_LOG=warn "$MIRAGE_BIN" serve --listen "127.0.0.1:$MIRAGE_PORT" --no-disk-cache --memory-cache-size "$BUDGET" \
  --allow-private-networks ${MIRAGE_FLAGS:-} 2>"$WORK/mirage.log" &
MIRAGE_PID=$!
PIDS+=("$MIRAGE_PID")
wait_port "$MIRAGE_PORT" 10

# --- RSS sampler: seconds since start, VmRSS and VmHWM in KiB ---
SAMPLES="${SAMPLES:-$WORK/samples.tsv}"
: >"$SAMPLES"
(
  start=$(date +%s)
  while kill -0 "$MIRAGE_PID" 2>/dev/null; do
    awk -v t=$(( $(date +%s) - start )) '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { print t "\t" r "\t" h }' \
      "/proc/$MIRAGE_PID/status" >>"$SAMPLES" 2>/dev/null || break
    sleep 1
  done
) &
PIDS+=($!)

# --- the load: CONCURRENCY threads, keep-alive connections, every request a new key ---
cat >"$WORK/load.py" <<'PY'
import http.client, itertools, sys, threading, time, collections
port, origin, duration, concurrency, every = (int(a) for a in sys.argv[1:6])
counter = itertools.count()
statuses = collections.Counter()
lock = threading.Lock()
received = [0]
deadline = time.monotonic() + duration
def worker():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < deadline:
        n = next(counter)
        target = f"http://127.0.0.1:{origin}/{('1920', '4000')[n % 2]}.jpg?n={n}"
        path = f"/width=300/?{target}" if n % every == 0 else f"/?{target}"
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            key = response.status
        except Exception as error:
            key = type(error).__name__
            body = b""
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        with lock:
            statuses[key] += 1
            received[0] += len(body)
threads = [threading.Thread(target=worker) for _ in range(concurrency)]
for t in threads: t.start()
for t in threads: t.join()
total = sum(statuses.values())
print(f"requests {total} ({total / duration:.1f}/s), statuses {dict(statuses)}, received {received[0] / 2**20:.0f} MiB")
PY
echo "== $MIRAGE_BIN: --memory-cache-size $BUDGET --no-disk-cache ${MIRAGE_FLAGS:-}; ${DURATION} s load at" \
  "concurrency $CONCURRENCY (1 in $VARIANT_EVERY a variant), then ${IDLE} s idle; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
LOAD_START=$(awk 'END { print NR }' "$SAMPLES")
timeout $(( DURATION + 120 )) python3 "$WORK/load.py" "$MIRAGE_PORT" "$ORIGIN_PORT" "$DURATION" "$CONCURRENCY" \
  "$VARIANT_EVERY" >&2
LOAD_END=$(awk 'END { print NR }' "$SAMPLES")
echo "== load done; load average $(cut -d' ' -f1-3 /proc/loadavg); idling ${IDLE} s" >&2
sleep "$IDLE"

# --- report ---
budget_kib=$(python3 -c "
import re, sys
m = re.fullmatch(r'(\d+)(KiB|MiB|GiB)', '$BUDGET')
print(int(m[1]) * {'KiB': 1, 'MiB': 1024, 'GiB': 1024 ** 2}[m[2]])")
awk -v start="$LOAD_START" -v end="$LOAD_END" -v budget="$budget_kib" '
  { rss[NR] = $2; if ($2 > max) max = $2; hwm = $3 }
  END {
    n = end - start
    q = int(n / 4); if (q < 1) q = 1
    printf "RSS MiB over the load (quarters): %.1f %.1f %.1f %.1f\n", rss[start + q] / 1024, rss[start + 2 * q] / 1024,
      rss[start + 3 * q] / 1024, rss[end] / 1024
    printf "max RSS %.1f MiB, VmHWM %.1f MiB, final RSS (after idle) %.1f MiB\n", max / 1024, hwm / 1024, rss[NR] / 1024
    limit = budget * 1.3 + 65536
    printf "goal: RSS <= 1.3 x %.0f MiB + 64 MiB = %.1f MiB: %s\n", budget / 1024, limit / 1024,
      (max <= limit ? "met" : "NOT met")
  }' "$SAMPLES"
grep -E "ERROR|panicked" "$WORK/mirage.log" | sort | uniq -c | sort -rn | head -5 >&2 || true
