"""A real S3 server for Mirage's fleet tests: moto's S3 on 127.0.0.1, on a free port (or PORT given as the first
argument, to come back on the same address after a stop), printed as `PORT <n>` on stdout once it listens.

Object writes and deletes are serialised with one lock. moto checks "does the key exist" and then writes without a
lock, so two create-only PUTs (`If-None-Match: *`) racing within microseconds could both succeed; real S3 makes
that check atomic, and a lease test must see S3's behaviour, not moto's race. Reads are not serialised.

Installed by `.ci/run` (`pip install 'moto[server]'`); tests skip with a printed reason when it cannot start.
"""
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

WRITES = threading.Lock()


def serialised_writes(app):
    def wrapped(environ, start_response):
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
            with WRITES:
                # The whole body is produced under the lock: moto does its work while building the response.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = serialised_writes(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
