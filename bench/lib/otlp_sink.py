"""An OTLP/HTTP trace sink for the benchmarks: answers every export at once and counts the spans in it
(decoded with the official opentelemetry-proto definitions), so a benchmark can tell exported spans
from spans the SDK dropped. GET /spans answers the count so far.
Usage: python otlp_sink.py PORT"""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ANSWER = ExportTraceServiceResponse().SerializeToString()
spans = 0
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (the standard library's name)
        global spans
        export = ExportTraceServiceRequest()
        export.ParseFromString(self.rfile.read(int(self.headers.get("content-length", 0))))
        count = sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
        with lock:
            spans += count
        self._reply(ANSWER, "application/x-protobuf")

    def do_GET(self):  # noqa: N802
        with lock:
            self._reply(str(spans).encode(), "text/plain")


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
