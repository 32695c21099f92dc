"""What a million requests cost in AWS: drives the relay's Lambda binary with API Gateway events and
measures, per invocation, what each billed service would count. Run by bench/cost.sh (which builds the
binaries, starts the local AWS-API server and cargo-lambda's Runtime API emulator); see that script.

Per invocation it records: the bytes written to stdout (what CloudWatch Logs ingests), split into log
lines and EMF documents; the DynamoDB request units of every call the relay makes (a metering proxy
between the relay and the local server applies DynamoDB's sizing rules, bench/lib/capacity_units.py);
the invocation's wall time as the emulator's client sees it (an upper bound of Lambda's billed
duration); and every custom metric (name x dimension values) its EMF documents define.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capacity_units as cu  # noqa: E402

# ---- prices: us-east-1 list prices, as published on the AWS pricing pages (read 2026-12-02) ----------
PRICES = {
    "lambda_gb_second_arm64": 0.0000133334,  # first 6 billion GB-s a month
    "lambda_request": 0.20 / 1e6,
    "api_gateway_http_request": 1.00 / 1e6,  # HTTP API, first 300 million a month
    "logs_ingest_gb": 0.50,  # CloudWatch Logs, Standard class
    "dynamodb_wru": 0.625 / 1e6,  # on-demand, since 2024-11-01
    "dynamodb_rru": 0.125 / 1e6,
    "custom_metric_month": 0.30,  # first 10,000 metrics
    "put_metric_data_request": 0.01 / 1000,
}
# Priced at Lambda's smallest useful size; the stacks deploy more (infra/environments/*.json MemorySize),
# which multiplies the duration item (the time is mostly DynamoDB's, which memory does not shorten).
LAMBDA_MEMORY_MB = 128
LAMBDA_MEMORY_GB = LAMBDA_MEMORY_MB / 1024
PROD_MEMORY_MB = int(json.loads((Path(__file__).resolve().parents[2] / "infra" / "environments" / "prod.json")
                                .read_text())["stacks"]["app"]["MemorySize"])
# Lambda writes START, END and REPORT lines for every invocation (text log format, as infra/relay.yaml
# sets): about 60 + 52 + 150 bytes with a 36-character request id. Not written by the relay; counted.
PLATFORM_LINE_BYTES = 262

BODY = "benchmark message of a typical size, about one hundred bytes long, plain ASCII text."

# The mix, per 100 requests: what a page view of the web app and the API's users do. Each row is
# (operation, requests per 100). Reads dominate; every web-app page view reads the count.
MIX = [
    ("create", 10),
    ("create_ttl", 5),
    ("get", 35),
    ("count", 20),
    ("update", 5),
    ("delete", 5),
    ("paste_create", 5),
    ("paste_get", 5),
    ("app_append", 5),
    ("app_list", 3),
    ("saved_get", 2),
]


# ---- the metering proxy: relay -> proxy -> local AWS-API server --------------------------------------
class Meter:
    """Forwards DynamoDB calls and records each one's request units (sizing rules, not the server's)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlparse(upstream)
        # (operation, read units, write units, seconds the meter spent on its own lookups)
        self.calls: list[tuple[str, float, float, float]] = []
        self.lock = threading.Lock()
        self.tables: dict[str, dict] = {}
        self.lookup_seconds = threading.local()

    def call(self, target: str, body: dict, auth: dict[str, str]) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        headers = dict(auth, **{"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"})
        conn.request("POST", "/", json.dumps(body).encode(), headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data, dict(response.getheaders())

    def table(self, name: str, auth: dict) -> dict:
        if name not in self.tables:
            _, data, _ = self.call("DynamoDB_20120810.DescribeTable", {"TableName": name}, auth)
            self.tables[name] = json.loads(data)["Table"]
        return self.tables[name]

    def item(self, table: str, key: dict, auth: dict) -> dict | None:
        """The whole item, read for metering (its time is taken off the invocation's)."""
        started = time.perf_counter()
        body = {"TableName": table, "Key": key, "ConsistentRead": True}
        _, data, _ = self.call("DynamoDB_20120810.GetItem", body, auth)
        self.lookup_seconds.value += time.perf_counter() - started
        return json.loads(data).get("Item")

    def key_of(self, table: str, item: dict, auth: dict) -> dict:
        names = [k["AttributeName"] for k in self.table(table, auth)["KeySchema"]]
        return {n: item[n] for n in names}

    def write_units(self, table: str, before: dict | None, after: dict | None, auth: dict,
                    transactional: bool) -> float:
        """Units of one table write that turned `before` into `after`, every index's entry included."""
        description = self.table(table, auth)
        keys = [k["AttributeName"] for k in description["KeySchema"]]
        units = cu.write_units(cu.item_size(before), cu.item_size(after), transactional)
        for index in description.get("GlobalSecondaryIndexes", []):
            units += cu.index_write_units(before, after, keys, index)
        return units

    def forward(self, target: str, raw: bytes, auth: dict) -> tuple[int, bytes, dict]:
        op = target.split(".")[-1]
        self.lookup_seconds.value = 0.0
        body = json.loads(raw or b"{}")
        send = lambda: self.call(target, body, auth)  # noqa: E731
        reads = writes = 0.0
        if op in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"):
            transactional = op == "TransactWriteItems"
            specs = [next(iter(e.values())) for e in body["TransactItems"]] if transactional else [body]
            touched = []
            for spec in specs:
                key = spec.get("Key") or self.key_of(spec["TableName"], spec["Item"], auth)
                touched.append((spec["TableName"], key, self.item(spec["TableName"], key, auth)))
            answer = send()
            for table, key, before in touched:
                after = self.item(table, key, auth)
                writes += self.write_units(table, before, after, auth, transactional)
        else:
            answer = send()
            result = json.loads(answer[1] or b"{}") if answer[0] == 200 else {}
            consistent = bool(body.get("ConsistentRead"))
            # Reads are charged on the whole item even when a projection returns less of it.
            if op == "GetItem":
                item = self.item(body["TableName"], body["Key"], auth)
                reads = cu.read_units(cu.item_size(item), consistent)
            elif op == "BatchGetItem":
                for table, request in body["RequestItems"].items():
                    for key in request["Keys"]:
                        item = self.item(table, key, auth)
                        reads += cu.read_units(cu.item_size(item), bool(request.get("ConsistentRead")))
            elif op == "Query":
                size = sum(cu.item_size(i) for i in result.get("Items", []))
                reads = cu.read_units(size, consistent)
        with self.lock:
            self.calls.append((op, reads, writes, self.lookup_seconds.value))
        return answer

    def serve(self) -> int:
        meter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = {k: v for k, v in self.headers.items()
                        if k.lower() in ("authorization", "x-amz-date", "x-amz-security-token")}
                status, data, _ = meter.forward(self.headers["X-Amz-Target"], raw, auth)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1]


