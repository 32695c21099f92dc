"""Every metric a dashboard or alarm reads exists: in the relay's catalog (namespace Relay, dimensions env +
the metric's labels, as the EMF exporter writes them), in the canary's catalog (Relay/Canary, Stage and
Probe), or in the allow-list of documented AWS metrics. Also checks dimension values and statistics, and
that the dashboards cover what DESIGN section 6 asks for.
"""

from __future__ import annotations

import re

import pytest

import render
from aws_metrics import AWS_METRICS
from refs import MetricRef, alarm_metric_refs, dashboard_metric_refs

RELAY_NAMESPACE = "Relay"
STATUS_CLASSES = {"1xx", "2xx", "3xx", "4xx", "5xx"}
# Statistics that make sense per kind: a counter's EMF values are deltas (sum them); a gauge is a level;
# a histogram's values are observations (percentiles, averages, extremes).
COUNTER_STATS = {"Sum", "SUM"}
GAUGE_STATS = {"Maximum", "Minimum", "Average", "MAX", "MIN", "AVG"}
PERCENTILE = "p"


def _histogram_stat(stat: str) -> bool:
    return stat in {"Average", "Maximum", "Minimum", "SampleCount", "AVG", "MAX", "MIN", "COUNT"} or (
        stat.startswith(PERCENTILE) and stat[1:].replace(".", "", 1).isdigit()
    )


def problems(ref: MetricRef, relay_catalog: dict, canary_catalog: dict) -> list[str]:
    """Why `ref` does not name a real series, or reads it with a statistic that makes no sense."""
    out: list[str] = []
    where = f"{ref.where}: {ref.namespace}/{ref.metric}"
    for dim in ref.group_by:
        if dim not in ref.dimensions:
            out.append(f"{where}: GROUP BY {dim} is not a dimension of the series {sorted(ref.dimensions)}")
    for dim in ref.values:
        if dim not in ref.dimensions:
            out.append(f"{where}: filters on {dim}, not a dimension of the series {sorted(ref.dimensions)}")

    if ref.namespace == RELAY_NAMESPACE:
        spec = relay_catalog.get(ref.metric)
        if spec is None:
            return out + [f"{where}: not in the relay's metric catalog"]
        expected = frozenset({"env", *spec["labels"]})
        if ref.dimensions != expected:
            out.append(f"{where}: EMF writes dimensions {sorted(expected)}, the reference reads {sorted(ref.dimensions)}")
        if ref.values.get("env") != "${Env}":
            out.append(f"{where}: must pin env to ${{Env}}, pins {ref.values.get('env')!r}")
        if "status_class" in ref.values and ref.values["status_class"] not in STATUS_CLASSES:
            out.append(f"{where}: status_class {ref.values['status_class']!r} is never emitted")
        kind = spec["kind"]
        ok = {
            "counter": ref.statistic in COUNTER_STATS,
            "gauge": ref.statistic in GAUGE_STATS,
            "histogram": _histogram_stat(ref.statistic),
        }[kind]
        if not ok:
            out.append(f"{where}: a {kind} read with {ref.statistic!r}")
        return out

    if ref.namespace == canary_catalog["namespace"]:
        specs = {m["name"]: m for m in canary_catalog["metrics"]}
        spec = specs.get(ref.metric)
        if spec is None:
            return out + [f"{where}: not in the canary's metric catalog"]
        expected = frozenset(spec["dimensions"])
        if ref.dimensions != expected:
            out.append(f"{where}: the canary publishes dimensions {sorted(expected)}, the reference reads {sorted(ref.dimensions)}")
        probes = next(d["values"] for d in canary_catalog["dimensions"] if d["name"] == "Probe")
        if "Probe" in ref.values and ref.values["Probe"] not in probes:
            out.append(f"{where}: no probe named {ref.values['Probe']!r} (probes: {probes})")
        if ref.values.get("Stage") != "${Env}":
            out.append(f"{where}: must pin Stage to ${{Env}}, pins {ref.values.get('Stage')!r}")
        return out

    metrics = AWS_METRICS.get(ref.namespace)
    if metrics is None:
        return out + [f"{where}: namespace is neither the relay's, the canary's nor an allow-listed AWS one"]
    allowed = metrics.get(ref.metric)
    if allowed is None:
        return out + [f"{where}: not an allow-listed {ref.namespace} metric (infra/tests/aws_metrics.py)"]
    if ref.dimensions not in allowed:
        out.append(f"{where}: dimensions {sorted(ref.dimensions)} are not documented for it: {[sorted(d) for d in allowed]}")
    return out


