#!/usr/bin/env python3
"""SLO behaviour tests: the burn-rate alarms that slos/relay.yaml compiles to, run on the same fixtures
through CloudWatch's semantics (alarms/cloudwatch.py) and through Prometheus itself (`promtool test
rules` over alarms/prometheus/slo-rules.yaml), and required to agree.

    python3 slos/slo_tests.py [--promtool PATH] [--out DIR] [FIXTURE...]   (default: slos/tests/*.yaml)

A fixture names an SLO, says how a minute's events become each backend's data, and holds cases:

    slo: api-availability
    cloudwatch:                      # per minute: one sample of `value` (good, bad or total events),
      - {metric: "AWS/ApiGateway Count ApiId=${ApiId} Stage=$default", value: total}
      - {metric: "AWS/ApiGateway Latency ...", samples: {good: 120, bad: 900}}   # or one value per event
    prometheus:                      # counters: the running sum of good, bad or total events
      - {series: 'relay_http_requests_total{route="/messages",status_class="5xx"}', counts: bad}
    cases:
      - name: 60 s of total failure pages within two evaluations
        history: 2h                  # healthy minutes (no bad events) before 0m
        events: 100                  # events per minute (default 100)
        bad: "0x59 100 0x30"         # bad events per minute from 0m, promtool notation
        repeat: 1                    # how often the `bad` pattern repeats (default 1)
        expect:
          - {during: [0m, 59m], tier: fast, state: quiet}
          - {at: 62m, tier: fast, state: firing}       # `firing` or `quiet`, after that evaluation
          - {first_fires: 216m, tier: slow, within: 10m}

A tier fires when its composite alarm is in ALARM (CloudWatch) or its alert is firing (Prometheus).
Every case runs on CloudWatch; on Prometheus too unless the SLO has no Prometheus SLI. Both backends must
meet every expectation, and Prometheus must show CloudWatch's state of every tier at every checkpoint:
each minute a tier changes state on CloudWatch and the minute before, and every `step` (default 10m)
between. Writes the promtool test files it runs to --out (default test-output/slos). Exits 1 on any
failure, printing a table per fixture.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "alarms"))
sys.path.insert(0, str(ROOT / "infra"))

import alarm_tests  # noqa: E402
import cloudwatch  # noqa: E402
import render  # noqa: E402
import slo  # noqa: E402

FIRING, QUIET = "firing", "quiet"
MINUTE = 60


@dataclass
class Traffic:
    """Events per minute from -history to the end, and the bad ones among them."""

    history: int  # minutes
    total: list[int]
    bad: list[int]

    def minute(self, index: int) -> int:
        """The minute (relative to 0m) of list position `index`."""
        return index - self.history

    def good(self, index: int) -> int:
        return self.total[index] - self.bad[index]


def traffic_of(case: dict, end_minute: int) -> Traffic:
    history = alarm_tests.duration(case.get("history", 0)) // MINUTE
    events = int(case.get("events", 100))
    pattern = [int(v or 0) for v in alarm_tests.expand_series(case["bad"])] * int(case.get("repeat", 1))
    minutes = history + end_minute
    bad = [0] * history + pattern
    bad += [0] * (minutes - len(bad))
    bad = bad[:minutes]
    if any(b > events for b in bad):
        raise ValueError(f"{case['name']}: more bad events than events in a minute")
    return Traffic(history, [events] * minutes, bad)


def _count(traffic: Traffic, index: int, kind: str) -> int:
    return {"good": traffic.good(index), "bad": traffic.bad[index], "total": traffic.total[index]}[kind]


# ---- CloudWatch --------------------------------------------------------------------------------------


def cloudwatch_store(feeds: list[dict], traffic: Traffic) -> cloudwatch.MetricStore:
    store = cloudwatch.MetricStore()
    for feed in feeds:
        metric = alarm_tests.metric_of(feed["metric"])
        for index in range(len(traffic.total)):
            if traffic.total[index] == 0:
                continue  # no traffic, no datapoint (as AWS publishes)
            at = traffic.minute(index) * MINUTE + MINUTE / 2
            if "value" in feed:
                store.put(metric, at, float(_count(traffic, index, feed["value"])))
            else:
                for kind, value in feed["samples"].items():
                    count = _count(traffic, index, kind)
                    if count:
                        store.put(metric, at, float(value), count)
    return store


def slo_alarm_set(spec: slo.Spec, spec_slo: slo.Slo) -> alarm_tests.AlarmSet:
    """The SLO's window alarms and tier composites as the stack gets them, nothing else."""
    windows, composites = slo.cloudwatch_alarms(spec)
    variables = alarm_tests.VARIABLES
    return alarm_tests.AlarmSet(
        {w["name"]: render.substitute(copy.deepcopy(w["properties"]), variables)
         for w in windows if w["runbook"] == spec_slo.runbook},
        [(c["name"], render.substitute(c["rule"], variables)) for c in composites if c["runbook"] == spec_slo.runbook],
        variables["Env"],
    )


