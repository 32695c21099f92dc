#!/usr/bin/env python3
"""Error-budget report: per SLO of slos/relay.yaml, over a window, the attainment, the budget left and the
worst hour, read from CloudWatch (GetMetricData) or a Prometheus server (its HTTP API).

    python3 slos/report.py cloudwatch --env prod [--api-id ID] [--window 30d] [--end TIME] [--markdown F] [--json F]
    python3 slos/report.py prometheus --url http://127.0.0.1:9090 [--window 30d] [--end TIME] [...]

CloudWatch: each SLO's metrics over the whole window (one period as long as the window) and per hour,
then the SLO's own error-ratio metric math through the evaluator the alarms are tested with
(alarms/cloudwatch.py), so the report computes exactly what the burn-rate alarms do. `--api-id` defaults
to the `ApiId` output of the app stack `relay-<env>`. Prometheus: the SLO's error-ratio PromQL over the
window at its end, and over each hour of it (a range query, one step an hour). An SLO without data in the
window (or without a Prometheus SLI) is reported as such, never as met. Prints Markdown (for a CI step
summary) unless --json - is given; exits 0 (it reports, it does not judge), 2 on a usage or access error.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "alarms"))
sys.path.insert(0, str(HERE.parent / "infra"))

import cloudwatch  # noqa: E402
import render  # noqa: E402
import slo  # noqa: E402

HOUR = 3600


@dataclass
class Row:
    slo: str
    title: str
    objective_percent: float
    window: str
    events: str  # what was measured: "data" or why there is none
    attainment_percent: float | None = None
    budget_left_percent: float | None = None  # of the window's error budget; negative when overspent
    worst_hour: str | None = None  # its start, UTC
    worst_hour_error_percent: float | None = None

    @staticmethod
    def of(entry: slo.Slo, error_ratio: float | None, worst: tuple[datetime, float] | None, why: str = "") -> "Row":
        row = Row(entry.name, entry.title, float(entry.objective), entry.window, why or "data")
        if error_ratio is not None:
            row.attainment_percent = round(100 * (1 - error_ratio), 4)
            row.budget_left_percent = round(100 * (1 - error_ratio / float(entry.budget)), 2)
        if worst is not None:
            row.worst_hour = worst[0].strftime("%Y-%m-%dT%H:%MZ")
            row.worst_hour_error_percent = round(100 * worst[1], 4)
        return row


def _worst(hours: list[tuple[datetime, float | None]]) -> tuple[datetime, float] | None:
    present = [(t, v) for t, v in hours if v is not None]
    return max(present, key=lambda item: (item[1], -item[0].timestamp())) if present else None


# ---- CloudWatch ----------------------------------------------------------------------------------------


def _queries(entry: slo.Slo, variables: dict, period: int) -> list[dict]:
    out = []
    for metric_id, m in entry.cloudwatch["metrics"].items():
        parts = render.substitute(m["metric"], variables).split()
        dims = [dict(zip(("Name", "Value"), p.split("=", 1))) for p in parts[2:]]
        out.append({
            "Id": metric_id,
            "MetricStat": {"Metric": {"Namespace": parts[0], "MetricName": parts[1], "Dimensions": dims},
                           "Period": period, "Stat": m["stat"]},
            "ReturnData": True,
        })
    return out


def _series(client, queries: list[dict], start: datetime, end: datetime, period: int) -> dict[str, dict[datetime, float]]:
    """Each query's values by period start (missing periods absent)."""
    values: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries}
    token = None
    while True:
        kwargs = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end, "ScanBy": "TimestampAscending"}
        if token:
            kwargs["NextToken"] = token
        answer = client.get_metric_data(**kwargs)
        for result in answer["MetricDataResults"]:
            for at, value in zip(result["Timestamps"], result["Values"]):
                if value is not None:
                    values[result["Id"]][at.astimezone(timezone.utc)] = float(value)
        token = answer.get("NextToken")
        if not token:
            return values


def _ratios(entry: slo.Slo, values: dict[str, dict[datetime, float]], starts: list[datetime]) -> list[float | None]:
    """The SLO's error-ratio metric math over aligned periods (the alarms' evaluator)."""
    arrays = {metric_id: [series.get(t) for t in starts] for metric_id, series in values.items()}
    return cloudwatch.evaluate_math(entry.cloudwatch["error_ratio"], arrays, len(starts))


def cloudwatch_rows(spec: slo.Spec, client, variables: dict, end: datetime, window: int) -> list[Row]:
    start = end - timedelta(seconds=window)
    rows = []
    for entry in spec.slos:
        whole_queries = _queries(entry, variables, window)
        whole = _series(client, whole_queries, start, end, window)
        first = {t for series in whole.values() for t in series}
        at = min(first) if first else None
        ratio = _ratios(entry, whole, [at])[0] if at is not None else None
        hourly = _series(client, _queries(entry, variables, HOUR), start, end, HOUR)
        hours = sorted({t for series in hourly.values() for t in series})
        worst = _worst(list(zip(hours, _ratios(entry, hourly, hours)))) if hours else None
        why = "" if ratio is not None else f"no data in CloudWatch for the {slo.duration_text(window)} before {end:%Y-%m-%dT%H:%MZ}"
        rows.append(Row.of(entry, ratio, worst, why))
    return rows