def all_dashboard_refs(dashboards: dict) -> list[MetricRef]:
    refs = []
    for name, body in dashboards.items():
        refs.extend(dashboard_metric_refs(body, f"dashboards/cloudwatch-{name}.json"))
    return refs


def all_alarm_refs(alarms_doc: dict) -> list[MetricRef]:
    refs = []
    for entry in alarms_doc["alarms"]:
        refs.extend(alarm_metric_refs(f"alarms/alarms.yaml {entry['name']}", entry["properties"]))
    for entry in alarms_doc["slo_alarms"]:
        refs.extend(alarm_metric_refs(f"slos/relay.yaml {entry['name']}", entry["properties"]))
    return refs


def test_every_dashboard_metric_is_in_a_catalog_or_a_documented_aws_metric(dashboards, relay_catalog, canary_catalog):
    refs = all_dashboard_refs(dashboards)
    assert len(refs) >= 30, "the parser found suspiciously few metrics"
    found = [p for ref in refs for p in problems(ref, relay_catalog, canary_catalog)]
    assert not found, "\n".join(found)


def test_every_alarm_metric_is_in_a_catalog_or_a_documented_aws_metric(alarms_doc, relay_catalog, canary_catalog):
    refs = all_alarm_refs(alarms_doc)
    assert len(refs) >= len(alarms_doc["alarms"]) + len(alarms_doc["slo_alarms"])
    found = [p for ref in refs for p in problems(ref, relay_catalog, canary_catalog)]
    assert not found, "\n".join(found)


def test_the_checker_rejects_what_it_must(relay_catalog, canary_catalog):
    """The cross-check itself: a renamed metric, a missing label, a bare relay metric and a wrong statistic fail."""
    bad = [
        MetricRef("typo", "Relay", "relay_http_request_total", frozenset({"env"}), {"env": "${Env}"}, statistic="Sum"),
        MetricRef("labels", "Relay", "relay_http_requests_total", frozenset({"env", "route"}), {"env": "${Env}"}, statistic="Sum"),
        MetricRef("stat", "Relay", "relay_messages_created_total", frozenset({"env"}), {"env": "${Env}"}, statistic="Average"),
        MetricRef("aws", "AWS/Lambda", "ColdStarts", frozenset({"FunctionName"}), statistic="Sum"),
        MetricRef("dims", "AWS/DynamoDB", "SystemErrors", frozenset({"TableName"}), statistic="Sum"),
        MetricRef("probe", "Relay/Canary", "Success", frozenset({"Stage", "Probe"}), {"Stage": "${Env}", "Probe": "api"}, statistic="MIN"),
    ]
    for ref in bad:
        assert problems(ref, relay_catalog, canary_catalog), f"{ref.where} should have been rejected"


def test_every_relay_and_canary_metric_is_on_a_dashboard(dashboards, relay_catalog, canary_catalog):
    shown = {(ref.namespace, ref.metric) for ref in all_dashboard_refs(dashboards)}
    # Server-only metrics (connections) never reach CloudWatch: the Grafana dashboard shows them (a relay test checks).
    missing = [
        name for name, spec in relay_catalog.items() if not spec["server_only"] and (RELAY_NAMESPACE, name) not in shown
    ]
    missing += [m["name"] for m in canary_catalog["metrics"] if (canary_catalog["namespace"], m["name"]) not in shown]
    assert not missing, f"catalog metrics no dashboard shows: {missing}"


