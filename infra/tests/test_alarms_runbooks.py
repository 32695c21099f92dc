"""Alarms and runbooks agree: every alarm (the composite too) has runbooks/<name>.md and every runbook an
alarm; each alarm carries severity, a runbook link, the dashboard link and SNS actions, and says how it
treats missing data; the paging composite covers exactly the page alarms; the dashboard's alarm widget
and the on-call overview list every alarm.
"""

from __future__ import annotations

import re

import render
from refs import dashboard_alarm_arns

SECTIONS = ["## Meaning", "## Impact", "## Diagnose", "## Mitigate", "## Escalate"]
OVERVIEW = "README.md"


def alarm_names(alarms_doc: dict) -> list[str]:
    return [a["name"] for a in alarms_doc["alarms"]] + [alarms_doc["composite"]["name"]]


def runbook_files(root) -> dict[str, object]:
    return {p.stem: p for p in (root / "runbooks").glob("*.md") if p.name != OVERVIEW}


def test_every_alarm_has_a_runbook_and_every_runbook_an_alarm(root, alarms_doc):
    alarms = set(alarm_names(alarms_doc))
    runbooks = set(runbook_files(root))
    assert alarms - runbooks == set(), f"alarms without runbooks/<name>.md: {sorted(alarms - runbooks)}"
    assert runbooks - alarms == set(), f"runbooks without an alarm: {sorted(runbooks - alarms)}"


def test_alarm_names_are_unique_and_severities_known(alarms_doc):
    names = alarm_names(alarms_doc)
    assert len(names) == len(set(names))
    for entry in [*alarms_doc["alarms"], alarms_doc["composite"]]:
        assert entry["severity"] in render.SEVERITIES, entry["name"]
        assert entry["summary"].endswith("."), f"{entry['name']}: the summary is a sentence"
        assert "${" not in entry["summary"], entry["name"]


def test_every_runbook_has_the_sections_a_dashboard_link_and_a_query(root):
    for name, path in runbook_files(root).items():
        text = path.read_text(encoding="utf-8")
        assert text.startswith(f"# {name}"), f"{path.name}: must open with `# {name}`"
        positions = [text.find(section) for section in SECTIONS]
        assert -1 not in positions, f"{path.name}: missing one of {SECTIONS}"
        assert positions == sorted(positions), f"{path.name}: sections out of order"
        assert "#dashboards/dashboard/relay-" in text, f"{path.name}: no dashboard link"
        assert "```logs-insights" in text, f"{path.name}: no copy-paste Logs Insights query"
        assert "**Severity:**" in text, f"{path.name}: does not state its severity"


def test_runbooks_state_the_alarms_severity(root, alarms_doc):
    for entry in [*alarms_doc["alarms"], alarms_doc["composite"]]:
        text = (root / "runbooks" / f"{entry['name']}.md").read_text(encoding="utf-8")
        assert f"**Severity:** {entry['severity']}" in text, f"{entry['name']}: runbook severity differs from alarms.yaml"


def test_the_overview_lists_every_alarm_with_its_runbook(root, alarms_doc):
    overview = (root / "runbooks" / OVERVIEW).read_text(encoding="utf-8")
    for name in alarm_names(alarms_doc):
        assert f"[{name}]({name}.md)" in overview, f"runbooks/README.md does not link {name}"


