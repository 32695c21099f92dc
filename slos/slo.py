#!/usr/bin/env python3
"""Compile slos/relay.yaml: CloudWatch burn-rate alarms and Prometheus rules from one spec.

    python3 slos/slo.py --prometheus [--out FILE]   write the Prometheus rules (default
                                                     alarms/prometheus/slo-rules.yaml)
    python3 slos/slo.py --dashboards                 write the SLO widgets into both dashboards (slos/widgets.py)
    python3 slos/slo.py --check                      exit 1 when a generated file is not what the spec compiles to
    python3 slos/slo.py --list                       every SLO alarm CloudWatch gets, one per line

CloudWatch: for each SLO and tier, one metric-math alarm per window (the burn rate over the long and the
short window, each a single period as long as the window: CloudWatch's sliding window makes it the last
hour, or the last day, at every evaluation) and a composite alarm per tier (both windows in ALARM), whose
ActionsSuppressor is the next faster tier. infra/render.py puts them into the observability stack and
ORs the page tiers into the paging composite. Prometheus: a recording rule per window and an alert per
tier, with the same thresholds. Both come from the functions below, so they cannot drift apart.
Needs PyYAML.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILE = ROOT / "slos" / "relay.yaml"
PROMETHEUS_FILE = ROOT / "alarms" / "prometheus" / "slo-rules.yaml"
ALARMS_FILE = ROOT / "alarms" / "alarms.yaml"
RUNBOOK_BASE = "https://github.com/relayops/relayops/blob/main/runbooks"
_DURATION = re.compile(r"(\d+)([mhd])")
# Windows of an hour or more need a period of an hour or more: CloudWatch allows a day of evaluation
# range for shorter periods and seven days for longer ones; one period per window fits both.
MAX_WINDOW_SECONDS = 86400


def seconds(text: str) -> int:
    match = _DURATION.fullmatch(str(text))
    if not match:
        raise ValueError(f"not a window (Nm, Nh or Nd): {text!r}")
    return int(match.group(1)) * {"m": 60, "h": 3600, "d": 86400}[match.group(2)]


def duration_text(total: int) -> str:
    """86400 -> `1d`, 5400 -> `90m`: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


@dataclass(frozen=True)
class Tier:
    name: str
    severity: str
    burn_rate: Decimal
    long: str
    short: str
    spends: str


@dataclass(frozen=True)
class Slo:
    name: str
    title: str
    description: str
    objective: Decimal
    window: str
    cloudwatch: dict
    prometheus: str | None

    @property
    def budget(self) -> Decimal:
        """The error budget as a ratio: 99.9 -> 0.001."""
        return (Decimal(100) - self.objective) / Decimal(100)

    @property
    def runbook(self) -> str:
        return f"slo-{self.name}"

    def alarm(self, tier: Tier, window: str | None = None) -> str:
        """RelaySloApiAvailabilityFast (the tier's composite) or RelaySloApiAvailabilityFast1h (one window)."""
        return f"RelaySlo{camel(self.name)}{camel(tier.name)}{window or ''}"

    def threshold(self, tier: Tier) -> Decimal:
        """The error ratio at which the tier's burn rate is reached."""
        return tier.burn_rate * self.budget


@dataclass(frozen=True)
class Spec:
    tiers: list[Tier]
    slos: list[Slo]

    def windows(self) -> list[str]:
        found = {w for t in self.tiers for w in (t.long, t.short)}
        return sorted(found, key=seconds)


def load(path: Path = SPEC_FILE) -> Spec:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    tiers = [
        Tier(t["name"], t["severity"], Decimal(str(t["burn_rate"])), t["long"], t["short"], t["spends"])
        for t in data["tiers"]
    ]
    slos = []
    for entry in data["slos"]:
        sli = entry["sli"]
        if ("prometheus" in sli) == ("prometheus_absent" in sli):
            raise ValueError(f"{entry['name']}: give sli.prometheus, or sli.prometheus_absent saying why not")
        objective = Decimal(str(entry["objective"]))
        if not Decimal(0) < objective < Decimal(100):
            raise ValueError(f"{entry['name']}: objective {objective} is not a percentage below 100")
        slos.append(
            Slo(entry["name"], entry["title"], entry["description"], objective, entry["window"],
                sli["cloudwatch"], sli.get("prometheus"))
        )
    spec = Spec(tiers, slos)
    _validate(spec)
    return spec


