"""One Lambda function sandbox on loopback: the Lambda Runtime API (the HTTP protocol the Lambda service
speaks to a custom runtime, "Using the Lambda runtime API for custom runtimes") served to a real binary
(the relay, or the canary's Lambda entry), with the service's side of an invocation: the deadline, the
platform lines Lambda writes to the function's log (START, END, REPORT with `Status: timeout` or
`Status: error`), a timed-out or crashed sandbox thrown away and the next invocation started cold
(`Init Duration`), and the metrics Lambda and API Gateway publish for it (AWS/Lambda Invocations, Errors,
Duration; AWS/ApiGateway Count, 4xx, 5xx, Latency) plus the stage's access log line, rendered from the
format declared in infra/relay.yaml.

What it does not do: run two invocations at once (one sandbox serves one at a time, as in Lambda),
throttle, or bill. The platform lines follow the layout AWS documents for the text log format.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_API = "/2018-06-01/runtime"


class Clock:
    """Simulated minutes on a real clock: `begin_minute()` starts the next simulated minute now, and a
    wall-clock instant maps to the simulated minute it fell in, at its real offset (capped inside the
    minute). So a drill can play an hour of traffic in seconds while every sample and line keeps its
    order and its minute."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def begin_minute(self) -> int:
        self.marks.append(time.time())
        return len(self.marks) - 1

    @property
    def minute(self) -> int:
        return len(self.marks) - 1

    def sim(self, wall: float) -> float:
        if not self.marks:
            raise RuntimeError("the clock has not started")
        index = 0
        for k, mark in enumerate(self.marks):
            if mark <= wall:
                index = k
        return index * 60 + min(59.0, max(0.0, wall - self.marks[index]))

    def now(self) -> float:
        return self.sim(time.time())


@dataclass
class LogLine:
    time: float  # simulated seconds
    text: str


@dataclass
class Sample:
    namespace: str
    name: str
    dimensions: dict
    time: float  # simulated seconds
    value: float


@dataclass
class Invocation:
    request_id: str
    outcome: str  # "ok", "error" (the function reported one), "timeout", "crash"
    payload: object
    duration_ms: float
    started: float  # simulated seconds


@dataclass
class _Pending:
    request_id: str
    event: dict
    deadline_ms: int
    trace: str
    answer: "queue.Queue[tuple[str, object]]" = field(default_factory=queue.Queue)


