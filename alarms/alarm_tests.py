#!/usr/bin/env python3
"""Alarm behaviour tests: every alarm of alarms/alarms.yaml, and the paging composite, run through
CloudWatch's semantics (alarms/cloudwatch.py) over input series written in promtool's notation.

    python3 alarms/alarm_tests.py [TEST_FILE...]      (default: alarms/tests/*.yaml)

A test file names one alarm and holds cases. A case gives input series and what the alarms' states must
be at given times:

    alarm: RelayLambdaErrors
    cases:
      - name: crashes in 3 of 5 minutes
        interval: 1m                      # one sample per interval per series (default 1m)
        history: 10m                      # the series start this long before the first evaluation (0)
        series:
          - metric: AWS/Lambda Errors FunctionName=relay-${Env}
            values: "0x4 2 0 2 0 2 0x5"   # promtool: a+bxn, axn, _ (missing), _xn; quoted
            count: 1                      # each sample stands for this many equal values (default 1)
        expect:
          - {at: 10m, state: OK}           # after the evaluation at 10 minutes
          - {at: 11m, state: ALARM}
          - {during: [0m, 30m], alarm: RelayPage, state: OK}   # at every evaluation in the range

A file may give `background` series, added to every case that does not set `background: false` (a
healthy canary, say, without which the canary-silent page fires in every case). A file may list
`equivalent_mutations` (label: reason) for mutations no input can tell apart from the
alarm, e.g. `threshold /2` of `Success < 1` when Success is only ever 0 or 1; they are reported, not run.

`${Env}` is `test`, `${ApiId}` is `testapi`. Every alarm runs on the same series, so a case can also
check that nothing else fires. The suite fails unless:
- every expectation holds;
- every alarm has a firing case (it reaches ALARM) and a quiet case (it never does);
- every mutation of an alarm (threshold x2 and /2, or +1 and -1 when it is 0; EvaluationPeriods - 1,
  when above 1) breaks at least one of its cases, so a case that cannot tell is caught;
- the evaluator reproduces every row of AWS's two tables of alarm states with missing data.
Prints a table per alarm; exits 1 on any failure.
"""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "infra"))

import cloudwatch  # noqa: E402
import render  # noqa: E402

VARIABLES = {"Env": "test", "ApiId": "testapi", "AWS::Region": "us-east-1"}
# The alarms these files test; the SLO alarms have their own tests (slos/tests/, scripts/slo-tests.sh),
# but every case here runs them too, so a case can say what they do.
HAND_WRITTEN = {entry["name"] for entry in render.load_alarms()["alarms"]}


# ---- promtool's series notation ------------------------------------------------------------------------


def expand_series(text: str) -> list[float | None]:
    """`1 2 _ 3+2x2 _x2 4x1` -> [1, 2, None, 3, 5, 7, None, None, 4, 4]: `a+bxn` / `a-bxn` is a and n
    more steps of b, `axn` is a n+1 times, `_` is a missing sample and `_xn` n of them."""
    if not isinstance(text, str):
        # YAML reads an unquoted `0x39` as the hex number 57: series must be quoted strings.
        raise ValueError(f"series values must be a quoted string, got {text!r}")
    out: list[float | None] = []
    for item in text.split():
        if item == "_":
            out.append(None)
            continue
        missing = re.fullmatch(r"_x(\d+)", item)
        if missing:
            out.extend([None] * int(missing.group(1)))
            continue
        step = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:([+-]\d+(?:\.\d+)?)x(\d+)|x(\d+))?", item)
        if not step:
            raise ValueError(f"not promtool series notation: {item!r}")
        start = float(step.group(1))
        if step.group(2):
            delta, count = float(step.group(2)), int(step.group(3))
            out.extend(start + delta * k for k in range(count + 1))
        elif step.group(4):
            out.extend([start] * (int(step.group(4)) + 1))
        else:
            out.append(start)
    return out