def api_id_of(env: str) -> str:
    import boto3

    stack = boto3.client("cloudformation").describe_stacks(StackName=f"relay-{env}")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if "ApiId" not in outputs:
        raise SystemExit(f"slo-report: the stack relay-{env} has no ApiId output; pass --api-id")
    return outputs["ApiId"]


# ---- Prometheus ----------------------------------------------------------------------------------------


def _prometheus(url: str, path: str, params: dict) -> list[dict]:
    with urllib.request.urlopen(f"{url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}", timeout=30) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus answered {body}")
    return body["data"]["result"]


def _number(text: str) -> float | None:
    value = float(text)
    return None if value != value else value  # NaN: no events


def prometheus_rows(spec: slo.Spec, url: str, end: datetime, window: int) -> list[Row]:
    rows = []
    for entry in spec.slos:
        if entry.prometheus is None:
            rows.append(Row.of(entry, None, None, "no Prometheus SLI (slos/relay.yaml says why)"))
            continue
        expr = " ".join(entry.prometheus.split())
        whole = _prometheus(url, "/api/v1/query", {"query": expr.replace("{window}", f"{window}s"), "time": end.timestamp()})
        ratio = _number(whole[0]["value"][1]) if whole else None
        hourly = _prometheus(url, "/api/v1/query_range", {
            "query": expr.replace("{window}", "1h"), "start": (end - timedelta(seconds=window - HOUR)).timestamp(),
            "end": end.timestamp(), "step": HOUR,
        })
        # A point at t covers the hour before it: report that hour's start.
        hours = [(datetime.fromtimestamp(float(t), timezone.utc) - timedelta(seconds=HOUR), _number(v))
                 for series in hourly for t, v in series["values"]]
        why = "" if ratio is not None else f"no data in Prometheus for the {slo.duration_text(window)} before {end:%Y-%m-%dT%H:%MZ}"
        rows.append(Row.of(entry, ratio, _worst(hours), why))
    return rows


# ---- output --------------------------------------------------------------------------------------------


def _fmt(value: float | None, suffix: str = "%") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


def markdown(rows: list[Row], source: str, end: datetime, window: str) -> str:
    lines = [
        f"### Error budgets ({source}: the {window} to {end:%Y-%m-%d %H:%M} UTC)",
        "",
        "| SLO | objective | attainment | budget left | worst hour (UTC) | errors in it |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.attainment_percent is None:
            lines.append(f"| {r.title} | {r.objective_percent:g}% over {r.window} | {r.events} | - | - | - |")
            continue
        left = _fmt(r.budget_left_percent) + (" (exhausted)" if (r.budget_left_percent or 0) < 0 else "")
        lines.append(
            f"| {r.title} | {r.objective_percent:g}% over {r.window} | {_fmt(r.attainment_percent)} | {left} | "
            f"{r.worst_hour or '-'} | {_fmt(r.worst_hour_error_percent)} |"
        )
    return "\n".join(lines) + "\n"


def _time(text: str | None) -> datetime:
    if not text:
        now = datetime.now(timezone.utc)
        return now.replace(minute=0, second=0, microsecond=0)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def main(argv: list[str]) -> int:
    try:
        return report(argv)
    except Exception as err:  # noqa: BLE001 - any failure to read a source is the same answer: say it, exit 2
        if isinstance(err, SystemExit):
            raise
        print(f"slo-report: cannot read the SLIs: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=["cloudwatch", "prometheus"])
    parser.add_argument("--env", help="the environment (CloudWatch): dev, prod, ...")
    parser.add_argument("--api-id", help="the HTTP API id (CloudWatch; default: the app stack's ApiId output)")
    parser.add_argument("--url", help="the Prometheus server (prometheus)")
    parser.add_argument("--window", default="30d", help="how far back (Nm, Nh, Nd; default 30d)")
    parser.add_argument("--end", help="the window's end, ISO 8601 (default: the last whole hour)")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown here (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument("--json", help="write JSON here (`-`: stdout instead of Markdown)")
    args = parser.parse_args(argv)
    spec, end = slo.load(), _time(args.end)
    window = slo.seconds(args.window)
    if args.source == "cloudwatch":
        if not args.env:
            parser.error("cloudwatch needs --env")
        import boto3

        variables = {"Env": args.env, "ApiId": args.api_id or api_id_of(args.env)}
        rows = cloudwatch_rows(spec, boto3.client("cloudwatch"), variables, end, window)
        source = f"CloudWatch, {args.env}"
    else:
        if not args.url:
            parser.error("prometheus needs --url")
        rows = prometheus_rows(spec, args.url, end, window)
        source = f"Prometheus at {args.url}"
    text = markdown(rows, source, end, slo.duration_text(window))
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as handle:
            handle.write(text)
    document = json.dumps({"source": source, "end": end.isoformat(), "window": args.window,
                           "slos": [asdict(r) for r in rows]}, indent=2)
    if args.json == "-":
        print(document)
        return 0
    if args.json:
        Path(args.json).write_text(document + "\n", encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
