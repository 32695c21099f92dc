"""The log fields Logs Insights queries (dashboards and runbooks) may use, per log group.

RELAY_FIELDS is derived by hand from the code, each with the place that emits it. The ops tests check it
three ways: every field is named in that source file, a real relay run (target/debug/relay, RUST_LOG=debug,
a scripted set of requests) emits exactly these fields on its own lines (except the Lambda-only ones),
and every field a query uses is in the list for the log group it reads.
"""

from __future__ import annotations

# The one line shape of the relay and the canary: the members every line starts with.
LINE_SHAPE = "telemetry-core/src/lib.rs"

# field -> the source file that emits it (relative to the repository root)
RELAY_FIELDS: dict[str, str] = {
    # Every line (telemetry-core's layer writes them before the span and event fields).
    "timestamp": LINE_SHAPE,
    "level": LINE_SHAPE,
    "target": LINE_SHAPE,
    "service": LINE_SHAPE,
    "version": LINE_SHAPE,
    "env": LINE_SHAPE,
    "message": "relay/src/telemetry/events.rs",
    # The request span (telemetry/request.rs): on every line logged while serving a request.
    "request_id": "relay/src/telemetry/request.rs",
    "method": "relay/src/telemetry/request.rs",
    "route": "relay/src/telemetry/request.rs",
    "cold_start": "relay/src/telemetry/request.rs",
    "trace_id": "relay/src/telemetry/request.rs",
    "span_id": "relay/src/telemetry/request.rs",
    "xray_trace_id": "relay/src/telemetry/request.rs",
    "problem": "relay/src/http/problem.rs",
    # Events (telemetry/events.rs).
    "status": "relay/src/telemetry/events.rs",
    "latency_ms": "relay/src/telemetry/events.rs",
    "backend": "relay/src/telemetry/events.rs",
    "op": "relay/src/telemetry/events.rs",
    "outcome": "relay/src/telemetry/events.rs",
    "error_code": "relay/src/telemetry/events.rs",
    "error": "relay/src/telemetry/events.rs",
    "count": "relay/src/telemetry/events.rs",
    "retry_after_ms": "relay/src/telemetry/events.rs",
    "bytes": "relay/src/telemetry/events.rs",
    "reason": "relay/src/telemetry/events.rs",
    "listen": "relay/src/telemetry/events.rs",
    "store": "relay/src/telemetry/events.rs",
    "max_connections": "relay/src/telemetry/events.rs",
    # The debug buffer: the request line that writes it, and the WARN line of an overflowing one.
    "flush_buffer": "relay/src/telemetry/events.rs",
    "dropped_lines": LINE_SHAPE,
    # Each DynamoDB call attempt (debug), inside the store operation's span (`op`, `backend`).
    "call": "relay/src/store/dynamodb/attempts.rs",
    "attempt": "relay/src/store/dynamodb/attempts.rs",
    "http_status": "relay/src/store/dynamodb/attempts.rs",
}

# Fields only the Lambda runtime produces: a local run cannot show them.
LAMBDA_ONLY_RELAY_FIELDS = frozenset({"cold_start", "xray_trace_id"})

# The canary's lines: the same shape (telemetry-core), `service: healthcheck`, `env` = the stage.
CANARY_FIELDS: dict[str, str] = {
    **{name: LINE_SHAPE for name in ("timestamp", "level", "target", "service", "version", "env")},
    "message": "healthcheck/src/probe/mod.rs",
    # `Probe completed.`, one per probe (probe/mod.rs).
    **{
        name: "healthcheck/src/probe/mod.rs"
        for name in ("probe", "ok", "status", "latency_ms", "budget_ms", "failure", "reason",
                     "request_id", "request_id_sent", "trace_id", "attempts")
    },
    # `Canary run finished.`, one per Lambda invocation (lambda.rs).
    **{
        name: "healthcheck/src/lambda.rs"
        for name in ("stage", "passed", "failed", "duration_ms", "published", "event_id", "detail_type",
                     "scheduled_time", "aws_request_id")
    },
}

# Fields only the canary's Lambda entry writes: a CLI run cannot show them.
LAMBDA_ONLY_CANARY_FIELDS = frozenset(
    {"stage", "passed", "failed", "duration_ms", "published", "event_id", "detail_type", "scheduled_time",
     "aws_request_id"}
)

# Logs Insights' own fields, and those it discovers in Lambda platform lines (START/END/REPORT).
SYSTEM_FIELDS = frozenset(
    {
        "@timestamp",
        "@message",
        "@logStream",
        "@log",
        "@ingestionTime",
        "@entity",
    }
)
LAMBDA_PLATFORM_FIELDS = frozenset(
    {
        "@type",
        "@requestId",
        "@duration",
        "@billedDuration",
        "@initDuration",
        "@memorySize",
        "@maxMemoryUsed",
        "@xrayTraceId",
        "@xraySegmentId",
    }
)


def log_group_kind(name: str) -> str:
    """Which producer writes a log group, from its name (with `${Env}` or `<env>` or a real env)."""
    if name.startswith("/aws/apigateway/relay-") and name.endswith("/access"):
        return "access"
    if name.startswith("/aws/lambda/relay-canary-"):
        return "canary"
    if name.startswith("/aws/lambda/relay-"):
        return "relay"
    raise ValueError(f"unknown log group {name!r}")