# ---- the workload ----------------------------------------------------------------------------------
def event(method: str, path: str, body: dict | None = None, query: str = "") -> dict:
    request_id = uuid.uuid4().hex[:12] + "="
    headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "cost-bench",
               "x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https",
               "x-amzn-trace-id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"}
    if body is not None:
        headers["content-type"] = "application/json"
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": headers["host"],
            "domainPrefix": "abc123", "requestId": request_id, "routeKey": "$default", "stage": "$default",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                     "userAgent": "cost-bench"},
            "time": "02/Dec/2026:00:00:00 +0000", "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": False,
        "body": json.dumps(body) if body is not None else None,
    }


class Workload:
    """The mix's requests, in an interleaved order, against the ids the earlier requests created."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.pastes: list[str] = []
        self.turn = 0

    def pick(self, pool: list[str]) -> str:
        self.turn += 1
        return pool[self.turn % len(pool)]

    def build(self, op: str) -> dict:
        requests = {
            "create": lambda: event("POST", "/messages", {"message": BODY}),
            "create_ttl": lambda: event("POST", "/messages", {"message": BODY, "ttl_seconds": 3600}),
            "get": lambda: event("GET", f"/messages/{self.pick(self.ids)}"),
            "count": lambda: event("GET", "/messages"),
            "update": lambda: event("PUT", f"/messages/{self.pick(self.ids)}", {"message": BODY + " (edited)"}),
            "delete": lambda: event("DELETE", f"/messages/{self.ids.pop()}"),
            "paste_create": lambda: event("POST", "/paste", {"content": BODY, "timetolive": 3600}),
            "paste_get": lambda: event("GET", f"/paste/{self.pick(self.pastes)}"),
            "app_append": lambda: event("POST", "/app"),
            "app_list": lambda: event("GET", "/app", query="limit=20"),
            "saved_get": lambda: event("GET", "/saved"),
        }
        return requests[op]()

    def learn(self, op: str, answer: dict) -> None:
        if op in ("create", "create_ttl", "paste_create") and answer.get("statusCode") in (200, 201):
            created = json.loads(answer["body"])["id"]
            (self.pastes if op == "paste_create" else self.ids).append(created)


def order(rounds: int) -> list[str]:
    """Every round runs the whole mix; operations are spread evenly through it (largest first)."""
    slots = []
    for op, weight in MIX:
        slots += [((i + 0.5) / weight, op) for i in range(weight)]
    one_round = [op for _, op in sorted(slots)]
    return ["create", "create", "paste_create"] + one_round * rounds


# ---- one binary, measured ----------------------------------------------------------------------------
def measure(binary: str, emulator: str, moto: str, table: str, rounds: int, workdir: Path) -> dict:
    env = dict(os.environ, RELAY_STORE=f"dynamodb:{table}", AWS_ENDPOINT_URL=moto, RUST_LOG="warn")
    subprocess.run([binary, "create-table"], env=env, check=True, capture_output=True)
    meter = Meter(moto)
    port = meter.serve()
    host, emulator_port = emulator.split(":")
    log = workdir / f"{table}.stdout"
    env |= {
        "AWS_LAMBDA_RUNTIME_API": f"http://{emulator}/.rt", "AWS_LAMBDA_FUNCTION_NAME": "_",
        "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "RELAY_ENV": "prod", "RUST_LOG": "info",
    }
    with open(log, "wb") as out:
        relay = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        workload = Workload()
        records = []
        seen = 0
        for i, op in enumerate(order(rounds)):
            calls_before = len(meter.calls)
            payload = json.dumps(workload.build(op)).encode()
            conn = http.client.HTTPConnection(host, int(emulator_port), timeout=60)
            started = time.perf_counter()
            conn.request("POST", "/2015-03-31/functions/_/invocations", payload)
            answer = json.loads(conn.getresponse().read())
            wall_ms = (time.perf_counter() - started) * 1000
            conn.close()
            # The relay writes its EMF documents just after it answers: wait for its output to settle.
            size = -1
            while size != log.stat().st_size:
                size = log.stat().st_size
                time.sleep(0.03)
            workload.learn(op, answer)
            if answer.get("statusCode", 500) >= 400:
                raise SystemExit(f"{op} answered {answer.get('statusCode')}: {answer.get('body')}")
            text = log.read_bytes()
            new, seen = text[seen:], len(text)
            lines = [line for line in new.split(b"\n") if line]
            emf = [line for line in lines if line.startswith(b'{"_aws"')]
            calls = meter.calls[calls_before:]
            lookups_ms = sum(c[3] for c in calls) * 1000
            records.append({
                "op": op, "cold": i == 0, "wall_ms": wall_ms - lookups_ms,
                "log_bytes": sum(len(line) + 1 for line in lines if line not in emf),
                "emf_bytes": sum(len(line) + 1 for line in emf), "emf_documents": len(emf),
                "rru": sum(c[1] for c in calls), "wru": sum(c[2] for c in calls),
                "dynamodb_calls": [c[0] for c in calls],
                "metrics": sorted(custom_metrics(emf)),
            })
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    return {"binary": binary, "records": records}


def custom_metrics(emf_lines: list[bytes]) -> set[str]:
    """Every metric an EMF document defines, as CloudWatch bills it: namespace, name, dimension values."""
    found = set()
    for line in emf_lines:
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                values = ",".join(f"{d}={document.get(d)}" for d in dimensions)
                for metric in directive["Metrics"]:
                    found.add(f"{directive['Namespace']}/{metric['Name']}[{values}]")
    return found


# ---- pricing -----------------------------------------------------------------------------------------
def per_operation(records: list[dict]) -> dict[str, dict]:
    """Means over the warm invocations of each operation (median for the time)."""
    grouped = defaultdict(list)
    for record in records:
        if not record["cold"]:
            grouped[record["op"]].append(record)
    summary = {}
    for op, rows in grouped.items():
        mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
        summary[op] = {
            "n": len(rows), "log_bytes": mean("log_bytes"), "emf_bytes": mean("emf_bytes"),
            "emf_documents": mean("emf_documents"), "rru": mean("rru"), "wru": mean("wru"),
            "billed_ms": statistics.fmean(math.ceil(r["wall_ms"]) for r in rows),
        }
    return summary


def per_million(summary: dict[str, dict]) -> dict[str, float]:
    """Dollars per million requests of the mix, by item."""
    total_weight = sum(w for _, w in MIX)
    cost = defaultdict(float)
    for op, weight in MIX:
        s, n = summary[op], 1e6 * weight / total_weight
        cost["logs: relay lines"] += n * s["log_bytes"] / 1e9 * PRICES["logs_ingest_gb"]
        cost["logs: EMF documents"] += n * s["emf_bytes"] / 1e9 * PRICES["logs_ingest_gb"]
        cost["logs: Lambda platform lines"] += n * PLATFORM_LINE_BYTES / 1e9 * PRICES["logs_ingest_gb"]
        cost["DynamoDB writes"] += n * s["wru"] * PRICES["dynamodb_wru"]
        cost["DynamoDB reads"] += n * s["rru"] * PRICES["dynamodb_rru"]
        gb_seconds = n * s["billed_ms"] / 1000 * LAMBDA_MEMORY_GB
        cost["Lambda duration"] += gb_seconds * PRICES["lambda_gb_second_arm64"]
        cost["Lambda requests"] += n * PRICES["lambda_request"]
    cost["API Gateway (HTTP API)"] = 1e6 * PRICES["api_gateway_http_request"]
    return dict(cost)


# The canary (infra/canary.yaml): one run a minute, 10 relay requests a run (website 3, API round trip 4,
# readyz, saved, app), one PutMetricData call, Success and Duration for 5 probes plus RunSuccess.
CANARY_RUNS_A_MONTH = 60 * 24 * 30
CANARY_REQUESTS_A_RUN = 10
CANARY_METRICS = 11
CANARY_BILLED_MS = 300  # assumed: 10 requests over the internet to API Gateway, about 30 ms each
CANARY_LOG_BYTES_A_RUN = 1500  # assumed: its JSON lines and Lambda's platform lines


def canary_month(relay_per_million: float) -> dict[str, float]:
    runs = CANARY_RUNS_A_MONTH
    return {
        "custom metrics": CANARY_METRICS * PRICES["custom_metric_month"],
        "PutMetricData": runs * PRICES["put_metric_data_request"],
        "Lambda": runs * (PRICES["lambda_request"]
                          + CANARY_BILLED_MS / 1000 * LAMBDA_MEMORY_GB * PRICES["lambda_gb_second_arm64"]),
        "logs": runs * CANARY_LOG_BYTES_A_RUN / 1e9 * PRICES["logs_ingest_gb"],
        "relay requests it makes (at the mix's price, API Gateway included)":
            runs * CANARY_REQUESTS_A_RUN / 1e6 * relay_per_million,
    }


def dollars(value: float) -> str:
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def report(results: dict, machine: str) -> str:
    labels = list(results)
    out = ["# What the relay costs in AWS, per million requests\n"]
    out.append(f"Measured {machine}. `bench/cost.sh`: the release binary in Lambda mode under cargo-lambda's "
               "Runtime API emulator, fed API Gateway HTTP API events, on the DynamoDB store of the local "
               "AWS-API server behind a metering proxy. Prices: us-east-1 list prices (`PRICES` in "
               "`bench/lib/cost.py`, read 2026-12-02; DynamoDB on-demand as cut on 2024-11-01), Lambda arm64 at "
               f"{LAMBDA_MEMORY_MB} MB (prod deploys {PROD_MEMORY_MB} MB: its Lambda duration item is "
               f"{PROD_MEMORY_MB // LAMBDA_MEMORY_MB}x the one below).\n")
    weights = dict(MIX)
    out.append("The mix, per 100 requests: " + ", ".join(f"{op} {w}" for op, w in MIX) + ".\n")
    out.append("## Per operation (warm invocations; " + ", ".join(labels) + ")\n")
    out.append("| operation | " + " | ".join(
        f"{h} ({label})" for label in labels for h in ("log B", "EMF docs", "EMF B", "RRU", "WRU", "ms")) + " |")
    out.append("|---|" + "---:|" * (6 * len(labels)))
    for op in weights:
        cells = []
        for label in labels:
            row = results[label]["summary"][op]
            cells += [f"{row['log_bytes']:.0f}", f"{row['emf_documents']:.1f}", f"{row['emf_bytes']:.0f}",
                      f"{row['rru']:.2f}", f"{row['wru']:.2f}", f"{row['billed_ms']:.1f}"]
        out.append(f"| {op} | " + " | ".join(cells) + " |")
    out.append("\nlog B: the relay's JSON lines; EMF: its metric documents (both ingested by CloudWatch "
               "Logs); RRU/WRU: DynamoDB read/write request units by the published sizing rules "
               "(`bench/lib/capacity_units.py`, tested in `infra/tests/test_cost_model.py`), indexes "
               "included; ms: billed duration (wall time rounded up to the millisecond, the meter's own "
               "lookups taken off; DynamoDB's latency here is the local server's).\n")
    for label in labels:
        summary = results[label]["summary"]
        per_op = {op: s["log_bytes"] + s["emf_bytes"] for op, s in summary.items()}
        low, high = min(per_op, key=per_op.get), max(per_op, key=per_op.get)
        out.append(f"Log per warm invocation at `info` ({label}): {per_op[low]:.0f} B ({low}) to "
                   f"{per_op[high]:.0f} B ({high}), request line and EMF together.\n")
    out.append("## Per million requests of the mix\n")
    out.append("| item | " + " | ".join(labels) + " |")
    out.append("|---|" + "---:|" * len(labels))
    items = list(results[labels[0]]["per_million"])
    for item in items:
        out.append(f"| {item} | " + " | ".join(dollars(results[l]["per_million"][item]) for l in labels) + " |")
    totals = {l: sum(results[l]["per_million"].values()) for l in labels}
    without = {l: totals[l] - results[l]["per_million"]["API Gateway (HTTP API)"] for l in labels}
    out.append("| **total** | " + " | ".join(f"**{dollars(totals[l])}**" for l in labels) + " |")
    out.append("| **total without API Gateway** | " + " | ".join(f"**{dollars(without[l])}**" for l in labels) + " |")
    if len(labels) == 2:
        a, b = labels
        out.append(f"\n{b} / {a} without API Gateway: **{without[b] / without[a]:.2f}x**.")
    out.append("\n## Monthly, whatever the traffic\n")
    for label in labels:
        metrics = results[label]["custom_metrics"]
        out.append(f"- {label}: **{len(metrics)} custom metrics** (name x dimension values seen in this run; "
                   f"each route, method and status class adds its own): "
                   f"{dollars(len(metrics) * PRICES['custom_metric_month'])} a month.")
    canary = canary_month(totals[labels[-1]])
    out.append(f"- The canary at one run a minute ({labels[-1]}): **{dollars(sum(canary.values()))} a month**: "
               + "; ".join(f"{k} {dollars(v)}" for k, v in canary.items()) + ".")
    out.append("\n## What is not cut, and why\n")
    out.append("- **Creates stay one `TransactWriteItems`** (the message and +1 on a count shard: 4-5 write "
               "units where a lone PutItem is 1-2). The count is exact for creates and deletes because the two "
               "commit together; a PutItem and an UpdateItem would cost half, and a crash between them would "
               "leave the count wrong for good. A stream consumer could count without the transaction, at the "
               "price of a second function and a lag.")
    out.append("- **`GET /app` reads its count shards strongly consistent** (17 read units with its page): "
               "the page's timestamps and its count must agree, and it is 3% of the mix. `GET /messages` reads "
               "them eventually consistent (8 units instead of 16; the count may miss the last moment's "
               "writes, README \"Storage and counting\").")
    out.append("- **Lambda's START/END/REPORT lines** stay: the dashboard's cold-start widget and two runbooks "
               "read `@initDuration`, `@duration` and `@maxMemoryUsed` from the REPORT line.")
    cold = [r for r in results[labels[-1]]["records"] if r["cold"]][0]
    out.append(f"\nA cold start's first invocation ({labels[-1]}) wrote {cold['log_bytes'] + cold['emf_bytes']} "
               "bytes of output; cold starts are not in the per-operation means.")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", action="append", required=True, help="LABEL=PATH, once or more")
    parser.add_argument("--emulator", required=True, help="HOST:PORT of the Runtime API emulator")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--machine", default="on this machine")
    parser.add_argument("--report", type=Path, help="write the Markdown report here")
    args = parser.parse_args()
    moto = os.environ["AWS_ENDPOINT_URL"]
    results = {}
    for spec in args.binary:
        label, binary = spec.split("=", 1)
        table = f"cost-{label}-{uuid.uuid4().hex[:6]}"
        result = measure(binary, args.emulator, moto, table, args.rounds, args.json.parent)
        result["summary"] = per_operation(result["records"])
        result["per_million"] = per_million(result["summary"])
        result["custom_metrics"] = sorted({m for r in result["records"] for m in r["metrics"]})
        results[label] = result
    args.json.write_text(json.dumps(results, indent=1))
    if args.report:
        args.report.write_text(report(results, args.machine))


if __name__ == "__main__":
    main()
