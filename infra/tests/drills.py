"""Incident drills: the real relay (in Lambda mode under lambda_sandbox's Runtime API, or as a server)
and the real canary, driven into a fault on this machine, minute by simulated minute; their real EMF
documents, log lines and PutMetricData (read back from the local CloudWatch-API server), plus the
metrics Lambda, API Gateway and DynamoDB would publish for what happened, become the samples that the
offline CloudWatch evaluator (alarms/cloudwatch.py) runs every alarm of alarms/alarms.yaml over. Then
the runbook's Logs Insights queries run over the captured lines (logs_insights.py).

A drill passes when its alarms reach ALARM within what their runbooks promise (`**Fires:** within N
minutes`), no other alarm does, and the runbook's queries find the failing requests.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from conftest import ROOT
from lambda_sandbox import LogLine, Sample
from logs_insights import Event, run as run_query
from refs import runbook_log_queries

sys.path.insert(0, str(ROOT / "alarms"))
import alarm_tests  # noqa: E402
import cloudwatch  # noqa: E402
import render  # noqa: E402



@dataclass(frozen=True)
class DrillEnv:
    """The environment a drill plays in, named after it, so drills can run side by side: the relay's
    `env`, the canary's Stage, the function, table and API names the alarms read."""

    env: str

    @property
    def api_id(self) -> str:
        return f"api-{self.env}"

    @property
    def function(self) -> str:
        return f"relay-{self.env}"

    @property
    def canary_function(self) -> str:
        return f"relay-canary-{self.env}"

    @property
    def table(self) -> str:
        return f"relay-{self.env}"

    @property
    def variables(self) -> dict[str, str]:
        return {**alarm_tests.VARIABLES, "Env": self.env, "ApiId": self.api_id}


_FIRES = re.compile(r"^\*\*Fires:\*\* within (\d+) minutes? ", re.MULTILINE)
# Fields that name one request in each log group's lines.
REQUEST_ID_FIELDS = ("request_id", "request_id_sent", "@requestId", "requestId", "aws_request_id")