def duration(text) -> int:
    """`90s`, `5m`, `2h`, `1d` (or a bare number of seconds) -> seconds."""
    match = re.fullmatch(r"(\d+)([smhd]?)", str(text).strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def metric_of(text: str) -> cloudwatch.MetricId:
    """`Namespace MetricName Dim=Value ...` (variables substituted)."""
    parts = render.substitute(text, VARIABLES).split()
    if len(parts) < 2:
        raise ValueError(f"a series is `Namespace MetricName [Dim=Value ...]`: {text!r}")
    dims = dict(part.split("=", 1) for part in parts[2:])
    return cloudwatch.MetricId.of(parts[0], parts[1], dims)


# ---- running cases ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)
    reached_alarm: bool = False


@dataclass
class AlarmSet:
    """Every alarm of the stack as CloudWatch runs them: the metric alarms (alarms.yaml's and the SLO
    window alarms) by name, and the composites in the order they must be evaluated (the SLO tiers, then
    the paging composite, which names them)."""

    props: dict[str, dict]
    composites: list[tuple[str, str]]
    env: str

    @property
    def paging(self) -> str:
        return self.composites[-1][0]

    def names(self) -> list[str]:
        return [*self.props, *(name for name, _ in self.composites)]

    def replacing(self, name: str, props: dict) -> "AlarmSet":
        return AlarmSet({**self.props, name: props}, self.composites, self.env)

    def history(self, store: cloudwatch.MetricStore, times) -> dict[str, list[tuple[int, str]]]:
        """Each alarm's state after each evaluation at `times` (seconds), by alarm name."""
        running = {name: cloudwatch.Alarm(name, props) for name, props in self.props.items()}
        out: dict[str, list[tuple[int, str]]] = {name: [] for name in self.names()}
        for now in times:
            states = {}
            for name, alarm in running.items():
                states[render.alarm_name(name, self.env)] = alarm.evaluate(store, now)
                out[name].append((now, alarm.state))
            for name, rule in self.composites:
                state = cloudwatch.composite_state(rule, states)
                states[render.alarm_name(name, self.env)] = state
                out[name].append((now, state))
        return out


def load_alarms(alarms_file: Path | None = None, variables: dict | None = None) -> AlarmSet:
    """Every alarm of the stack, variables substituted."""
    variables = variables or VARIABLES
    data = render.load_alarms(alarms_file) if alarms_file else render.load_alarms()
    props = {
        entry["name"]: render.substitute(copy.deepcopy(entry["properties"]), variables)
        for entry in [*data["alarms"], *data["slo_alarms"]]
    }
    composites = [(c["name"], render.substitute(c["rule"], variables)) for c in data["slo_composites"]]
    composites.append((data["composite"]["name"], render.substitute(render.composite_rule(data), variables)))
    return AlarmSet(props, composites, variables["Env"])


def store_for(case: dict) -> cloudwatch.MetricStore:
    """The case's samples: sample k of a series at k intervals after the series start, which is
    `history` before the first evaluation (at time 0)."""
    interval = duration(case.get("interval", "1m"))
    start = -duration(case.get("history", 0))
    store = cloudwatch.MetricStore()
    for series in case["series"]:
        metric = metric_of(series["metric"])
        count = int(series.get("count", 1))
        for index, value in enumerate(expand_series(series["values"])):
            if value is not None:
                # Mid-interval, so a sample always falls in the period its index names.
                store.put(metric, start + index * interval + interval / 2, value, count)
    return store


def run_case(case: dict, alarms: AlarmSet, under_test: str) -> Outcome:
    store = store_for(case)
    expectations = case["expect"]
    end = max(
        duration(e["at"]) if "at" in e else duration(e["during"][1]) for e in expectations
    )
    history = alarms.history(store, range(0, end + 1, cloudwatch.EVALUATION_STEP))
    outcome = Outcome(reached_alarm=any(s == cloudwatch.ALARM for _, s in history[under_test]))
    for expectation in expectations:
        name = expectation.get("alarm", under_test)
        if name not in history:
            outcome.failures.append(f"{case['name']}: no alarm named {name}")
            continue
        if "at" in expectation:
            window = (duration(expectation["at"]), duration(expectation["at"]))
        else:
            window = (duration(expectation["during"][0]), duration(expectation["during"][1]))
        for now, state in history[name]:
            if window[0] <= now <= window[1] and state != expectation["state"]:
                outcome.failures.append(
                    f"{case['name']}: {name} is {state} at {now // 60}m, expected {expectation['state']}"
                )
                break
    return outcome


def mutations(props: dict) -> list[tuple[str, dict]]:
    out = []
    threshold = float(props["Threshold"])
    for label, value in (
        ("threshold x2", threshold * 2 if threshold else 1.0),
        ("threshold /2", threshold / 2 if threshold else -1.0),
    ):
        mutated = copy.deepcopy(props)
        mutated["Threshold"] = value
        out.append((label, mutated))
    periods = int(props["EvaluationPeriods"])
    if periods > 1:
        mutated = copy.deepcopy(props)
        mutated["EvaluationPeriods"] = periods - 1
        mutated["DatapointsToAlarm"] = min(int(props.get("DatapointsToAlarm", periods)), periods - 1)
        out.append(("EvaluationPeriods - 1", mutated))
    return out


# ---- AWS's documented missing-data tables -----------------------------------------------------------------

# From "How alarm state is evaluated when data is missing": data points oldest first (0 not breaching,
# X breaching, - missing), then the state for missing, ignore, breaching, notBreaching ("retain" is the
# current state). First table: 3 of 3; second: 2 of 3.
AWS_TABLES = [
    (3, 3, "0 - X - X", ("OK", "OK", "OK", "OK")),
    (3, 3, "0 - - - -", ("OK", "OK", "OK", "OK")),
    (3, 3, "- - - - -", ("INSUFFICIENT_DATA", "retain", "ALARM", "OK")),
    (3, 3, "0 X X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (3, 3, "- - - - X", ("INSUFFICIENT_DATA", "retain", "ALARM", "OK")),
    (3, 3, "X - - - -", ("ALARM", "retain", "ALARM", "OK")),
    (2, 3, "0 - X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, 3, "0 0 X 0 X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, 3, "0 - X - -", ("OK", "OK", "ALARM", "OK")),
    (2, 3, "- - - - 0", ("OK", "OK", "ALARM", "OK")),
    (2, 3, "- - - - X", ("INSUFFICIENT_DATA", "retain", "ALARM", "OK")),
]


def check_aws_tables() -> list[str]:
    failures = []
    for m, n, points, expected in AWS_TABLES:
        datapoints = [{"0": 0.0, "X": 10.0, "-": None}[p] for p in points.split()]
        for mode, want in zip(cloudwatch.MISSING_MODES, expected):
            for current in (cloudwatch.OK, cloudwatch.ALARM):
                props = {"EvaluationPeriods": n, "DatapointsToAlarm": m, "Threshold": 5,
                         "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": mode}
                got = cloudwatch.alarm_state(datapoints, props, current)
                expect = current if want == "retain" else want
                if got != expect:
                    failures.append(f"AWS table {m} of {n}, {points}, {mode}, from {current}: {got}, not {expect}")
    return failures


def check_notation() -> list[str]:
    cases = {
        "1 2 _ 3+2x2 _x2 4x1": [1, 2, None, 3, 5, 7, None, None, 4, 4],
        "-2+4x3": [-2, 2, 6, 10],
        "0+10x3": [0, 10, 20, 30],
        "5-1x2": [5, 4, 3],
        "1x4": [1, 1, 1, 1, 1],
    }
    return [f"notation {text!r} -> {expand_series(text)}" for text, want in cases.items() if expand_series(text) != want]


# ---- the suite ----------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or sorted((HERE / "tests").glob("*.yaml"))
    alarms = load_alarms()
    composite_name = alarms.paging
    tested = [name for name in alarms.props if name in HAND_WRITTEN] + [composite_name]
    failures = check_aws_tables() + check_notation()
    covered: dict[str, list[tuple[str, Outcome, list[dict]]]] = {}
    exempt: dict[str, dict[str, str]] = {}
    for path in files:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = spec["alarm"]
        if name not in tested:
            failures.append(f"{path.name}: {name} is not an alarm of alarms/alarms.yaml")
            continue
        exempt.setdefault(name, {}).update(spec.get("equivalent_mutations") or {})
        for case in spec["cases"]:
            if case.get("background", True) and spec.get("background"):
                case = {**case, "series": [*spec["background"], *case["series"]]}
            outcome = run_case(case, alarms, name)
            covered.setdefault(name, []).append((case["name"], outcome, case))
            failures += [f"{path.name}: {f}" for f in outcome.failures]
    rows = []
    for name in tested:
        cases = covered.get(name, [])
        firing = sum(o.reached_alarm for _, o, _ in cases)
        quiet = len(cases) - firing
        if not firing or not quiet:
            failures.append(f"{name}: needs a firing case and a quiet case (has {firing} and {quiet})")
        killed, total = 0, 0
        if name in alarms.props:
            for label, mutated in mutations(alarms.props[name]):
                if label in exempt.get(name, {}):
                    continue
                total += 1
                variant = alarms.replacing(name, mutated)
                if any(run_case(c, variant, name).failures for _, _, c in cases):
                    killed += 1
                else:
                    failures.append(f"{name}: no case notices its {label}")
        passed = not any(f.startswith(f"{name}:") or f": {name} " in f for f in failures)
        skipped = len(exempt.get(name, {}))
        killed_text = (f"{killed}/{total}" if total else "-") + (f" (+{skipped} equivalent)" if skipped else "")
        rows.append((name, len(cases), firing, quiet, killed_text, "ok" if passed else "FAIL"))
    width = max(len(r[0]) for r in rows)
    print(f"{'alarm':<{width}}  cases  firing  quiet  {'mutations killed':<22}  result")
    for name, count, firing, quiet, killed, result in rows:
        print(f"{name:<{width}}  {count:>5}  {firing:>6}  {quiet:>5}  {killed:<22}  {result}")
    print(f"AWS missing-data tables: {len(AWS_TABLES)} rows x 4 modes x 2 starting states checked")
    return finish(failures, "all alarm tests passed")


def finish(failures: list[str], passed: str) -> int:
    """Print the failures (exit status 1) or `passed` (0)."""
    if failures:
        print("\nFAILED:")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print(passed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
