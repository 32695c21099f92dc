"""moto in server mode with its request handling serialized by one lock.

moto's threaded server is not safe for concurrent DynamoDB transactions: it deep-copies tables while other
threads change them ("dictionary changed size during iteration" -> HTTP 500). Real DynamoDB has no such
limit, so the relay's parallel-write tests would fail for moto's sake. Connections stay concurrent
(keep-alive works); only the application code runs one request at a time.

Usage: python moto_serialized.py HOST PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Drain the response inside the lock: moto builds bodies lazily in some services.
            return list(app(environ, start_response))

    run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