def _validate(spec: Spec) -> None:
    for tier in spec.tiers:
        if seconds(tier.short) >= seconds(tier.long):
            raise ValueError(f"tier {tier.name}: the short window must be shorter than the long one")
        if seconds(tier.long) > MAX_WINDOW_SECONDS:
            raise ValueError(f"tier {tier.name}: CloudWatch alarms here look back at most a day")
    for slo in spec.slos:
        if not re.fullmatch(r"[a-z]+(-[a-z]+)*", slo.name):
            raise ValueError(f"SLO name {slo.name!r} must be kebab-case letters")
        ids = set(slo.cloudwatch["metrics"])
        if "burn" in ids or not all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids):
            raise ValueError(f"{slo.name}: metric ids are lowercase CloudWatch ids other than `burn`")
        if slo.prometheus is not None and "{window}" not in slo.prometheus:
            raise ValueError(f"{slo.name}: the Prometheus error ratio must use [{{window}}]")


def number(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 0.001, 14.4, 3."""
    text = format(value.normalize(), "f")
    return text


# ---- CloudWatch ----------------------------------------------------------------------------------------


def _metric(text: str) -> dict:
    parts = text.split()
    dims = [dict(zip(("Name", "Value"), p.split("=", 1))) for p in parts[2:]]
    metric = {"Namespace": parts[0], "MetricName": parts[1]}
    if dims:
        metric["Dimensions"] = dims
    return metric


def window_alarm(slo: Slo, tier: Tier, window: str) -> dict:
    """One window's burn-rate alarm, as an alarms.yaml-shaped entry (no actions: its tier's composite
    notifies)."""
    period = seconds(window)
    metrics = [
        {
            "Id": metric_id,
            "ReturnData": False,
            "MetricStat": {"Metric": _metric(m["metric"]), "Period": period, "Stat": m["stat"]},
        }
        for metric_id, m in slo.cloudwatch["metrics"].items()
    ]
    metrics.append(
        {
            "Id": "burn",
            "Label": f"{slo.title} burn rate over {window}",
            "ReturnData": True,
            "Expression": f"({slo.cloudwatch['error_ratio']}) / {number(slo.budget)}",
        }
    )
    return {
        "name": slo.alarm(tier, window),
        "tier": tier.name,
        "runbook": slo.runbook,
        "summary": f"{slo.title}: the error budget burned more than {number(tier.burn_rate)}x too fast over the last {window}.",
        "missing_data": "No events in the window is no budget spent.",
        "properties": {
            "Metrics": metrics,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": float(tier.burn_rate),
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "TreatMissingData": "notBreaching",
        },
    }


def tier_composite(slo: Slo, tier: Tier, faster: Tier | None) -> dict:
    rule = " AND ".join(f'ALARM("{slo.alarm(tier, w)}-${{Env}}")' for w in (tier.long, tier.short))
    entry = {
        "name": slo.alarm(tier),
        "tier": tier.name,
        "severity": tier.severity,
        "runbook": slo.runbook,
        "summary": (
            f"{slo.title} ({number(slo.objective)}% over {slo.window}) is spending its error budget "
            f"{number(tier.burn_rate)}x too fast over both {tier.long} and {tier.short} ({tier.spends})."
        ),
        "rule": rule,
        "children": [slo.alarm(tier, w) for w in (tier.long, tier.short)],
    }
    if faster is not None:
        entry["suppressor"] = slo.alarm(faster)
    return entry


def cloudwatch_alarms(spec: Spec | None = None) -> tuple[list[dict], list[dict]]:
    """(window alarms, tier composites) for every SLO, fastest tier first."""
    spec = spec or load()
    windows, composites = [], []
    for slo in spec.slos:
        faster = None
        for tier in spec.tiers:
            windows += [window_alarm(slo, tier, w) for w in (tier.long, tier.short)]
            composites.append(tier_composite(slo, tier, faster))
            faster = tier
    return windows, composites


# ---- Prometheus ----------------------------------------------------------------------------------------


def recorded(window: str) -> str:
    return f"slo:error_ratio:rate{window}"


def prometheus_rules(spec: Spec | None = None) -> dict:
    spec = spec or load()
    groups = []
    for slo in spec.slos:
        if slo.prometheus is None:
            continue
        selector = f'{{slo="{slo.name}"}}'
        rules: list[dict] = [
            {
                "record": recorded(window),
                "expr": " ".join(slo.prometheus.replace("{window}", window).split()),
                "labels": {"slo": slo.name},
            }
            for window in spec.windows()
        ]
        for tier in spec.tiers:
            threshold = number(slo.threshold(tier))
            rules.append(
                {
                    "alert": slo.alarm(tier),
                    "expr": (
                        f"{recorded(tier.long)}{selector} > {threshold}"
                        f" and {recorded(tier.short)}{selector} > {threshold}"
                    ),
                    "labels": {"severity": tier.severity, "slo": slo.name, "tier": tier.name},
                    "annotations": {
                        "summary": tier_composite(slo, tier, None)["summary"],
                        "runbook_url": f"{RUNBOOK_BASE}/{slo.runbook}.md",
                    },
                }
            )
        groups.append({"name": f"slo-{slo.name}", "rules": rules})
    return {"groups": groups}


def prometheus_text(spec: Spec | None = None) -> str:
    header = (
        "# GENERATED by slos/slo.py from slos/relay.yaml: do not edit, change the spec and run\n"
        "#   python3 slos/slo.py --prometheus\n"
        "# Burn-rate alerts (page: fast and slow tiers; ticket: the ticket tier). To silence a slower tier\n"
        "# while a faster one fires, as the CloudWatch composites do, inhibit in Alertmanager on `slo`.\n"
    )
    return header + yaml.safe_dump(prometheus_rules(spec), sort_keys=False, width=1000)


def notifying_alarm_names(spec: Spec) -> list[str]:
    """The alarms a person is told about, for the dashboard's alarm widget: the paging composite, the
    alarms of alarms/alarms.yaml, the SLO tiers."""
    alarms = yaml.safe_load(ALARMS_FILE.read_text(encoding="utf-8"))
    _, composites = cloudwatch_alarms(spec)
    return [alarms["composite"]["name"], *(a["name"] for a in alarms["alarms"]), *(c["name"] for c in composites)]


def generated(spec: Spec, rules_file: Path = PROMETHEUS_FILE) -> dict[Path, str]:
    """Every file compiled from the spec, and what it must hold."""
    import widgets

    return {rules_file: prometheus_text(spec), **widgets.rendered(spec, notifying_alarm_names(spec))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", action="store_true", help="write the Prometheus rules")
    parser.add_argument("--dashboards", action="store_true", help="write the SLO widgets into the dashboards")
    parser.add_argument("--out", type=Path, default=PROMETHEUS_FILE, help="where --prometheus writes")
    parser.add_argument("--check", action="store_true", help="fail when a generated file is stale")
    parser.add_argument("--list", action="store_true", help="list the CloudWatch SLO alarms")
    args = parser.parse_args(argv)
    spec = load()
    if args.list:
        windows, composites = cloudwatch_alarms(spec)
        for entry in composites:
            print(f"{entry['name']} ({entry['severity']}): {' AND '.join(entry['children'])}")
        print(f"{len(windows)} window alarms, {len(composites)} composites")
        return 0
    files = generated(spec, args.out)
    if args.check:
        stale = [path for path, text in files.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is not what slos/relay.yaml compiles to: run "
                  "python3 slos/slo.py --prometheus --dashboards")
        return 1 if stale else 0
    if not (args.prometheus or args.dashboards):
        parser.print_help()
        return 2
    for path, text in files.items():
        if (path == args.out and args.prometheus) or (path != args.out and args.dashboards):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
