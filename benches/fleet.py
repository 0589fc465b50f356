#!/usr/bin/env python3
"""The shared tier on loopback: latency and throughput of HIT-SHARED against HIT-DISK, HIT-MEMORY and MISS, and what
the cluster-wide fill lease costs a cold miss. Numbers go to BENCHMARKS.md ("Fleet: the shared tier").

    cargo build --release && python3 benches/fleet.py [--images 200] [--concurrency 8]

Everything runs on 127.0.0.1 on free ports and is stopped at exit: moto's S3 server (tests/support/s3_server.py, the
one the fleet tests use; a Python server, far slower than MinIO or S3, so HIT-SHARED here is an upper bound), a
Python origin serving the corpus photo (benches/fixtures/photo-1920x1080.jpg, 684 KB, or --photo) under any name,
and release `mirage serve` processes:

- "no shared": a node without --shared-cache, cold: the MISS a single node pays.
- "A": a node with --shared-cache, cold: a MISS that also claims the fill lease (one create-only PUT), waits for
  nothing (no other node holds it), and queues the write of the entry; the difference to "no shared" is the lease.
- "B": a second node with its own empty disk: every image is HIT-SHARED (a GET from the store, verified, promoted
  into B's memory and disk); asked again, HIT-MEMORY.
- "B restarted": B again on the same disk, so memory is empty: every image is HIT-DISK.

Each phase asks every image once, first one request at a time (latency: p50, p90, p99, max), then a fresh set of
images at --concurrency (throughput). The client is Python with keep-alive connections: its own cost (~0.1 ms a
request) is in every number alike.
"""
import argparse
import concurrent.futures
import http.client
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "bench"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Origin(http.server.ThreadingHTTPServer):
    """Serves the photo under every path, so each name is a new cache key; counts requests."""

    daemon_threads = True

    def __init__(self, photo):
        self.photo = photo
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), OriginHandler)


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with self.server.lock:
            self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.server.photo)))
        self.send_header("Cache-Control", "max-age=86400")
        self.end_headers()
        self.wfile.write(self.server.photo)

    def log_message(self, *args):
        pass


class Node:
    """A release `mirage serve` on a free port."""

    def __init__(self, binary, cache_dir, env, shared_url=None):
        self.port = free_port()
        flags = ["serve", "--listen", f"127.0.0.1:{self.port}", "--cache-dir", cache_dir, "--allow-net", "127.0.0.1/32",
                 "--memory-cache-size", "1GiB"]
        if shared_url:
            flags += ["--shared-cache", shared_url]
        environment = dict(env, RUST_LOG="warn")
        self.log = open(cache_dir + ".log", "ab")
        self.process = subprocess.Popen([binary] + flags, env=environment, stdout=subprocess.DEVNULL,
                                        stderr=self.log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"mirage serve on {self.port} did not start (see {cache_dir}.log)")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def ask(connections, port, path):
    """GETs `path` on a kept-alive connection of this thread; returns (seconds, X-Cache)."""
    connection = connections.get(port)
    if connection is None:
        connection = connections[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    took = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"{path}: {response.status}")
    return took, response.getheader("X-Cache")


def paths(origin_port, names):
    return [f"/?http://127.0.0.1:{origin_port}/{name}.jpg" for name in names]


def latency(port, urls, expect):
    connections = {}
    times = []
    for url in urls:
        took, cache = ask(connections, port, url)
        if cache != expect:
            raise SystemExit(f"{url}: X-Cache {cache}, expected {expect}")
        times.append(took * 1000)
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return {"p50": statistics.median(times), "p90": pick(0.90), "p99": pick(0.99), "max": times[-1]}


