#!/usr/bin/env python3
"""Render the deployable observability stack from its sources of truth.

    python3 infra/render.py [--out target/infra/observability.yaml]
    python3 infra/render.py --gate-seconds      how long a deploy gate must watch the paging alarms

Reads infra/observability.yaml (topics, parameters), every dashboards/cloudwatch-*.json (one
AWS::CloudWatch::Dashboard each, named `<stem>-<env>`), alarms/alarms.yaml (one AWS::CloudWatch::Alarm
per entry) and slos/relay.yaml through slos/slo.py (a burn-rate alarm per SLO, tier and window, and an
AWS::CloudWatch::CompositeAlarm per SLO and tier), adds the paging composite over every page alarm and
page tier, and writes the full template. Strings with
`${...}` become Fn::Sub, so the sources stay readable and the stack fills in the environment.

The ops tests import this module, so what they check is exactly what scripts/deploy.sh deploys. It must
never add a metric, alarm or widget of its own: those live only in dashboards/ and alarms/.
Needs PyYAML.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "slos"))

import slo  # noqa: E402
BASE_TEMPLATE = ROOT / "infra" / "observability.yaml"
ALARMS_FILE = ROOT / "alarms" / "alarms.yaml"
DASHBOARDS_DIR = ROOT / "dashboards"
DEFAULT_OUT = ROOT / "target" / "infra" / "observability.yaml"

SEVERITIES = ("page", "ticket")
DASHBOARD_URL = (
    "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}"
    "#dashboards/dashboard/relay-${Env}"
)
_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_alarms(path: Path = ALARMS_FILE, slo_spec: Path = slo.SPEC_FILE) -> dict:
    """alarms/alarms.yaml as data, {"alarms": [...], "composite": {...}}, with the SLO alarms compiled
    from slos/relay.yaml: "slo_alarms" (one per SLO, tier and window; they notify nobody themselves) and
    "slo_composites" (one per SLO and tier, fastest first, each with its `rule` and `suppressor`)."""
    doc = load_yaml(path)
    doc["slo_alarms"], doc["slo_composites"] = slo.cloudwatch_alarms(slo.load(slo_spec))
    return doc


def dashboard_files(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    return sorted(directory.glob("cloudwatch-*.json"))


def load_dashboard(path: Path) -> dict:
    """A dashboard body without its documentation keys (those starting with `_`)."""
    body = json.loads(path.read_text(encoding="utf-8"))
    return {key: value for key, value in body.items() if not key.startswith("_")}


def dashboard_name(path: Path) -> str:
    """dashboards/cloudwatch-relay.json -> `relay` (deployed as `relay-<env>`)."""
    return path.stem.removeprefix("cloudwatch-")


def alarm_name(name: str, env: str = "${Env}") -> str:
    return f"{name}-{env}"


def runbook_path(name: str) -> str:
    return f"runbooks/{name}.md"


def all_alarm_names(doc: dict) -> list[str]:
    """Every alarm the stack holds: metric alarms, SLO window alarms, SLO composites, the paging one."""
    return (
        [a["name"] for a in doc["alarms"]]
        + [a["name"] for a in doc["slo_alarms"]]
        + [c["name"] for c in doc["slo_composites"]]
        + [doc["composite"]["name"]]
    )


def with_sub(value):
    """Wrap every string holding a `${...}` variable in Fn::Sub, recursively."""
    if isinstance(value, str):
        return {"Fn::Sub": value} if _VARIABLE.search(value) else value
    if isinstance(value, list):
        return [with_sub(item) for item in value]
    if isinstance(value, dict):
        return {key: with_sub(item) for key, item in value.items()}
    return value


def substitute(value, variables: dict[str, str]):
    """Replace `${...}` variables with concrete values, recursively (for API replays and checks)."""
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            key = match.group(1)
            if key not in variables:
                raise KeyError(f"no value for ${{{key}}} in {value!r}")
            return variables[key]

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [substitute(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, variables) for key, item in value.items()}
    return value


def runbook_name(entry: dict) -> str:
    """An alarm's runbook is runbooks/<name>.md, or the SLO's (slo-<slo>.md) for every SLO alarm."""
    return entry.get("runbook", entry["name"])


def description(entry: dict) -> str:
    """`[page] Summary Runbook: URL Dashboard: URL`: what a notification shows first."""
    return (
        f"[{entry['severity']}] {entry['summary']} "
        f"Runbook: ${{RunbookBaseUrl}}/{runbook_name(entry)}.md Dashboard: {DASHBOARD_URL}"
    )


def logical_id(prefix: str, name: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9]", "", name[:1].upper() + name[1:])


def alarm_properties(entry: dict, topic_ref: dict) -> dict:
    """The CloudFormation properties of one alarm, variables still as `${...}` strings."""
    props = {
        "AlarmName": alarm_name(entry["name"]),
        "AlarmDescription": description(entry),
        "ActionsEnabled": True,
        "AlarmActions": [topic_ref],
        "OKActions": [topic_ref],
    }
    props.update(copy.deepcopy(entry["properties"]))
    props["Tags"] = [
        {"Key": "severity", "Value": entry["severity"]},
        {"Key": "runbook", "Value": runbook_path(entry["name"])},
        {"Key": "service", "Value": "relay"},
    ]
    return props


def paging_children(doc: dict) -> list[str]:
    """What the paging composite ORs: every page alarm and every page tier of an SLO."""
    return [a["name"] for a in doc["alarms"] if a["severity"] == "page"] + [
        c["name"] for c in doc["slo_composites"] if c["severity"] == "page"
    ]


def composite_rule(doc: dict) -> str:
    return " OR ".join(f'ALARM("{alarm_name(name)}")' for name in paging_children(doc))


# A slower SLO tier waits this long for the faster one to go into ALARM before it notifies, and stays
# silent this long after the faster one leaves ALARM.
SUPPRESSOR_WAIT_SECONDS = 120
SUPPRESSOR_EXTENSION_SECONDS = 600


def slo_window_alarm(entry: dict, severity: str) -> dict:
    """An SLO window alarm: no actions (its tier's composite notifies), its SLO's runbook."""
    props = {
        "AlarmName": alarm_name(entry["name"]),
        "AlarmDescription": description({**entry, "severity": severity}),
        "ActionsEnabled": True,
    }
    props.update(copy.deepcopy(entry["properties"]))
    props["Tags"] = [
        {"Key": "severity", "Value": severity},
        {"Key": "runbook", "Value": runbook_path(runbook_name(entry))},
        {"Key": "service", "Value": "relay"},
        {"Key": "role", "Value": "slo-window"},
    ]
    return props


def render(
    base: dict | None = None,
    alarms: dict | None = None,
    dashboards: list[Path] | None = None,
) -> dict:
    """The full observability template."""
    template = copy.deepcopy(base if base is not None else load_yaml(BASE_TEMPLATE))
    alarms = alarms if alarms is not None else load_alarms()
    dashboards = dashboards if dashboards is not None else dashboard_files()
    resources = template["Resources"]
    topic = {"Ref": "AlarmTopic"}

    for path in dashboards:
        name = dashboard_name(path)
        body = json.dumps(load_dashboard(path), separators=(",", ":"), ensure_ascii=False)
        resources[logical_id("Dashboard", name)] = {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": {"Fn::Sub": f"{name}-${{Env}}"},
                "DashboardBody": {"Fn::Sub": body},
            },
        }

    page_ids = []
    for entry in alarms["alarms"]:
        if entry["severity"] not in SEVERITIES:
            raise ValueError(f"{entry['name']}: severity must be one of {SEVERITIES}")
        resource_id = logical_id("Alarm", entry["name"])
        resources[resource_id] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": with_sub(alarm_properties(entry, topic)),
        }
        if entry["severity"] == "page":
            page_ids.append(resource_id)

    severities = {c["tier"]: c["severity"] for c in alarms["slo_composites"]}
    for entry in alarms["slo_alarms"]:
        resources[logical_id("Alarm", entry["name"])] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": with_sub(slo_window_alarm(entry, severities[entry["tier"]])),
        }
    for entry in alarms["slo_composites"]:
        resource_id = logical_id("Alarm", entry["name"])
        props = {
            "AlarmName": alarm_name(entry["name"]),
            "AlarmDescription": description(entry),
            "AlarmRule": entry["rule"],
            "ActionsEnabled": True,
            "AlarmActions": [topic],
            "OKActions": [topic],
        }
        depends = [logical_id("Alarm", child) for child in entry["children"]]
        if "suppressor" in entry:
            props["ActionsSuppressor"] = alarm_name(entry["suppressor"])
            props["ActionsSuppressorWaitPeriod"] = SUPPRESSOR_WAIT_SECONDS
            props["ActionsSuppressorExtensionPeriod"] = SUPPRESSOR_EXTENSION_SECONDS
            depends.append(logical_id("Alarm", entry["suppressor"]))
        resources[resource_id] = {
            "Type": "AWS::CloudWatch::CompositeAlarm",
            "DependsOn": depends,
            "Properties": with_sub(props),
        }
        if entry["severity"] == "page":
            page_ids.append(resource_id)

    composite = alarms["composite"]
    both_topics = [{"Ref": "PageTopic"}, topic]
    actions = {"Fn::If": ["Paging", both_topics, [topic]]}
    resources[logical_id("Alarm", composite["name"])] = {
        "Type": "AWS::CloudWatch::CompositeAlarm",
        # The rule names its children; CloudFormation must create them first.
        "DependsOn": page_ids,
        "Properties": with_sub(
            {
                "AlarmName": alarm_name(composite["name"]),
                "AlarmDescription": description(composite),
                "AlarmRule": composite_rule(alarms),
                "ActionsEnabled": True,
                "AlarmActions": actions,
                "OKActions": actions,
            }
        ),
    }
    return template


# How late CloudWatch sees a minute's datapoint (metrics arrive a minute or so after the fact) and decides
# on it (alarms evaluate once a minute): what a deploy gate adds to an alarm's own M x Period.
METRIC_DELAY_SECONDS = 60
EVALUATION_DELAY_SECONDS = 60


def gate_seconds(alarms: dict | None = None) -> int:
    """How long after a deploy its gate must watch for a regression that starts with the deploy to reach
    ALARM in every paging alarm that judges traffic: M periods of bad data, plus the metric and
    evaluation delays. Alarms whose missing data breaches (a silent canary) judge absence, not a
    regression, and are left out."""
    alarms = alarms if alarms is not None else load_alarms()
    needs = []
    for entry in alarms["alarms"]:
        props = entry["properties"]
        if entry["severity"] != "page" or props.get("TreatMissingData") == "breaching":
            continue
        period = int(props.get("Period") or max(int(m.get("Period") or m["MetricStat"]["Period"]) for m in props["Metrics"] if "Period" in m or "MetricStat" in m))
        datapoints = int(props.get("DatapointsToAlarm", props["EvaluationPeriods"]))
        needs.append(datapoints * period + METRIC_DELAY_SECONDS + EVALUATION_DELAY_SECONDS)
    return max(needs)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the template")
    parser.add_argument("--gate-seconds", action="store_true", help="print how long a deploy gate must watch, and exit")
    args = parser.parse_args(argv)
    if args.gate_seconds:
        print(gate_seconds())
        return 0
    template = render()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# GENERATED by infra/render.py from infra/observability.yaml, dashboards/cloudwatch-*.json,\n"
        "# alarms/alarms.yaml and slos/relay.yaml. Do not edit: change those files and render again.\n"
    )
    text = yaml.safe_dump(template, sort_keys=False, width=120, allow_unicode=True)
    args.out.write_text(header + text, encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
