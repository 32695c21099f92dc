"""A real OTLP/HTTP trace receiver on loopback: it decodes each export with the official protobuf
definitions (opentelemetry-proto, from PyPI) and keeps every span as a plain dict, for the tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def _value(value: AnyValue):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs) -> dict:
    """The attributes as a dict; a key set twice is an error (the OTLP spec requires unique keys, and a
    dict would keep one of the two values silently)."""
    attributes = {}
    for pair in pairs:
        if pair.key in attributes:
            raise ValueError(f"attribute {pair.key!r} twice: {attributes[pair.key]!r} and {_value(pair.value)!r}")
        attributes[pair.key] = _value(pair.value)
    return attributes


class OtlpReceiver:
    """`endpoint` for OTEL_EXPORTER_OTLP_ENDPOINT; `spans` as received, each with its resource's
    attributes under `resource`."""

    def __init__(self):
        self.spans: list[dict] = []
        # Spans the receiver could not take as valid OTLP (each with why); kept out of `spans`.
        self.malformed: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                receiver._keep(export)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _keep(self, export: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for resource_spans in export.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        try:  # a key twice in the span, one of its events or its resource
                            resource = _attributes(resource_spans.resource.attributes)
                            attributes = _attributes(span.attributes)
                            events = [{"name": e.name, "attributes": _attributes(e.attributes)} for e in span.events]
                        except ValueError as why:
                            self.malformed.append(f"span {span.name!r}: {why}")
                            continue
                        self.spans.append({
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": Span.SpanKind.Name(span.kind),
                            "status": Status.StatusCode.Name(span.status.code),
                            "attributes": attributes,
                            "events": events,
                            "resource": resource,
                        })

    def of_trace(self, trace_id: str) -> list[dict]:
        with self._lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