def _alarm_resources(templates) -> dict[str, dict]:
    return {
        key: res
        for key, res in templates["observability"]["Resources"].items()
        if res["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
    }


def _sub(value) -> str:
    return value["Fn::Sub"] if isinstance(value, dict) else value


def test_every_rendered_alarm_links_its_runbook_and_the_dashboard_and_notifies_sns(templates, alarms_doc):
    resources = _alarm_resources(templates)
    assert len(resources) == len(alarm_names(alarms_doc))
    for res in resources.values():
        props = res["Properties"]
        name = _sub(props["AlarmName"]).removesuffix("-${Env}")
        text = _sub(props["AlarmDescription"])
        assert re.match(r"^\[(page|ticket)\] ", text), f"{name}: description must start with its severity"
        assert f"${{RunbookBaseUrl}}/{name}.md" in text, f"{name}: no runbook link"
        assert "#dashboards/dashboard/relay-${Env}" in text, f"{name}: no dashboard link"
        assert len(text) <= 1024, f"{name}: description longer than CloudWatch allows"
        assert props["ActionsEnabled"] is True
        for key in ("AlarmActions", "OKActions"):
            actions = props[key]
            flat = str(actions)
            assert "AlarmTopic" in flat, f"{name}: {key} does not notify the alarm topic"
        if res["Type"] == "AWS::CloudWatch::Alarm":
            tags = {t["Key"]: t["Value"] for t in props["Tags"]}
            assert tags["runbook"] == f"runbooks/{name}.md"


def test_only_the_composite_pages_and_it_covers_every_page_alarm(templates, alarms_doc):
    resources = _alarm_resources(templates)
    composite = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::CompositeAlarm"]
    assert len(composite) == 1
    rule = _sub(composite[0]["Properties"]["AlarmRule"])
    pages = {a["name"] for a in alarms_doc["alarms"] if a["severity"] == "page"}
    named = set(re.findall(r'ALARM\("([A-Za-z0-9]+)-\$\{Env\}"\)', rule))
    assert named == pages, f"composite rule {rule!r} must name exactly the page alarms {sorted(pages)}"
    assert "PageTopic" in str(composite[0]["Properties"]["AlarmActions"])
    assert set(composite[0]["DependsOn"]) == {render.logical_id("Alarm", n) for n in pages}
    for res in resources.values():
        if res["Type"] == "AWS::CloudWatch::Alarm":
            assert "PageTopic" not in str(res["Properties"]), "only the composite alarm may page"


def test_missing_data_handling_is_explicit_and_a_silent_canary_alarms(alarms_doc, canary_catalog):
    for entry in alarms_doc["alarms"]:
        props = entry["properties"]
        assert props.get("TreatMissingData") in {"breaching", "notBreaching", "ignore", "missing"}, entry["name"]
        assert len(entry.get("missing_data", "")) > 20, f"{entry['name']}: say why missing data is treated so"
    canary = canary_catalog["namespace"]
    silent = [
        e
        for e in alarms_doc["alarms"]
        if e["properties"]["TreatMissingData"] == "breaching" and canary in str(e["properties"])
    ]
    assert silent, "no alarm fires when the canary stops publishing (missing data must breach)"
    assert all(e["severity"] == "page" for e in silent)


def test_the_dashboard_alarm_widget_lists_every_alarm(dashboards, alarms_doc):
    expected = {
        f"arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{render.alarm_name(n)}"
        for n in alarm_names(alarms_doc)
    }
    for name, body in dashboards.items():
        assert set(dashboard_alarm_arns(body)) == expected, f"{name}: alarm widget differs from alarms/alarms.yaml"


def test_alarm_periods_fit_the_canary_schedule(alarms_doc, environments):
    """Canary alarms read 60 s periods, so the canary must run every minute in every environment."""
    for env in environments.values():
        assert env["stacks"]["canary"]["ScheduleExpression"] == "rate(1 minute)"
    for entry in alarms_doc["alarms"]:
        for query in entry["properties"].get("Metrics", []):
            period = query.get("Period") or query.get("MetricStat", {}).get("Period")
            if period is not None:
                assert period % 60 == 0, entry["name"]


def test_every_alarm_runbook_promises_when_it_fires(alarms_doc):
    """`**Fires:** within N minutes of ...`: what the drills hold each alarm to, and what on-call reads
    to judge how old an incident is. The promise cannot be shorter than the alarm needs: its
    DatapointsToAlarm periods."""
    import drills

    for alarm in alarms_doc["alarms"]:
        props = alarm["properties"]
        minutes = drills.promised_minutes(alarm["name"])
        period = drills.cloudwatch.alarm_period(props)
        assert minutes * 60 >= props["DatapointsToAlarm"] * period, alarm["name"]