def throughput(port, urls, expect, concurrency):
    local = threading.local()
    unexpected = []

    def one(url):
        if not hasattr(local, "connections"):
            local.connections = {}
        _, cache = ask(local.connections, port, url)
        if cache != expect:
            unexpected.append(cache)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, urls))
    took = time.perf_counter() - started
    if unexpected:
        raise SystemExit(f"{len(unexpected)} answers were not {expect}: {unexpected[:5]}")
    return len(urls) / took


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="distinct images per phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--photo", default=os.path.join(ROOT, "benches/fixtures/photo-1920x1080.jpg"))
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/mirage"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="mirage-fleet-bench.")
    s3 = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/support/s3_server.py"), "--bucket", BUCKET],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    nodes = []
    origin = None
    try:
        line = s3.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit("moto's S3 server did not start: pip install 'moto[server]'")
        s3_port = int(line.split()[1])
        with open(args.photo, "rb") as photo:
            origin = Origin(photo.read())
        threading.Thread(target=origin.serve_forever, daemon=True).start()
        origin_port = origin.server_address[1]
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
                   AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}", AWS_ALLOW_HTTP="true")
        shared = f"s3://{BUCKET}/bench"
        n = args.images
        sequential = [f"s{i}" for i in range(n)]
        concurrent_ = [f"c{i}" for i in range(n)]
        rows = []

        def run(name, port, prefix, expect):
            lat = latency(port, paths(origin_port, [prefix + x for x in sequential]), expect)
            rps = throughput(port, paths(origin_port, [prefix + x for x in concurrent_]), expect, args.concurrency)
            rows.append((name, expect, lat, rps))

        alone = Node(args.binary, os.path.join(work, "alone"), env)
        nodes.append(alone)
        run("no shared cache, cold", alone.port, "alone-", "MISS")
        a = Node(args.binary, os.path.join(work, "a"), env, shared)
        nodes.append(a)
        run("A: shared cache, cold (lease + queued write)", a.port, "", "MISS")
        time.sleep(2)  # A's queued writes land
        fetched = origin.requests
        b = Node(args.binary, os.path.join(work, "b"), env, shared)
        nodes.append(b)
        run("B: empty disk", b.port, "", "HIT-SHARED")
        run("B again", b.port, "", "HIT-MEMORY")
        b.stop()
        nodes.remove(b)
        time.sleep(0.5)
        b = Node(args.binary, os.path.join(work, "b"), env, shared)
        nodes.append(b)
        run("B restarted (memory empty)", b.port, "", "HIT-DISK")
        if origin.requests != fetched:
            raise SystemExit(f"B asked the origin {origin.requests - fetched} times; expected none")

        # The store's own cost of what the lease does (a create-only PUT of a small object, then its DELETE), with
        # nothing else writing: moto serialises writes, so in phase A each lease also waits for the queued writes
        # of the previous images' bodies.
        import boto3
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        lease_times = []
        for i in range(50):
            started = time.perf_counter()
            client.put_object(Bucket=BUCKET, Key=f"lease-bench/{i}", Body=b'{"node":"x"}', IfNoneMatch="*")
            client.delete_object(Bucket=BUCKET, Key=f"lease-bench/{i}")
            lease_times.append((time.perf_counter() - started) * 1000)
        lease_times.sort()

        load = open("/proc/loadavg").read().split()[:3]
        print(f"{n} images of {len(origin.photo)} bytes per phase; concurrency {args.concurrency}; "
              f"load average before/after: {' '.join(load)}")
        print("| phase | X-Cache | p50 ms | p90 ms | p99 ms | max ms | req/s at concurrency |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name, expect, lat, rps in rows:
            print(f"| {name} | {expect} | {lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | "
                  f"{lat['max']:.2f} | {rps:.0f} |")
        print(f"lease alone (create-only PUT + DELETE of a small object, boto3, nothing else writing): "
              f"p50 {statistics.median(lease_times):.2f} ms, p90 {lease_times[44]:.2f} ms")
    finally:
        for node in nodes:
            node.stop()
        if origin:
            origin.shutdown()
        s3.stdin.close()
        s3.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