def cloudwatch_timeline(spec: slo.Spec, spec_slo: slo.Slo, feeds, traffic: Traffic, end: int) -> dict[str, list[str]]:
    """Each tier's state (firing/quiet) after the evaluation at each minute 0..end."""
    history = slo_alarm_set(spec, spec_slo).history(cloudwatch_store(feeds, traffic), range(0, end * MINUTE + 1, MINUTE))
    return {
        tier.name: [FIRING if state == cloudwatch.ALARM else QUIET for _, state in history[spec_slo.alarm(tier)]]
        for tier in spec.tiers
    }


# ---- Prometheus --------------------------------------------------------------------------------------


def promtool_test(spec: slo.Spec, spec_slo: slo.Slo, feeds, traffic: Traffic, checks: dict[int, set[str]]) -> dict:
    """A promtool unit-test file: the counters from the traffic, and at each checked minute the alerts
    that must be firing (with their labels and annotations)."""
    series = []
    for feed in feeds:
        running, values = 0, []
        for index in range(len(traffic.total)):
            values.append(str(running))
            running += _count(traffic, index, feed["counts"])
        values.append(str(running))
        series.append({"series": feed["series"], "values": " ".join(values)})
    rules = slo.prometheus_rules(spec)
    alerts = {
        rule["alert"]: rule
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule and rule["labels"]["slo"] == spec_slo.name
    }
    tests = []
    for minute, firing in sorted(checks.items()):
        # Sample k holds the events of the minutes before it, so the check after the evaluation at minute
        # m reads sample history + m: the same minutes CloudWatch's window [m - W, m) holds.
        at = f"{traffic.history + minute}m"
        for tier in spec.tiers:
            name = spec_slo.alarm(tier)
            rule = alerts[name]
            expected = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}] if tier.name in firing else []
            tests.append({"eval_time": at, "alertname": name, "exp_alerts": expected})
    return {
        "rule_files": [str(slo.PROMETHEUS_FILE)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
    }


def run_promtool(promtool: str, files: list[Path]) -> tuple[bool, str]:
    run = subprocess.run([promtool, "test", "rules", *map(str, files)], capture_output=True, text=True, timeout=900)
    return run.returncode == 0, run.stdout + run.stderr


def promtool_notices_a_wrong_rule(promtool: str, test_file: Path, out: Path) -> list[str]:
    """The Prometheus half can fail: the same test against rules whose burn rates are doubled must."""
    doubled = with_burn_rates(slo.load(), Decimal(2))
    rules = out / "mutated-slo-rules.yaml"
    rules.write_text(slo.prometheus_text(doubled), encoding="utf-8")
    test = yaml.safe_load(test_file.read_text(encoding="utf-8"))
    test["rule_files"] = [str(rules)]
    mutated = out / "mutated.test.yaml"
    mutated.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20), encoding="utf-8")
    ok, _ = run_promtool(promtool, [mutated])
    return ["promtool passed a test against rules with doubled burn rates: the Prometheus half checks nothing"] if ok else []


