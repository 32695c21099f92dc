#!/usr/bin/env python3
"""Releases of an environment after scripts/deploy.sh has deployed them: bake, remember, roll back.

    python3 infra/release.py bake --env ENV --bucket BUCKET --release REL --seconds N [--interval S] [--role-arn ARN]
    python3 infra/release.py rollback --env ENV --bucket BUCKET --release REL [--role-arn ARN]
    python3 infra/release.py last-good --env ENV --bucket BUCKET

bake: for N seconds, every S (default 20), watch what pages: every paging alarm of alarms/alarms.yaml, the
SLO page tiers (their two window alarms; the composite rule is evaluated here with the same evaluator the
alarm tests use, so it works where composites are not readable) and the paging composite itself when
CloudWatch has it; and the canary's `RunSuccess` since the bake began. An alarm that enters ALARM during
the bake, or two failed canary runs, fail it: the release recorded as the last good one
(s3://BUCKET/releases/ENV/LAST_GOOD) is rolled back to, and the command exits 4 saying "rolled back to
<release>" (3 when there is no earlier good release to go back to). Alarms already in ALARM when the bake
begins are listed and not held against the release. A bake that passes records REL as the last good
release and exits 0.

rollback: UpdateStack of the app, canary and observability stacks with the packaged templates that
scripts/deploy.sh kept for REL under s3://BUCKET/releases/ENV/REL/, every parameter at its current value
(the data stack is state, not code: never rolled back). Exit 0 when every stack is updated (or already
was REL's).

Needs boto3 (infra/requirements-deploy.txt). Exits 2 on a usage or access error.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "alarms"))

import botocore.exceptions  # noqa: E402

import cloudwatch  # noqa: E402
import render  # noqa: E402

ROLLED_BACK, NOTHING_TO_ROLL_BACK_TO, ERROR = 4, 3, 2
# The stacks a rollback redeploys, and the packaged template of each (as scripts/deploy.sh keeps them).
ROLLBACK_STACKS = {"app": "relay", "canary": "canary", "observability": "observability"}
FAILED_RUNS_TO_FAIL = 2


def stack_name(kind: str, env: str) -> str:
    return f"relay-{kind}-{env}"


def last_good_key(env: str) -> str:
    return f"releases/{env}/LAST_GOOD"


def last_good(s3, bucket: str, env: str) -> str | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=last_good_key(env))["Body"].read().decode().strip()
    except s3.exceptions.NoSuchKey:
        return None
    return body or None


def mark_good(s3, bucket: str, env: str, release: str) -> None:
    s3.put_object(Bucket=bucket, Key=last_good_key(env), Body=release.encode(), ContentType="text/plain")


# ---- watching --------------------------------------------------------------------------------------------


@dataclass
class Paging:
    """What pages in an environment, by the names CloudWatch knows."""

    env: str
    metric_alarms: list[str]  # every metric alarm the verdict needs
    page_alarms: list[str]  # metric alarms that page by themselves
    tiers: list[tuple[str, str]]  # SLO page tiers: (name, rule over window alarms)
    composite: str  # the paging composite
    composite_rule: str

    @staticmethod
    def of(env: str) -> "Paging":
        doc = render.load_alarms()
        named = lambda name: render.alarm_name(name, env)  # noqa: E731
        page_tiers = [c for c in doc["slo_composites"] if c["severity"] == "page"]
        windows = [w for c in page_tiers for w in c["children"]]
        pages = [a["name"] for a in doc["alarms"] if a["severity"] == "page"]
        return Paging(
            env,
            [named(n) for n in [*pages, *windows]],
            [named(n) for n in pages],
            [(named(c["name"]), render.substitute(c["rule"], {"Env": env})) for c in page_tiers],
            named(doc["composite"]["name"]),
            render.substitute(render.composite_rule(doc), {"Env": env}),
        )

    def firing(self, states: dict[str, str]) -> set[str]:
        """The paging alarms in ALARM: page alarms, SLO page tiers (from their windows), the composite."""
        out = {name for name in self.page_alarms if states.get(name) == cloudwatch.ALARM}
        for name, rule in self.tiers:
            if cloudwatch.composite_state(rule, states) == cloudwatch.ALARM:
                out.add(name)
        if states.get(self.composite) == cloudwatch.ALARM:
            out.add(self.composite)
        return out


def alarm_states(cw, names: list[str]) -> dict[str, str]:
    states = {}
    for start in range(0, len(names), 100):
        pages = cw.get_paginator("describe_alarms").paginate(
            AlarmNames=names[start:start + 100], AlarmTypes=["MetricAlarm", "CompositeAlarm"])
        for page in pages:
            for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                states[alarm["AlarmName"]] = alarm["StateValue"]
    return states


def failed_canary_runs(cw, env: str, since: datetime, until: datetime) -> int:
    """Canary runs of `env` that failed, counted from the first whole minute after `since` (CloudWatch
    rounds a query's start down to the minute, and a run of the minute the deploy ended is not the
    release's): RunSuccess is 1 or 0 per run, so over one period covering the bake, SampleCount - Sum is
    the number of failed runs."""
    since = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
    period = 60 * max(2, math.ceil((until - since).total_seconds() / 60) + 1)
    metric = {"Namespace": "Relay/Canary", "MetricName": "RunSuccess", "Dimensions": [{"Name": "Stage", "Value": env}]}
    answer = cw.get_metric_data(
        MetricDataQueries=[
            {"Id": stat.lower(), "MetricStat": {"Metric": metric, "Period": period, "Stat": stat}}
            for stat in ("Sum", "SampleCount")
        ],
        StartTime=since, EndTime=since + timedelta(seconds=period),
    )
    totals = {r["Id"]: sum(r["Values"]) for r in answer["MetricDataResults"]}
    return round(totals.get("samplecount", 0) - totals.get("sum", 0))


@dataclass
class Verdict:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    already_firing: set[str] = field(default_factory=set)


def watch(cw, env: str, seconds: float, interval: float, log=print) -> Verdict:
    paging = Paging.of(env)
    names = [*paging.metric_alarms, paging.composite]
    since = datetime.now(timezone.utc)
    states = alarm_states(cw, names)
    missing = sorted(set(paging.metric_alarms) - set(states))
    if missing:
        return Verdict(False, [f"cannot watch: no such alarms in CloudWatch: {', '.join(missing)}"])
    verdict = Verdict(True, already_firing=paging.firing(states))
    if verdict.already_firing:
        log(f"bake: already in ALARM before this release, not held against it: {', '.join(sorted(verdict.already_firing))}")
    deadline = time.monotonic() + seconds
    while True:
        firing = paging.firing(alarm_states(cw, names)) - verdict.already_firing
        failed = failed_canary_runs(cw, env, since, datetime.now(timezone.utc))
        if firing:
            verdict.reasons.append(f"in ALARM during the bake: {', '.join(sorted(firing))}")
        if failed >= FAILED_RUNS_TO_FAIL:
            verdict.reasons.append(f"{failed} canary runs failed during the bake")
        if verdict.reasons:
            verdict.ok = False
            return verdict
        if time.monotonic() >= deadline:
            return verdict
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# ---- rolling back ----------------------------------------------------------------------------------------


def template_url(bucket: str, region: str, key: str) -> str:
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def rollback(cf, s3, bucket: str, region: str, env: str, release: str, role_arn: str | None, log=print) -> None:
    for kind, template in ROLLBACK_STACKS.items():
        key = f"releases/{env}/{release}/{template}.yaml"
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except Exception as err:  # noqa: BLE001 - a missing template and a refused read end the same way
            raise SystemExit(f"release: no {key} in s3://{bucket} ({err}): cannot roll back to {release}")
    for kind, template in ROLLBACK_STACKS.items():
        name = stack_name(kind, env)
        url = template_url(bucket, region, f"releases/{env}/{release}/{template}.yaml")
        stack = cf.describe_stacks(StackName=name)["Stacks"][0]
        current = {p["ParameterKey"] for p in stack.get("Parameters", [])}
        # Every parameter the old template knows keeps its current value; one it lacks is dropped, one
        # only it has takes its default.
        wanted = [p["ParameterKey"] for p in cf.get_template_summary(TemplateURL=url).get("Parameters", [])]
        params = [{"ParameterKey": key, "UsePreviousValue": True} for key in wanted if key in current]
        request = {
            "StackName": name,
            "TemplateURL": url,
            "Parameters": params,
            "Capabilities": ["CAPABILITY_IAM"],
            "Tags": [{"Key": "service", "Value": "relay"}, {"Key": "env", "Value": env},
                     {"Key": "release", "Value": release}],
        }
        if role_arn:
            request["RoleARN"] = role_arn
        try:
            cf.update_stack(**request)
        except botocore.exceptions.ClientError as err:
            if "No updates are to be performed" in str(err):
                log(f"release: {name} already runs {release}'s template")
                continue
            raise
        cf.get_waiter("stack_update_complete").wait(StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 360})
        log(f"release: {name} rolled back to {release}")


# ---- the command -----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["bake", "rollback", "last-good"])
    parser.add_argument("--env", required=True)
    parser.add_argument("--bucket", required=True, help="the artifact bucket (the bootstrap stack's output)")
    parser.add_argument("--release", help="the release just deployed (bake) or to go back to (rollback)")
    parser.add_argument("--seconds", type=float, default=600, help="how long to bake (default 600)")
    parser.add_argument("--interval", type=float, default=20, help="seconds between looks (default 20)")
    parser.add_argument("--role-arn", help="the CloudFormation execution role for the stack updates")
    args = parser.parse_args(argv)
    if args.command != "last-good" and not args.release:
        parser.error(f"{args.command} needs --release")
    import boto3

    session = boto3.session.Session()
    s3, cf, cw = session.client("s3"), session.client("cloudformation"), session.client("cloudwatch")
    if args.command == "last-good":
        print(last_good(s3, args.bucket, args.env) or "")
        return 0
    if args.command == "rollback":
        rollback(cf, s3, args.bucket, session.region_name, args.env, args.release, args.role_arn)
        return 0
    previous = last_good(s3, args.bucket, args.env)
    print(f"bake: watching {args.env}'s paging alarms and canary for {args.seconds:g} s "
          f"(release {args.release}; last good {previous or 'none'})", flush=True)
    verdict = watch(cw, args.env, args.seconds, args.interval, log=lambda text: print(text, flush=True))
    if verdict.ok:
        mark_good(s3, args.bucket, args.env, args.release)
        print(f"bake: {args.release} is good (recorded as {args.env}'s last good release)")
        return 0
    print(f"bake: {args.release} failed: {'; '.join(verdict.reasons)}", flush=True)
    if not previous or previous == args.release:
        print(f"bake: no earlier good release of {args.env} to roll back to; {args.release} stays deployed")
        return NOTHING_TO_ROLL_BACK_TO
    rollback(cf, s3, args.bucket, session.region_name, args.env, previous, args.role_arn)
    print(f"rolled back to {previous}")
    return ROLLED_BACK


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - say what failed, exit 2
        print(f"release: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(ERROR)