class LambdaSandbox:
    """`binary` as function `function_name`, its stdout (the function's log) collected line by line."""

    def __init__(self, binary: Path, function_name: str, env: dict[str, str], clock: Clock,
                 timeout_s: float = 15.0, memory_mb: int = 256, log_path: Path | None = None):
        self.binary, self.function_name, self.env, self.clock = binary, function_name, env, clock
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self.log_path = log_path
        self.lines: list[LogLine] = []
        self.samples: list[Sample] = []
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()
        self._events: "queue.Queue[_Pending]" = queue.Queue()
        self._current: dict[str, _Pending] = {}
        self._polled = threading.Event()
        self._init_error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._spawned_at = 0.0
        self._cold = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    # ---- the Runtime API ----------------------------------------------------------------------------

    def _handler(self):
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # the function's log is what matters here
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != f"{_API}/invocation/next":
                    return self._reply(404)
                sandbox._polled.set()
                pending = sandbox._events.get()
                if pending is None:  # shutting down: leave the poll hanging, as Lambda does
                    time.sleep(3600)
                    return
                sandbox._current[pending.request_id] = pending
                self._reply(200, json.dumps(pending.event).encode(), {
                    "lambda-runtime-aws-request-id": pending.request_id,
                    "lambda-runtime-deadline-ms": str(pending.deadline_ms),
                    "lambda-runtime-invoked-function-arn":
                        f"arn:aws:lambda:us-east-1:123456789012:function:{sandbox.function_name}",
                    "lambda-runtime-trace-id": pending.trace,
                    "content-type": "application/json",
                })

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                found = re.fullmatch(rf"{_API}/invocation/([^/]+)/(response|error)", self.path)
                if found and found.group(1) in sandbox._current:
                    pending = sandbox._current.pop(found.group(1))
                    try:
                        payload = json.loads(body)
                    except ValueError:
                        payload = body.decode(errors="replace")
                    pending.answer.put((found.group(2), payload))
                    return self._reply(202, b'{"status":"OK"}')
                if self.path == f"{_API}/init/error":
                    sandbox._init_error = body.decode(errors="replace")
                    return self._reply(202, b'{"status":"OK"}')
                return self._reply(404)

        return Handler

    # ---- the sandbox --------------------------------------------------------------------------------

    def _log(self, text: str, wall: float | None = None) -> None:
        with self._lock:
            self.lines.append(LogLine(self.clock.sim(wall or time.time()), text))

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self._log(raw.rstrip("\n"))

    def _spawn(self) -> None:
        host, port = self._server.server_address
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_RUNTIME_API": f"{host}:{port}",
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"2026/12/01/[$LATEST]{uuid.uuid4().hex}",
            "AWS_REGION": "us-east-1",
            **self.env,
        }
        self._polled.clear()
        self._init_error = None
        self._spawned_at = time.time()
        self._proc = subprocess.Popen([str(self.binary)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        self._cold = True

    def _discard(self) -> None:
        """Throw the sandbox away (after a timeout or a crash), as Lambda does."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=5)
        self._proc = None
        # Whatever the old process had taken from the queue is gone with it.
        self._current.clear()

    def invoke(self, event: dict, request_id: str | None = None, trace: str | None = None) -> Invocation:
        """One invocation; `trace` is the X-Ray trace header the caller passes on (a new root if none)."""
        request_id = request_id or str(uuid.uuid4())
        trace = trace or f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Sampled=1"
        init_ms = None
        if self._proc is None or self._proc.poll() is not None:
            self._discard()
            self._spawn()
            if not self._wait_for_poll(10):
                return self._crashed(request_id, time.time(), "the runtime never asked for an invocation")
            init_ms = (time.time() - self._spawned_at) * 1000
        started = time.time()
        self._log(f"START RequestId: {request_id} Version: $LATEST", started)
        pending = _Pending(request_id, event, int((started + self.timeout_s) * 1000), trace)
        self._polled.clear()
        self._events.put(pending)
        kind, payload = None, None
        deadline = started + self.timeout_s
        while time.time() < deadline:
            try:
                kind, payload = pending.answer.get(timeout=0.05)
                break
            except queue.Empty:
                if self._proc.poll() is not None:
                    return self._crashed(request_id, started, f"exit status {self._proc.returncode}", init_ms)
        ended = time.time()
        duration_ms = (ended - started) * 1000
        if kind is None:
            # Today's Lambda reports a timeout on the REPORT line only (`Status: timeout`).
            self._finish(request_id, ended, duration_ms, init_ms, "timeout")
            self._discard()
            return self._record(Invocation(request_id, "timeout", None, duration_ms, self.clock.sim(started)))
        # The invocation ends when the runtime asks for the next one (after it flushed its metrics).
        self._wait_for_poll(2)
        end = time.time()
        self._finish(request_id, end, (end - started) * 1000, init_ms, None)
        outcome = "ok" if kind == "response" else "error"
        return self._record(Invocation(request_id, outcome, payload, duration_ms, self.clock.sim(started)))

    def _wait_for_poll(self, seconds: float) -> bool:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self._polled.wait(0.02):
                # Let the reader take the last lines written before the poll.
                time.sleep(0.01)
                return True
            if self._proc is not None and self._proc.poll() is not None:
                return False
        return False

    def _crashed(self, request_id: str, started: float, why: str, init_ms: float | None = None) -> Invocation:
        ended = time.time()
        if self._reader is not None and self._proc is not None:
            self._proc.wait()
            self._reader.join(timeout=5)
        self._log(f"RequestId: {request_id} Error: Runtime exited with error: {why}", ended)
        self._finish(request_id, ended, (ended - started) * 1000, init_ms, "error")
        self._discard()
        return self._record(Invocation(request_id, "crash", None, (ended - started) * 1000, self.clock.sim(started)))

    def _finish(self, request_id: str, wall: float, duration_ms: float, init_ms: float | None,
                status: str | None) -> None:
        memory = _max_rss_mb(self._proc)
        report = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
                  f"Billed Duration: {max(1, int(duration_ms + 0.999))} ms\tMemory Size: {self.memory_mb} MB\t"
                  f"Max Memory Used: {memory} MB")
        if init_ms is not None:
            report += f"\tInit Duration: {init_ms:.2f} ms"
        if status == "timeout":
            report += "\tStatus: timeout"
        elif status == "error":
            report += "\tStatus: error\tError Type: Runtime.ExitError"
        self._log(f"END RequestId: {request_id}", wall)
        self._log(report, wall)

    def _record(self, invocation: Invocation) -> Invocation:
        self.invocations.append(invocation)
        dims = {"FunctionName": self.function_name}
        at = invocation.started
        for name, value in (
            ("Invocations", 1),
            ("Errors", 0 if invocation.outcome == "ok" else 1),
            ("Duration", invocation.duration_ms),
        ):
            self.samples.append(Sample("AWS/Lambda", name, dims, at, value))
        return invocation

    def close(self) -> None:
        self._events.put(None)
        self._discard()
        self._server.shutdown()
        if self.log_path is not None:
            self.log_path.write_text("".join(f"{line.text}\n" for line in self.lines))


def _max_rss_mb(proc: subprocess.Popen | None) -> int:
    if proc is None:
        return 0
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) // 1024 if found else 0


# ---- API Gateway in front of the function ------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict
    body: str
    raw: bytes
    request_id: str  # API Gateway's requestId (the relay's request id when the client sent none)
    invocation: Invocation


class HttpApi:
    """An HTTP API `$default` stage with a Lambda proxy integration (payload 2.0) in front of a sandbox:
    builds the event, turns the answer into a response, and records the stage's metrics and access log
    line as API Gateway would."""

    def __init__(self, sandbox: LambdaSandbox, api_id: str, access_log_format: str):
        self.sandbox, self.api_id, self.format = sandbox, api_id, access_log_format
        self.samples: list[Sample] = []
        self.access_lines: list[LogLine] = []
        self.responses: list[Response] = []
        self._one_at_a_time = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def serve(self) -> str:
        """Serve the API over real HTTP on loopback too (for the canary); returns its base URL."""
        api = self

        class Front(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode() if length else None
                headers = {k.lower(): v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                answer = api.request(self.command, self.path, body, headers, source_ip=self.client_address[0])
                data = b"" if self.command == "HEAD" else answer.raw
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Front)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        host, port = self._server.server_address
        return f"http://{host}:{port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def request(self, method: str, path: str, body: str | None = None, headers: dict | None = None,
                source_ip: str = "203.0.113.7") -> Response:
        request_id = uuid.uuid4().hex[:14] + "="
        headers = {"host": f"{self.api_id}.execute-api.us-east-1.amazonaws.com", "user-agent": "drill/1",
                   "x-forwarded-for": source_ip, "x-forwarded-proto": "https", **(headers or {})}
        raw_path, _, query = path.partition("?")
        now = time.time()
        event = {
            "version": "2.0", "routeKey": "$default", "rawPath": raw_path, "rawQueryString": query,
            "headers": headers, "isBase64Encoded": False, "body": body,
            "requestContext": {
                "accountId": "123456789012", "apiId": self.api_id, "stage": "$default",
                "domainName": headers["host"], "domainPrefix": self.api_id, "requestId": request_id,
                "routeKey": "$default", "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
                "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                         "userAgent": headers["user-agent"]},
            },
        }
        if body is None:
            del event["body"]
        with self._one_at_a_time:  # one sandbox serves one invocation at a time
            started = time.time()
            # API Gateway passes its X-Ray trace on to the function's runtime, as Lambda does.
            invocation = self.sandbox.invoke(event, trace=headers.get("x-amzn-trace-id"))
            latency_ms = (time.time() - started) * 1000
        if invocation.outcome == "ok" and isinstance(invocation.payload, dict):
            status = int(invocation.payload.get("statusCode", 200))
            out_headers = invocation.payload.get("headers") or {}
            text = invocation.payload.get("body") or ""
            raw = base64.b64decode(text) if invocation.payload.get("isBase64Encoded") else text.encode()
            integration_error = "-"
        else:
            # A failed invocation is API Gateway's own 500, with the reason in the access log.
            status, out_headers, text = 500, {}, '{"message":"Internal Server Error"}'
            raw = text.encode()
            integration_error = f"The Lambda function invocation failed ({invocation.outcome})."
        at = invocation.started
        dims = {"ApiId": self.api_id, "Stage": "$default"}
        for name, value in (("Count", 1), ("4xx", int(400 <= status < 500)), ("5xx", int(status >= 500)),
                            ("Latency", latency_ms), ("IntegrationLatency", invocation.duration_ms)):
            self.samples.append(Sample("AWS/ApiGateway", name, dims, at, value))
        context = {
            "requestId": request_id, "identity.sourceIp": source_ip,
            "requestTime": event["requestContext"]["time"], "httpMethod": method, "routeKey": "$default",
            "path": raw_path, "status": str(status), "protocol": "HTTP/1.1", "responseLength": str(len(raw)),
            "responseLatency": str(int(latency_ms)), "integrationLatency": str(int(invocation.duration_ms)),
            "integrationStatus": "200" if invocation.outcome != "crash" else "-",
            "integrationErrorMessage": integration_error, "error.message": "-" if status < 500 else "Internal Server Error",
            "identity.userAgent": headers["user-agent"],
        }
        line = re.sub(r"\$context\.([A-Za-z.]+)", lambda m: context.get(m.group(1), "-"), self.format)
        self.access_lines.append(LogLine(at, line))
        response = Response(status, out_headers, raw.decode(errors="replace"), raw, request_id, invocation)
        self.responses.append(response)
        return response


# ---- metrics out of the function's log ---------------------------------------------------------------


def emf_samples(lines: list[LogLine]) -> list[Sample]:
    """CloudWatch's reading of the Embedded Metric Format documents among `lines`: one sample per value
    of each metric, for each of its dimension sets, at the document's (simulated) time."""
    out = []
    for line in lines:
        if not line.text.startswith("{"):
            continue
        try:
            doc = json.loads(line.text)
        except ValueError:
            continue
        meta = doc.get("_aws") if isinstance(doc, dict) else None
        if not isinstance(meta, dict):
            continue
        for directive in meta["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                name = metric["Name"]
                value = doc[name]
                if isinstance(value, dict):  # a distribution: {"Values": [...], "Counts": [...]}
                    values = [v for v, c in zip(value["Values"], value["Counts"]) for _ in range(int(c))]
                else:
                    values = value if isinstance(value, list) else [value]
                for dims in directive["Dimensions"]:
                    labels = {d: doc[d] for d in dims}
                    out.extend(Sample(directive["Namespace"], name, labels, line.time, float(v)) for v in values)
    return out