# ---- cases ----------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    name: str
    failures: list[str] = field(default_factory=list)
    first: dict[str, int | None] = field(default_factory=dict)  # tier -> first firing minute on CloudWatch
    promtool_file: Path | None = None


def _end_minute(case: dict) -> int:
    ends = []
    for e in case["expect"]:
        if "at" in e:
            ends.append(alarm_tests.duration(e["at"]))
        elif "during" in e:
            ends.append(alarm_tests.duration(e["during"][1]))
        else:
            ends.append(alarm_tests.duration(e["first_fires"]) + alarm_tests.duration(e["within"]))
    return max(ends) // MINUTE + 1


def check_expectations(case: dict, timeline: dict[str, list[str]], backend: str) -> list[str]:
    failures = []
    for e in case["expect"]:
        tier = e["tier"]
        if tier not in timeline:
            failures.append(f"{backend}: no tier {tier!r}")
            continue
        states = timeline[tier]
        if "first_fires" in e:
            want, within = alarm_tests.duration(e["first_fires"]) // MINUTE, alarm_tests.duration(e["within"]) // MINUTE
            first = next((m for m, s in enumerate(states) if s == FIRING), None)
            if first is None or abs(first - want) > within:
                failures.append(f"{backend}: {tier} first fires at {first}m, expected {want}m +- {within}m")
            continue
        if "at" in e:
            lo = hi = alarm_tests.duration(e["at"]) // MINUTE
        else:
            lo, hi = (alarm_tests.duration(x) // MINUTE for x in e["during"])
        for minute in range(lo, hi + 1):
            if states[minute] != e["state"]:
                failures.append(f"{backend}: {tier} is {states[minute]} at {minute}m, expected {e['state']}")
                break
    return failures


def checkpoints(timeline: dict[str, list[str]], step: int) -> dict[int, set[str]]:
    """Minutes at which Prometheus must agree with CloudWatch, and the tiers firing then."""
    length = len(next(iter(timeline.values())))
    minutes = set(range(0, length, step)) | {length - 1}
    for states in timeline.values():
        for m in range(1, length):
            if states[m] != states[m - 1]:
                minutes |= {m - 1, m}
    return {m: {tier for tier, states in timeline.items() if states[m] == FIRING} for m in sorted(minutes)}


def run_fixture(path: Path, spec: slo.Spec, out: Path) -> list[CaseResult]:
    fixture = yaml.safe_load(path.read_text(encoding="utf-8"))
    by_name = {s.name: s for s in spec.slos}
    if fixture["slo"] not in by_name:
        raise ValueError(f"{path.name}: {fixture['slo']!r} is not an SLO of slos/relay.yaml")
    spec_slo = by_name[fixture["slo"]]
    if (spec_slo.prometheus is None) != ("prometheus" not in fixture):
        raise ValueError(f"{path.name}: give Prometheus feeds exactly when the SLO has a Prometheus SLI")
    results = []
    for number, case in enumerate(fixture["cases"], start=1):
        end = _end_minute(case)
        traffic = traffic_of(case, end)
        timeline = cloudwatch_timeline(spec, spec_slo, fixture["cloudwatch"], traffic, end)
        result = CaseResult(case["name"])
        result.first = {t: next((m for m, s in enumerate(states) if s == FIRING), None) for t, states in timeline.items()}
        result.failures += check_expectations(case, timeline, "CloudWatch")
        if spec_slo.prometheus is not None:
            step = alarm_tests.duration(case.get("step", "10m")) // MINUTE
            checks = checkpoints(timeline, step)
            # Prometheus must also meet the expectations themselves, not only agree at checkpoints.
            for e in case["expect"]:
                if "at" in e:
                    m = alarm_tests.duration(e["at"]) // MINUTE
                    checks.setdefault(m, {t for t, s in timeline.items() if s[m] == FIRING})
            test = promtool_test(spec, spec_slo, fixture["prometheus"], traffic, checks)
            result.promtool_file = out / f"{path.stem}-{number}.test.yaml"
            result.promtool_file.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20), encoding="utf-8")
        results.append(result)
    return results


