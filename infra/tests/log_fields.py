"""The log fields Logs Insights queries (dashboards and runbooks) may use, per log group.

RELAY_FIELDS is derived by hand from the code, each with the place that emits it. The ops tests check it
three ways: every field is named in that source file, a real relay run (target/debug/relay, RUST_LOG=debug,
a scripted set of requests) emits exactly these fields on its own lines (except the Lambda-only ones),
and every field a query uses is in the list for the log group it reads.
"""

from __future__ import annotations

# field -> the source file that emits it (relative to the repository root)
RELAY_FIELDS: dict[str, str] = {
    # Every line (telemetry/format.rs writes them before the event's own fields).
    "timestamp": "relay/src/telemetry/format.rs",
    "level": "relay/src/telemetry/format.rs",
    "target": "relay/src/telemetry/format.rs",
    "service": "relay/src/telemetry/format.rs",
    "version": "relay/src/telemetry/format.rs",
    "env": "relay/src/telemetry/format.rs",
    "message": "relay/src/telemetry/events.rs",
    # The request span (http/layers.rs): on every line logged while serving a request.
    "request_id": "relay/src/http/layers.rs",
    "method": "relay/src/http/layers.rs",
    "route": "relay/src/http/layers.rs",
    "cold_start": "relay/src/http/layers.rs",
    "problem": "relay/src/http/error.rs",
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
}

# Fields only the Lambda runtime produces: a local run cannot show them.
LAMBDA_ONLY_RELAY_FIELDS = frozenset({"cold_start"})

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
