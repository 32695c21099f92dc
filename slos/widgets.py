"""The SLO widgets of both dashboards, compiled from slos/relay.yaml like the alarms and rules are:
per SLO, its burn rate over each tier's long window and the error budget left over the SLO's window.

`python3 slos/slo.py --dashboards` writes them into dashboards/cloudwatch-relay.json (a row under the
text and alarm widgets, with every alarm of the stack in the alarm widget) and dashboards/relay-grafana.json
(a row at the top); `--check` fails when either file differs from what the spec compiles to.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import slo

CLOUDWATCH_FILE = slo.ROOT / "dashboards" / "cloudwatch-relay.json"
GRAFANA_FILE = slo.ROOT / "dashboards" / "relay-grafana.json"
TITLE = "SLO: "  # every generated widget's title starts so; nothing else's may
ROW_Y = 5  # the CloudWatch row goes under the text and alarm widgets
ALARM_ARN = "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _long_windows(spec: slo.Spec) -> list[tuple[str, slo.Tier]]:
    return [(tier.long, tier) for tier in spec.tiers]


def _suffixed(expression: str, ids, suffix: str) -> str:
    for metric_id in ids:
        expression = re.sub(rf"\b{metric_id}\b", f"{metric_id}_{suffix}", expression)
    return expression


def _metric_rows(entry: slo.Slo, suffix: str, period: int) -> list[list]:
    rows = []
    for metric_id, m in entry.cloudwatch["metrics"].items():
        parts = m["metric"].split()
        row: list = [parts[0], parts[1]]
        for dim in parts[2:]:
            row += dim.split("=", 1)
        row.append({"id": f"{metric_id}_{suffix}", "stat": m["stat"], "period": period, "visible": False})
        rows.append(row)
    return rows


def cloudwatch_widgets(spec: slo.Spec) -> list[dict]:
    """Per SLO: burn rate over each tier's long window (one line each, the tiers' thresholds as lines),
    and the budget left over the last 30 days."""
    widgets = []
    width = 24 // len(spec.slos)
    budget_height = 3
    for index, entry in enumerate(spec.slos):
        ids = list(entry.cloudwatch["metrics"])
        metrics: list[list] = []
        for window, _ in _long_windows(spec):
            suffix = window
            metrics += _metric_rows(entry, suffix, slo.seconds(window))
            ratio = _suffixed(entry.cloudwatch["error_ratio"], ids, suffix)
            metrics.append([{"expression": f"({ratio}) / {slo.number(entry.budget)}",
                             "label": f"burn rate over {window}", "id": f"burn_{suffix}"}])
        widgets.append({
            "type": "metric", "x": index * width, "y": ROW_Y, "width": width, "height": 6,
            "properties": {
                "title": f"{TITLE}{entry.title} burn rate ({slo.number(entry.objective)}% over {entry.window})",
                "region": "${AWS::Region}", "view": "timeSeries", "stacked": False, "period": 3600,
                "metrics": metrics,
                "yAxis": {"left": {"min": 0, "label": "x budget"}},
                "annotations": {"horizontal": [
                    {"label": f"{tier.name} ({tier.severity})", "value": float(tier.burn_rate)} for tier in spec.tiers
                ]},
            },
        })
        window = slo.seconds(entry.window)
        budget_metrics = _metric_rows(entry, "all", window)
        ratio = _suffixed(entry.cloudwatch["error_ratio"], ids, "all")
        budget_metrics.append([{"expression": f"100 * (1 - ({ratio}) / {slo.number(entry.budget)})",
                                "label": "budget left %", "id": "budget_left"}])
        widgets.append({
            "type": "metric", "x": index * width, "y": ROW_Y + 6, "width": width, "height": budget_height,
            "properties": {
                "title": f"{TITLE}{entry.title} error budget left, last {entry.window}",
                "region": "${AWS::Region}", "view": "singleValue", "start": f"-P{window // 86400}D",
                "setPeriodToTimeRange": True, "period": window, "metrics": budget_metrics,
            },
        })
    return widgets


def grafana_panels(spec: slo.Spec, first_id: int) -> list[dict]:
    """Per SLO with a Prometheus SLI: burn rate per long window (from the recording rules) and the
    budget left over the SLO's window."""
    panels = []
    entries = [e for e in spec.slos if e.prometheus is not None]
    width = 24 // max(1, len(entries))
    next_id = first_id
    for index, entry in enumerate(entries):
        budget = slo.number(entry.budget)
        selector = f'{{slo="{entry.name}"}}'
        panels.append({
            "id": next_id, "type": "timeseries",
            "title": f"{TITLE}{entry.title} burn rate ({slo.number(entry.objective)}% over {entry.window})",
            "description": f"{entry.description} Burn rate 1 spends exactly the budget in {entry.window}; "
                           "the lines are the alert tiers' thresholds (slos/relay.yaml).",
            "datasource": DATASOURCE, "gridPos": {"x": index * width, "y": 0, "w": width, "h": 7},
            "fieldConfig": {"defaults": {"unit": "none", "min": 0, "custom": {"thresholdsStyle": {"mode": "line"}},
                                         "thresholds": {"mode": "absolute", "steps": [
                                             {"color": "green", "value": None},
                                             *({"color": "red" if t.severity == "page" else "orange",
                                                "value": float(t.burn_rate)} for t in sorted(spec.tiers, key=lambda t: t.burn_rate))]}},
                            "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [
                {"refId": chr(ord("A") + k), "expr": f"{slo.recorded(window)}{selector} / {budget}",
                 "legendFormat": f"over {window}"}
                for k, (window, _) in enumerate(_long_windows(spec))
            ],
        })
        ratio = " ".join(entry.prometheus.replace("{window}", entry.window).split())
        panels.append({
            "id": next_id + 1, "type": "stat", "title": f"{TITLE}{entry.title} error budget left, last {entry.window}",
            "datasource": DATASOURCE, "gridPos": {"x": index * width, "y": 7, "w": width, "h": 3},
            "fieldConfig": {"defaults": {"unit": "percentunit", "max": 1, "thresholds": {"mode": "absolute", "steps": [
                {"color": "red", "value": None}, {"color": "orange", "value": 0.25}, {"color": "green", "value": 0.5}]}},
                "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
            "targets": [{"refId": "A", "expr": f"1 - ({ratio}) / {budget}", "instant": True}],
        })
        next_id += 2
    return panels


def _is_slo(title: str | None) -> bool:
    return bool(title) and title.startswith(TITLE)


def with_cloudwatch_widgets(body: dict, spec: slo.Spec, alarm_names: list[str]) -> dict:
    """The dashboard with its SLO row (re)built and its alarm widget listing `alarm_names`."""
    body = copy.deepcopy(body)
    widgets = [w for w in body["widgets"] if not _is_slo(w["properties"].get("title"))]
    new = cloudwatch_widgets(spec)
    height = max(w["y"] + w["height"] for w in new) - ROW_Y
    had_row = len(widgets) != len(body["widgets"])
    if not had_row:
        for w in widgets:
            if w["y"] >= ROW_Y:
                w["y"] += height
    for w in widgets:
        if w["type"] == "alarm":
            w["properties"]["alarms"] = [ALARM_ARN + f"{name}-${{Env}}" for name in alarm_names]
    body["widgets"] = sorted(widgets + new, key=lambda w: (w["y"], w["x"]))
    return body


def with_grafana_panels(body: dict, spec: slo.Spec) -> dict:
    body = copy.deepcopy(body)
    panels = [p for p in body["panels"] if not _is_slo(p.get("title"))]
    had_row = len(panels) != len(body["panels"])
    first_id = max((p["id"] for p in panels), default=0) + 1 if not had_row else min(
        p["id"] for p in body["panels"] if _is_slo(p.get("title")))
    new = grafana_panels(spec, first_id)
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in new)
    if not had_row:
        for p in panels:
            p["gridPos"]["y"] += height
    body["panels"] = sorted(new + panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    return body


def dump(body: dict) -> str:
    return json.dumps(body, indent=2, ensure_ascii=True) + "\n"


def rendered(spec: slo.Spec, alarm_names: list[str]) -> dict[Path, str]:
    """What each dashboard file must hold."""
    cloudwatch = json.loads(CLOUDWATCH_FILE.read_text(encoding="utf-8"))
    grafana = json.loads(GRAFANA_FILE.read_text(encoding="utf-8"))
    return {
        CLOUDWATCH_FILE: dump(with_cloudwatch_widgets(cloudwatch, spec, alarm_names)),
        GRAFANA_FILE: dump(with_grafana_panels(grafana, spec)),
    }
