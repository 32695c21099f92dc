"""A DynamoDB endpoint with faults: a loopback HTTP proxy in front of the local DynamoDB-API server that
forwards every call unchanged, or, when told to, breaks it the way DynamoDB does in trouble:

- `down`: the connection is closed without an answer (an unreachable endpoint);
- `throttle(fraction)`: that share of data-plane calls answered 400
  `ProvisionedThroughputExceededException`, each one counted as DynamoDB counts it
  (AWS/DynamoDB ReadThrottleEvents or WriteThrottleEvents per TableName, and per TableName and
  GlobalSecondaryIndexName for a query of an index);
- `slow(seconds, writes_only)`: calls answered correctly, that much later.

The relay cannot tell the proxy from DynamoDB: it speaks the same protocol on a real socket.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from lambda_sandbox import Clock, Sample

READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


@dataclass
class Fault:
    kind: str = "none"  # none, down, throttle, slow
    fraction: float = 0.0
    seconds: float = 0.0
    writes_only: bool = False


def _tables(op: str, request: dict) -> list[tuple[str, str | None]]:
    """(table, index) pairs a call touches, as DynamoDB attributes its throttle events."""
    if "TableName" in request:
        return [(request["TableName"], request.get("IndexName"))]
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [(name, None) for name in request.get("RequestItems", {})]
    if op in ("TransactWriteItems", "TransactGetItems"):
        out = []
        for item in request.get("TransactItems", []):
            for action in item.values():
                if isinstance(action, dict) and "TableName" in action:
                    out.append((action["TableName"], None))
        return sorted(set(out), key=str)
    return []


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up (its attempt timed out, or its sandbox was killed) is part of the fault.
        pass


class FaultyDynamoDb:
    def __init__(self, upstream: str, clock: Clock, seed: int = 7):
        self.upstream = urlparse(upstream)
        self.clock = clock
        self.fault = Fault()
        self.samples: list[Sample] = []
        self.calls: list[tuple[float, str, str]] = []  # (simulated time, op, what happened)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, op: str) -> str:
        fault = self.fault
        data_plane = op in READS or op in WRITES
        if fault.kind == "down":
            return "drop"
        if fault.kind == "throttle" and data_plane:
            with self._lock:
                return "throttle" if self._random.random() < fault.fraction else "pass"
        if fault.kind == "slow" and data_plane and (op in WRITES or not fault.writes_only):
            return "slow"
        return "pass"

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                op = (self.headers.get("x-amz-target") or "").rpartition(".")[2]
                action = proxy._decide(op)
                now = proxy.clock.now()
                with proxy._lock:
                    proxy.calls.append((now, op, action))
                if action == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if action == "throttle":
                    request = json.loads(body or b"{}")
                    kind = "ReadThrottleEvents" if op in READS else "WriteThrottleEvents"
                    for table, index in _tables(op, request):
                        dims = {"TableName": table}
                        if index:
                            dims["GlobalSecondaryIndexName"] = index
                        with proxy._lock:
                            proxy.samples.append(Sample("AWS/DynamoDB", kind, dims, now, 1.0))
                    answer = json.dumps({
                        "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                        "message": "The level of configured provisioned throughput for the table was exceeded.",
                    }).encode()
                    self.send_response(400)
                    self.send_header("content-type", "application/x-amz-json-1.0")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                if action == "slow":
                    time.sleep(proxy.fault.seconds)
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request("POST", self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

        return Handler
