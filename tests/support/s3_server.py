"""A real S3 server for Mirage's fleet tests: moto's S3 on 127.0.0.1, on a free port (or PORT given as the first
argument, to come back on the same address after a stop), printed as `PORT <n>` on stdout once it listens and
every `--bucket NAME` (repeatable) exists. moto keeps everything in memory, so a restart on the same port comes
back with the buckets recreated empty, as after losing the store.

    python3 tests/support/s3_server.py [PORT] [--bucket NAME]...

Object writes and deletes are serialised with one lock. moto checks "does the key exist" and then writes without a
lock, so two create-only PUTs (`If-None-Match: *`) racing within microseconds could both succeed; real S3 makes
that check atomic, and a lease test must see S3's behaviour, not moto's race. Reads are not serialised.

The server exits when its standard input reaches end of file: the test harness holds the other end of a pipe, so a
test process that dies without cleaning up (a panic in a signal handler, a SIGKILL from a timeout) leaves no
server behind. Run by hand from a terminal, Ctrl-D stops it.

Exit code 3 with a message on stderr means moto (or boto3, or werkzeug) is not installed: the tests skip with that
reason. Installed by `.ci/run` (`pip install 'moto[server]'`); this script is the only way the tests run moto.
"""
import argparse
import os
import sys
import threading

try:
    import boto3
    from botocore.config import Config
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server
except ImportError as missing:
    print(f"moto's S3 server is not available ({missing}); install it with: pip install 'moto[server]'",
          file=sys.stderr, flush=True)
    sys.exit(3)

WRITES = threading.Lock()
# moto accepts any key pair, but only signed requests.
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


def serialised_writes(app):
    def wrapped(environ, start_response):
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
            with WRITES:
                # The whole body is produced under the lock: moto does its work while building the response.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def exit_at_end_of_input():
    # os._exit: serve_forever runs in the main thread and would not notice sys.exit from here.
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description="moto's S3 on 127.0.0.1 for the fleet tests")
    parser.add_argument("port", nargs="?", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--bucket", action="append", default=[], help="a bucket to create at start (repeatable)")
    args = parser.parse_args()

    app = serialised_writes(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Through the S3 API rather than moto's internals, so the buckets are made exactly as a client would make them.
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                          config=Config(retries={"max_attempts": 1}, proxies={}), **CREDENTIALS)
    for bucket in args.bucket:
        client.create_bucket(Bucket=bucket)
    print(f"PORT {port}", flush=True)
    exit_at_end_of_input()


if __name__ == "__main__":
    main()