def with_burn_rates(spec: slo.Spec, factor: Decimal) -> slo.Spec:
    tiers = [slo.Tier(t.name, t.severity, t.burn_rate * factor, t.long, t.short, t.spends) for t in spec.tiers]
    return slo.Spec(tiers, spec.slos)


def cloudwatch_notices_wrong_burn_rates(files: list[Path], spec: slo.Spec) -> list[str]:
    """Each fixture must tell the spec's burn rates from doubled and from halved ones on CloudWatch: a
    fixture whose cases all pass either way would check nothing."""
    failures = []
    for path in files:
        fixture = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec_slo = next(s for s in spec.slos if s.name == fixture["slo"])
        for factor in (Decimal(2), Decimal("0.5")):
            mutated = with_burn_rates(spec, factor)
            noticed = False
            for case in fixture["cases"]:
                end = _end_minute(case)
                timeline = cloudwatch_timeline(mutated, spec_slo, fixture["cloudwatch"], traffic_of(case, end), end)
                if check_expectations(case, timeline, "CloudWatch"):
                    noticed = True
                    break
            if not noticed:
                failures.append(f"{path.name}: no case notices burn rates x{factor}")
    return failures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", default=shutil.which("promtool"))
    parser.add_argument("--out", type=Path, default=ROOT / "test-output" / "slos")
    parser.add_argument("fixtures", nargs="*", type=Path)
    args = parser.parse_args(argv)
    if not args.promtool:
        print("slo-tests: promtool is missing (Debian: apt-get install prometheus); the Prometheus half cannot run")
        return 1
    spec = slo.load()
    failures = []
    stale = subprocess.run([sys.executable, str(HERE / "slo.py"), "--check"], capture_output=True, text=True)
    if stale.returncode != 0:
        failures.append(stale.stdout.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    files = args.fixtures or sorted((HERE / "tests").glob("*.yaml"))
    all_results: list[tuple[Path, CaseResult]] = []
    for path in files:
        for result in run_fixture(path, spec, args.out):
            all_results.append((path, result))
    promtool_files = [r.promtool_file for _, r in all_results if r.promtool_file]
    def prometheus(result: CaseResult) -> None:
        ok, output = run_promtool(args.promtool, [result.promtool_file])
        if not ok:
            result.failures.append("Prometheus disagrees with CloudWatch or the expectations:\n" + output.strip())

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(prometheus, [r for _, r in all_results if r.promtool_file]))
    if promtool_files:
        failures += promtool_notices_a_wrong_rule(args.promtool, promtool_files[0], args.out)
    failures += cloudwatch_notices_wrong_burn_rates(files, spec)
    tiers = [t.name for t in spec.tiers]
    for path in files:
        print(f"\n{path.name}")
        print(f"  {'case':<70} " + " ".join(f"{t:>8}" for t in tiers) + "  backends  result")
        for p, result in all_results:
            if p != path:
                continue
            firsts = " ".join(f"{'-' if result.first[t] is None else str(result.first[t]) + 'm':>8}" for t in tiers)
            backends = "CW+Prom" if result.promtool_file else "CW"
            print(f"  {result.name[:70]:<70} {firsts}  {backends:<8}  {'ok' if not result.failures else 'FAIL'}")
            failures += [f"{path.name}: {result.name}: {f}" for f in result.failures]
    print(f"\n(columns: the minute each tier first fires on CloudWatch; promtool files in {args.out}, "
          f"{len(promtool_files)} run)")
    return alarm_tests.finish(failures, "all SLO tests passed: both backends agree")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
