"""The capacity model of docs/ARCHITECTURE.md: how many creates per second each part of the AWS
deployment can take, from the published limits and the relay's own request-unit costs, and what breaks
first. `python3 docs/capacity.py` prints the Markdown the document embeds (a test keeps the two equal);
`--users N --seconds S` asks about N users creating within S seconds.

Every limit is a default quota or a documented service limit (2026-12), named where it is used; most can
be raised by asking AWS, which is the point of listing them.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---- the relay's own costs (bench/results/cost.md; relay/src/store/dynamodb/) ----------------------
COUNT_SHARDS = 16  # a new table's; `relay count-shards N` raises it (docs/ARCHITECTURE.md, Knobs)
CREATE_WRU = 4  # TransactWriteItems: message item + count shard, 2 units each (items under 1 KB)
SHARD_WRU_PER_CREATE = 2  # the shard's part of it: a transactional 1-unit write
APPEND_WRU_ON_LOG_PARTITION = 2  # POST /app: the log entry, transactional, all in partition `log`
CREATE_MS = 20  # a warm create in Lambda: one DynamoDB transaction, about 10-20 ms in-region

# ---- AWS limits ---------------------------------------------------------------------------------------
PARTITION_WRU = 1_000  # DynamoDB: write units per second one partition (one partition key) serves
NEW_TABLE_WRU = 4_000  # DynamoDB on-demand: a new table's initial write throughput
TABLE_QUOTA_WRU = 40_000  # DynamoDB: default per-table on-demand quota (adjustable)
LAMBDA_CONCURRENCY = 1_000  # Lambda: default concurrent executions per account and region (adjustable)
LAMBDA_SCALE_PER_10S = 1_000  # Lambda: each function adds up to 1,000 concurrent executions per 10 s
APIGW_ACCOUNT_RPS = 10_000  # API Gateway: default account throttle per region (burst 5,000)


@dataclass(frozen=True)
class Wall:
    part: str
    creates_per_second: float
    why: str


def stage_settings(env: str) -> dict:
    return json.loads((ROOT / "infra" / "environments" / f"{env}.json").read_text())["stacks"]["app"]


def walls(env: str = "prod") -> list[Wall]:
    """Every limit on creates per second, lowest first."""
    app = stage_settings(env)
    reserved = int(app["ReservedConcurrency"])
    found = [
        Wall("DynamoDB, a new on-demand table", NEW_TABLE_WRU / CREATE_WRU,
             f"{NEW_TABLE_WRU:,} write units/s at first, {CREATE_WRU} per create; it doubles its previous "
             "peak within 30 minutes, or is pre-warmed (WarmThroughput)"),
        Wall("DynamoDB, the count shards", COUNT_SHARDS * PARTITION_WRU / SHARD_WRU_PER_CREATE,
             f"{COUNT_SHARDS} shards x {PARTITION_WRU:,} write units/s per partition / "
             f"{SHARD_WRU_PER_CREATE} per increment (fewer where transactions on one shard conflict)"),
        Wall("DynamoDB, the table quota", TABLE_QUOTA_WRU / CREATE_WRU,
             f"{TABLE_QUOTA_WRU:,} write units/s per table by default, {CREATE_WRU} per create"),
        Wall(f"Lambda, the relay's reserved concurrency ({env})", reserved * 1000 / CREATE_MS,
             f"{reserved} sandboxes x 1000 ms / {CREATE_MS} ms per create"),
        Wall("Lambda, the account", LAMBDA_CONCURRENCY * 1000 / CREATE_MS,
             f"{LAMBDA_CONCURRENCY:,} concurrent executions by default x 1000 / {CREATE_MS} ms"),
        Wall(f"API Gateway, the stage throttle ({env})", float(app["ApiThrottlingRateLimit"]),
             f"ApiThrottlingRateLimit {app['ApiThrottlingRateLimit']}/s, burst {app['ApiThrottlingBurstLimit']}"),
        Wall("API Gateway, the account", APIGW_ACCOUNT_RPS, f"{APIGW_ACCOUNT_RPS:,} requests/s per region"),
    ]
    return sorted(found, key=lambda w: w.creates_per_second)


def shards_for(creates_per_second: float) -> int:
    return math.ceil(creates_per_second * SHARD_WRU_PER_CREATE / PARTITION_WRU)


def crowd(users: int, seconds: float, env: str = "prod") -> list[str]:
    rate = users / seconds
    concurrency = rate * CREATE_MS / 1000
    lines = [f"{users:,} users creating within {seconds:g} s: **{rate:,.0f} creates/s**, "
             f"{concurrency:,.0f} Lambda sandboxes busy at once, {rate * CREATE_WRU:,.0f} write units/s."]
    over = [w for w in walls(env) if w.creates_per_second < rate]
    lines.append("Limits it exceeds, lowest first: " + "; ".join(
        f"{w.part} ({w.creates_per_second:,.0f}/s, {rate / w.creates_per_second:,.0f}x over)" for w in over) + ".")
    ramp = math.ceil(concurrency / LAMBDA_SCALE_PER_10S) * 10
    lines.append(f"Even with every quota raised: {shards_for(rate):,} count shards, a pre-warmed table of "
                 f"{rate * CREATE_WRU:,.0f} write units/s, and about {ramp:,} s for Lambda to add "
                 f"{concurrency:,.0f} sandboxes at {LAMBDA_SCALE_PER_10S:,} per 10 s.")
    return lines


def markdown(env: str = "prod") -> str:
    out = [f"| limit on creates per second ({env}) | creates/s | from |", "|---|---:|---|"]
    for wall in walls(env):
        out.append(f"| {wall.part} | {wall.creates_per_second:,.0f} | {wall.why} |")
    out.append("")
    out.append(f"`POST /app` appends all land in the one `log` partition: {PARTITION_WRU // APPEND_WRU_ON_LOG_PARTITION:,} "
               f"appends/s ({PARTITION_WRU:,} write units/s / {APPEND_WRU_ON_LOG_PARTITION} per transactional append).")
    out.append("")
    out += crowd(10_000_000, 60, env)
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="prod")
    parser.add_argument("--users", type=int)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    if args.users:
        print("\n".join(crowd(args.users, args.seconds, args.env)))
    else:
        print(markdown(args.env), end="")


if __name__ == "__main__":
    main()
