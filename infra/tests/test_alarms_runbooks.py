"""Alarms and runbooks agree: every alarm (the composites too) has its runbook (runbooks/<name>.md, or
runbooks/slo-<slo>.md for the SLO alarms) and every runbook an alarm; each alarm carries severity, a
runbook link and the dashboard link, and every one but the SLO window alarms notifies SNS; the paging
composite covers exactly the page alarms and the SLO page tiers; the dashboard's alarm widget and the
on-call overview list every alarm a person is told about.
"""

from __future__ import annotations

import re

import render
from refs import dashboard_alarm_arns

SECTIONS = ["## Meaning", "## Impact", "## Diagnose", "## Mitigate", "## Escalate"]
OVERVIEW = "README.md"


def alarm_names(alarms_doc: dict) -> list[str]:
    return render.all_alarm_names(alarms_doc)


def notifying(alarms_doc: dict) -> list[dict]:
    """The alarms that notify someone: every one but the SLO window alarms (parts of a tier)."""
    return [*alarms_doc["alarms"], *alarms_doc["slo_composites"], alarms_doc["composite"]]


def runbook_of(alarms_doc: dict) -> dict[str, str]:
    """Alarm name -> runbook name, for every alarm of the stack."""
    entries = [*notifying(alarms_doc), *alarms_doc["slo_alarms"]]
    return {e["name"]: render.runbook_name(e) for e in entries}


def runbook_files(root) -> dict[str, object]:
    return {p.stem: p for p in (root / "runbooks").glob("*.md") if p.name != OVERVIEW}


def test_every_alarm_has_a_runbook_and_every_runbook_an_alarm(root, alarms_doc):
    needed = set(runbook_of(alarms_doc).values())
    runbooks = set(runbook_files(root))
    assert needed - runbooks == set(), f"alarms without their runbook: {sorted(needed - runbooks)}"
    assert runbooks - needed == set(), f"runbooks without an alarm: {sorted(runbooks - needed)}"
    assert set(runbook_of(alarms_doc)) == set(alarm_names(alarms_doc))


def test_alarm_names_are_unique_and_severities_known(alarms_doc):
    names = alarm_names(alarms_doc)
    assert len(names) == len(set(names))
    for entry in notifying(alarms_doc):
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
    # An SLO runbook covers its tiers: a table row per tier composite with its severity.
    for entry in alarms_doc["slo_composites"]:
        text = (root / "runbooks" / f"{entry['runbook']}.md").read_text(encoding="utf-8")
        assert f"| `{entry['name']}` | {entry['severity']} |" in text, f"{entry['runbook']}.md: no tier row for {entry['name']}"


def test_the_overview_lists_every_alarm_with_its_runbook(root, alarms_doc):
    overview = (root / "runbooks" / OVERVIEW).read_text(encoding="utf-8")
    for entry in notifying(alarms_doc):
        name, runbook = entry["name"], render.runbook_name(entry)
        assert f"[{name}]({runbook}.md)" in overview, f"runbooks/README.md does not link {name} to {runbook}.md"


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
    runbooks = runbook_of(alarms_doc)
    windows = {a["name"] for a in alarms_doc["slo_alarms"]}
    assert len(resources) == len(alarm_names(alarms_doc))
    for res in resources.values():
        props = res["Properties"]
        name = _sub(props["AlarmName"]).removesuffix("-${Env}")
        text = _sub(props["AlarmDescription"])
        assert re.match(r"^\[(page|ticket)\] ", text), f"{name}: description must start with its severity"
        assert f"${{RunbookBaseUrl}}/{runbooks[name]}.md" in text, f"{name}: no runbook link"
        assert "#dashboards/dashboard/relay-${Env}" in text, f"{name}: no dashboard link"
        assert len(text) <= 1024, f"{name}: description longer than CloudWatch allows"
        assert props["ActionsEnabled"] is True
        if name in windows:
            # A window alarm is half of a tier: its composite notifies, it must not.
            assert "AlarmActions" not in props and "OKActions" not in props, f"{name} notifies by itself"
        else:
            for key in ("AlarmActions", "OKActions"):
                assert "AlarmTopic" in str(props[key]), f"{name}: {key} does not notify the alarm topic"
        if res["Type"] == "AWS::CloudWatch::Alarm":
            tags = {t["Key"]: t["Value"] for t in props["Tags"]}
            assert tags["runbook"] == f"runbooks/{runbooks[name]}.md"


def test_only_the_paging_composite_pages_and_it_covers_every_page_alarm_and_slo_page_tier(templates, alarms_doc):
    resources = _alarm_resources(templates)
    paging = [r for r in resources.values() if "PageTopic" in str(r["Properties"])]
    assert len(paging) == 1, "only the paging composite may notify the page topic"
    (composite,) = paging
    assert _sub(composite["Properties"]["AlarmName"]) == render.alarm_name(alarms_doc["composite"]["name"])
    rule = _sub(composite["Properties"]["AlarmRule"])
    pages = {a["name"] for a in alarms_doc["alarms"] if a["severity"] == "page"}
    pages |= {c["name"] for c in alarms_doc["slo_composites"] if c["severity"] == "page"}
    named = set(re.findall(r'ALARM\("([A-Za-z0-9]+)-\$\{Env\}"\)', rule))
    assert named == pages, f"composite rule {rule!r} must name exactly the page alarms and tiers {sorted(pages)}"
    assert set(composite["DependsOn"]) == {render.logical_id("Alarm", n) for n in pages}


def test_each_slo_tier_needs_both_its_windows_and_is_silenced_by_the_faster_tier(templates, alarms_doc):
    resources = templates["observability"]["Resources"]
    tiers = {c["name"]: c for c in alarms_doc["slo_composites"]}
    for name, entry in tiers.items():
        res = resources[render.logical_id("Alarm", name)]
        assert res["Type"] == "AWS::CloudWatch::CompositeAlarm"
        props = res["Properties"]
        children = re.findall(r'ALARM\("([A-Za-z0-9]+)-\$\{Env\}"\)', _sub(props["AlarmRule"]))
        assert len(children) == 2 and " AND " in _sub(props["AlarmRule"]), f"{name}: long AND short window"
        for child in children:
            window = resources[render.logical_id("Alarm", child)]
            assert window["Type"] == "AWS::CloudWatch::Alarm" and child.startswith(name), (name, child)
        if "suppressor" in entry:
            suppressor = _sub(props["ActionsSuppressor"]).removesuffix("-${Env}")
            assert suppressor in tiers and tiers[suppressor]["runbook"] == entry["runbook"], name
            assert props["ActionsSuppressorWaitPeriod"] > 0 and props["ActionsSuppressorExtensionPeriod"] > 0
        else:
            assert "ActionsSuppressor" not in props, f"{name}: the fastest tier is silenced by nothing"


def test_missing_data_handling_is_explicit_and_a_silent_canary_alarms(alarms_doc, canary_catalog):
    for entry in [*alarms_doc["alarms"], *alarms_doc["slo_alarms"]]:
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
        f"arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{render.alarm_name(e['name'])}"
        for e in notifying(alarms_doc)
    }
    for name, body in dashboards.items():
        assert set(dashboard_alarm_arns(body)) == expected, f"{name}: alarm widget differs from alarms/alarms.yaml"


def test_alarm_periods_fit_the_canary_schedule(alarms_doc, environments):
    """Canary alarms read 60 s periods, so the canary must run every minute in every environment."""
    for env in environments.values():
        assert env["stacks"]["canary"]["ScheduleExpression"] == "rate(1 minute)"
    for entry in [*alarms_doc["alarms"], *alarms_doc["slo_alarms"]]:
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