@pytest.mark.parametrize(
    ("namespace", "metric"),
    [
        ("AWS/ApiGateway", "Count"),
        ("AWS/ApiGateway", "5xx"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/Lambda", "ConcurrentExecutions"),
        ("AWS/Lambda", "Errors"),
        ("AWS/DynamoDB", "ConsumedReadCapacityUnits"),
        ("AWS/DynamoDB", "ConsumedWriteCapacityUnits"),
        ("AWS/DynamoDB", "ReadThrottleEvents"),
        ("AWS/DynamoDB", "WriteThrottleEvents"),
        ("AWS/DynamoDB", "SuccessfulRequestLatency"),
        ("AWS/DynamoDB", "SystemErrors"),
        ("Relay", "relay_cold_starts_total"),
    ],
)
def test_the_dashboard_covers_design_section_6(dashboards, namespace, metric):
    shown = {(ref.namespace, ref.metric) for ref in all_dashboard_refs(dashboards)}
    assert (namespace, metric) in shown


def test_the_dashboard_has_alarm_status_and_logs_insights_widgets(dashboards):
    for name, body in dashboards.items():
        kinds = [w["type"] for w in body["widgets"]]
        assert "alarm" in kinds, f"{name}: no alarm status widget"
        assert kinds.count("log") >= 3, f"{name}: fewer than 3 Logs Insights widgets"
        init = [w for w in body["widgets"] if w["type"] == "log" and "@initDuration" in w["properties"]["query"]]
        assert init, f"{name}: no init duration (cold start) widget"


def test_dashboard_widgets_fit_the_grid_without_overlap(dashboards):
    for name, body in dashboards.items():
        cells: dict[tuple[int, int], int] = {}
        for index, widget in enumerate(body["widgets"]):
            x, y, w, h = widget["x"], widget["y"], widget["width"], widget["height"]
            assert 0 <= x and x + w <= 24, f"{name} widget {index} leaves the 24-column grid"
            for cx in range(x, x + w):
                for cy in range(y, y + h):
                    assert (cx, cy) not in cells, f"{name}: widgets {cells[(cx, cy)]} and {index} overlap"
                    cells[(cx, cy)] = index


def test_dashboard_bodies_only_use_variables_the_stack_defines(templates):
    """Fn::Sub fails the deploy on an unknown ${...}; catch it here instead."""
    defined = set(templates["observability"]["Parameters"]) | {"AWS::Region", "AWS::AccountId", "AWS::Partition"}
    for path in render.dashboard_files():
        text = path.read_text()
        used = set(render._VARIABLE.findall(text))
        assert used <= defined, f"{path.name}: undefined variables {sorted(used - defined)}"


_PROMQL_SELECTOR = re.compile(r"\b([a-z_][a-z0-9_]*)\{([^}]*)\}")
_PROMQL_MATCHER = re.compile(r'\s*([a-z_]+)\s*(=|!=|=~|!~)\s*"([^"]*)"\s*')
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def test_every_series_the_slo_rules_read_is_in_the_relay_catalog_with_its_labels(relay_catalog):
    """The Prometheus SLIs (slos/relay.yaml) read real series: catalog names (a histogram's _bucket,
    _count and _sum), labels the metric has (`le` for buckets), values the relay emits."""
    import slo

    checked = 0
    for entry in slo.load().slos:
        if entry.prometheus is None:
            continue
        for name, matchers in _PROMQL_SELECTOR.findall(entry.prometheus):
            base = name
            if name not in relay_catalog:
                base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
                assert relay_catalog.get(base, {}).get("kind") == "histogram", f"{entry.name}: {name} is not a relay metric"
            labels = set(relay_catalog[base]["labels"]) | ({"le"} if name.endswith("_bucket") else set())
            for label, _, value in _PROMQL_MATCHER.findall(matchers):
                assert label in labels, f"{entry.name}: {name} has no label {label} ({sorted(labels)})"
                if label == "status_class":
                    assert value in STATUS_CLASSES, f"{entry.name}: status_class {value!r} is never emitted"
            checked += 1
    assert checked >= 4, "the SLO rules' series were not found"
