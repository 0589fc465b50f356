#!/usr/bin/env bash
# The peer harness's side-by-side run (issue 12's command), with a Mirage binary of your choice:
#
#   benches/peers.sh [BINARY [NAME [OUTPUT.md]]]
#
# BINARY defaults to target/release/mirage (build it first; `--features simd` for the SIMD build, copied aside),
# NAME to `mirage`, OUTPUT to /tmp/peers-NAME.md. The harness is copied from ../shared/bench to /tmp/mirage-bench
# and set up on first use (nginx, wrk, sharp). Peers: nginx-static, sharp and Mirage; 3 rounds of 5 s. Mirage
# listens on 127.0.0.1:8180 (the harness's own ports are fixed by it), with an empty cache in a fresh temporary
# directory. Run it on a quiet machine: the report gives the CPU idle % before every measured run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/target/release/mirage}")
name=${2:-mirage}
out=${3:-/tmp/peers-$name.md}
[ -x "$bin" ] || { echo "no binary at $bin: cargo build --release first" >&2; exit 2; }
if [ ! -x /tmp/mirage-bench/run.sh ]; then
    cp -r "$root/../shared/bench" /tmp/mirage-bench
    /tmp/mirage-bench/setup.sh
fi
export TARGET_NAME=$name
export TARGET_RESIZE_URL='http://127.0.0.1:8180/width={w}/?{src}'
export TARGET_PASS_URL='http://127.0.0.1:8180/?{src}'
export TARGET_START="setsid $bin serve --listen 127.0.0.1:8180 --cache-dir \$(mktemp -d) --allow-net 127.0.0.1/32 >/tmp/mirage-$name.log 2>&1 & echo \$! >/tmp/mirage-$name.pid; sleep 1"
export TARGET_STOP="kill -- -\$(cat /tmp/mirage-$name.pid)"
/tmp/mirage-bench/run.sh -p "nginx-static sharp target" -r 3 -d 5 --no-cli --no-oha -o "$out"