def warm_up_minutes() -> int:
    """How long a drill runs healthy before its fault: the longest evaluation range (EvaluationPeriods + 2
    periods) of an alarm that treats missing data as breaching. A drill's world begins empty, and such an
    alarm reads "no data yet" as a failure until its range holds real data; deployed alarms have history.
    Alarms are judged from the end of the warm-up on."""
    longest = 0
    for entry in render.load_alarms()["alarms"]:
        props = entry["properties"]
        if props.get("TreatMissingData") == "breaching":
            longest = max(longest, (props["EvaluationPeriods"] + 2) * cloudwatch.alarm_period(props) // 60)
    return longest


def promised_minutes(alarm: str) -> int:
    """What the alarm's runbook promises: `**Fires:** within N minutes ...`."""
    text = (ROOT / "runbooks" / f"{alarm}.md").read_text(encoding="utf-8")
    found = _FIRES.search(text)
    if not found:
        raise ValueError(f"runbooks/{alarm}.md promises no time: add `**Fires:** within N minutes of ...`")
    return int(found.group(1))


def severities() -> dict[str, str]:
    doc = render.load_alarms()
    return {entry["name"]: entry["severity"] for entry in [*doc["alarms"], *doc["slo_composites"]]}


def slo_tiers_of(tiers: list[str]) -> set[str]:
    """Every tier of the SLOs these tiers belong to."""
    composites = render.load_alarms()["slo_composites"]
    unknown = set(tiers) - {c["name"] for c in composites}
    if unknown:
        raise ValueError(f"not SLO tiers: {sorted(unknown)}")
    runbooks = {c["runbook"] for c in composites if c["name"] in tiers}
    return {c["name"] for c in composites if c["runbook"] in runbooks}


def slo_window_alarms() -> set[str]:
    """The SLO alarms that are parts of a tier's composite (judged through it, never alone)."""
    return {entry["name"] for entry in render.load_alarms()["slo_alarms"]}


@dataclass
class QueryResult:
    where: str
    log_group: str
    rows: list[dict]
    ids: set[str]


@dataclass
class Outcome:
    """What a drill saw: each alarm's state after every minute, and the runbook queries' results."""

    name: str
    fault: str
    fault_start: int  # simulated seconds
    end: int
    states: dict[str, list[tuple[int, str]]]
    expected: tuple[str, ...]
    allowed: tuple[str, ...]
    failing_ids: set[str]
    queries: list[QueryResult] = field(default_factory=list)
    groups: dict[str, list[LogLine]] = field(default_factory=dict)  # captured lines per log group kind
    may_be_empty: dict[str, str] = field(default_factory=dict)  # runbook query -> why it finds nothing here
    follow_id: str | None = None  # the id a user of the first failing request would report

    def first_alarm(self, alarm: str) -> int | None:
        for now, state in self.states[alarm]:
            if now > self.fault_start and state == cloudwatch.ALARM:
                return now
        return None

    def minutes_to_alarm(self, alarm: str) -> float | None:
        at = self.first_alarm(alarm)
        return None if at is None else (at - self.fault_start) / 60

    def fired(self) -> list[str]:
        """The alarms in ALARM at some evaluation from the fault's start on."""
        return [name for name, states in self.states.items()
                if any(s == cloudwatch.ALARM for now, s in states if now >= self.fault_start)]


def evaluate(env: DrillEnv, samples: list[Sample], end: int) -> dict[str, list[tuple[int, str]]]:
    """Every alarm of `env` (the SLO alarms and the composites too) evaluated once a minute from 0 to `end`."""
    store = cloudwatch.MetricStore()
    for sample in samples:
        store.put(cloudwatch.MetricId.of(sample.namespace, sample.name, sample.dimensions), sample.time,
                  sample.value)
    alarms = alarm_tests.load_alarms(variables=env.variables)
    return alarms.history(store, range(0, end + 1, cloudwatch.EVALUATION_STEP))


def events(lines: list[LogLine]) -> list[Event]:
    return [Event.of(line.text, line.time) for line in lines]


def row_ids(rows: list[dict]) -> set[str]:
    """Request ids a query's rows name: in an id field, or inside a returned @message."""
    ids = set()
    for row in rows:
        for name in REQUEST_ID_FIELDS:
            if row.get(name):
                ids.add(str(row[name]))
    return ids


def run_runbook(alarm: str, groups: dict[str, list[LogLine]], failing_ids: set[str]) -> list[QueryResult]:
    """The runbook's queries over the lines of the log groups they name (`relay`, `canary`, `access`)."""
    from log_fields import log_group_kind

    out = []
    for query in runbook_log_queries(ROOT / "runbooks" / f"{alarm}.md"):
        kind = log_group_kind(query.log_group)
        rows = run_query(query.query, events(groups.get(kind, [])))
        ids = row_ids(rows)
        # A row may show the line itself (@message) rather than an id field: find the ids in it.
        for row in rows:
            message = str(row.get("@message", ""))
            ids |= {i for i in failing_ids if i in message}
        out.append(QueryResult(query.where, query.log_group, rows, ids))
    return out


def report_table(outcomes: list[Outcome]) -> str:
    """The drill report: fault, alarm, minutes to ALARM (and the promise), what else fired, and the rows
    (and failing request ids) each runbook query found."""
    head = "| drill | fault | alarm | minutes to ALARM | promised | also fired | runbook query: rows (failing ids found) |\n"
    head += "|---|---|---|---|---|---|---|\n"
    rows = []
    for outcome in outcomes:
        for alarm in outcome.expected:
            minutes = outcome.minutes_to_alarm(alarm)
            others = sorted(set(outcome.fired()) - {alarm} - slo_window_alarms())
            queries = "; ".join(
                f"{q.where.split(' query ')[-1]}: {len(q.rows)} ({len(q.ids & outcome.failing_ids)})"
                for q in outcome.queries if q.where.startswith(alarm + ".md")
            )
            rows.append(
                f"| {outcome.name} | {outcome.fault} | {alarm} | "
                f"{'never' if minutes is None else f'{minutes:g}'} | {promised_minutes(alarm)} | "
                f"{', '.join(others) or '-'} | {queries or '-'} |"
            )
    return head + "\n".join(rows) + "\n"


def write_report(outcomes: list[Outcome], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "drills.md"
    path.write_text("# Incident drills\n\n" + report_table(outcomes), encoding="utf-8")
    return path
