"""Cold start of a Lambda binary under a Runtime API stand-in, as bench/cold-start.sh runs it: process
start to the first `GET .../invocation/next` (the function's init), to the first invocation's response,
and the peak RSS (VmHWM) once it answered. Each round starts every binary afresh, in turn. With
--callgrind, each binary instead runs once under callgrind, and the report says where the user-space
instructions up to the first response went (bench/cold-start-instructions.sh)."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EVENT = {
    "version": "2.0", "routeKey": "$default", "rawPath": "/healthz", "rawQueryString": "",
    "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com", "x-forwarded-for": "203.0.113.7"},
    "requestContext": {
        "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "abc123", "requestId": "ColdStart1=", "routeKey": "$default", "stage": "$default",
        "http": {"method": "GET", "path": "/healthz", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                 "userAgent": "cold-start-bench"},
        "time": "02/Dec/2026:00:00:00 +0000", "timeEpoch": 0,
    },
    "isBase64Encoded": False,
}


class StandIn:
    """Hands out one invocation, then holds every later `next` open; records when things happened."""

    def __init__(self) -> None:
        self.first_next: float | None = None
        self.pid: int | None = None
        self.init_cpu_ms: float | None = None
        self.answered = threading.Event()
        self.answer: dict = {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                if stand_in.first_next is not None:
                    time.sleep(3600)
                    return
                stand_in.first_next = time.perf_counter()
                while stand_in.pid is None:  # Popen has not returned yet
                    time.sleep(0.0001)
                stand_in.init_cpu_ms = cpu_ms(stand_in.pid)
                body = json.dumps(EVENT).encode()
                self.send_response(200)
                for name, value in (("Lambda-Runtime-Aws-Request-Id", "cold-1"),
                                    ("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000)),
                                    ("Lambda-Runtime-Invoked-Function-Arn",
                                     "arn:aws:lambda:us-east-1:123456789012:function:relay-prod"),
                                    ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
                                    ("Content-Length", str(len(body)))):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stand_in.answer = {"path": self.path, "body": data.decode(errors="replace")}
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                stand_in.answered.set()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def cpu_ms(pid: int) -> float:
    """CPU time the process has used so far, all its threads (schedstat: nanoseconds)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e6


# The CA bundle, as Amazon Linux 2023 (Lambda's `provided.al2023`) keeps them: one file, and a
# certificate directory holding little else. Debian's /etc/ssl/certs holds a file per certificate, which
# the HTTPS client's native-roots loader would read one by one; pointing it at the bundle reads as
# Lambda does.
# RELAY_COLD_CA_BUNDLE names another bundle, to measure what a smaller trust store would save.
CA_BUNDLE = os.environ.get("RELAY_COLD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


def lambda_environment(port: int) -> dict[str, str]:
    """What Lambda sets for a function (and the local AWS-API server's address and dummy keys): none
    of this machine's own variables, which change what a process does at start."""
    keep = ("PATH", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return env | {"AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}", "AWS_LAMBDA_FUNCTION_NAME": "relay-prod",
                  "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
                  "AWS_SESSION_TOKEN": "local", "LANG": "en_US.UTF-8", "TZ": ":UTC",
                  "LAMBDA_TASK_ROOT": "/var/task", "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
                  "SSL_CERT_FILE": CA_BUNDLE}


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def cold_start(binary: str, env: dict[str, str], callgrind_out: Path | None = None) -> dict:
    """One cold start; under callgrind (writing `callgrind_out`) when given, dumped once it answered."""
    stand_in = StandIn()
    port = stand_in.server.server_address[1]
    full_env = lambda_environment(port) | env
    launcher = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind_out}"] if callgrind_out else []
    started = time.perf_counter()
    process = subprocess.Popen([*launcher, binary], env=full_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    stand_in.pid = process.pid
    try:
        if not stand_in.answered.wait(120 if callgrind_out else 30):
            raise SystemExit(f"{binary} did not answer its first invocation in time")
        answered = time.perf_counter()
        if not stand_in.answer["path"].endswith("/response"):
            raise SystemExit(f"{binary} failed its first invocation: {stand_in.answer}")
        status = json.loads(stand_in.answer["body"]).get("statusCode")
        if status != 200:
            raise SystemExit(f"{binary} answered {status}: {stand_in.answer['body']}")
        time.sleep(0.05)
        rss = peak_rss_kib(process.pid)
        if callgrind_out:
            subprocess.run(["callgrind_control", "--dump", str(process.pid)], check=True,
                           stdout=subprocess.DEVNULL)
    finally:
        process.kill()
        process.wait()
        stand_in.server.shutdown()
    return {"init_ms": (stand_in.first_next - started) * 1000, "first_response_ms": (answered - started) * 1000,
            "init_cpu_ms": stand_in.init_cpu_ms, "peak_rss_kib": rss}


# Where a relay's init can go, each an inclusive count (the function and all it calls; some overlap:
# the trust store is part of the AWS configuration, which is part of opening the store).
INIT_PARTS = [
    ("the dynamic loader relocating the binary", "_dl_relocate_object"),
    ("opening the store: the DynamoDB client and the AWS configuration", "relay::startup::open_store::{{closure}}"),
    ("of which the AWS configuration: credentials, region, the HTTPS client (aws-config)",
     "aws_config::loader::ConfigLoader::load::{{closure}}"),
    ("of which the HTTPS client's trust store: the CA bundle read and parsed (rustls-native-certs)",
     "rustls_native_certs::load_native_certs"),
    ("building the app: routes, OpenAPI document, metric handles", "relay::startup::build"),
    ("of which the OpenAPI document serialised",
     "utoipa::openapi::_::<impl serde_core::ser::Serialize for utoipa::openapi::OpenApi>::serialize"),
    ("of which the routes' metric handles registered", "relay::telemetry::handles::EndpointHandles::register"),
    ("the expiry sweeper's first sweep, on another thread (a DynamoDB query and the reads it makes)",
     "relay::startup::spawn_sweeper::{{closure}}"),
    ("SigV4 signing of the AWS calls made (in the sweep)", "aws_sigv4::http_request::sign::sign"),
]


def inclusive_counts(dump: Path) -> tuple[int, dict[str, int]]:
    """The program's total instructions and each function's inclusive count, from a callgrind dump."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)], check=True,
                          capture_output=True, text=True).stdout
    total, counts = 0, {}
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+?):(.+?) \[", line)
        if match:
            counts.setdefault(match.group(3), int(match.group(1).replace(",", "")))
        elif "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
    return total, counts


def callgrind_report(binaries: dict, out_dir: Path, machine: str) -> str:
    totals, relay_counts = {}, {}
    for name, (binary, env) in binaries.items():
        out = out_dir / f"{name}.callgrind"
        cold_start(binary, env, out)
        dumps = sorted(out_dir.glob(f"{name}.callgrind.*"))
        if not dumps:
            raise SystemExit(f"callgrind wrote no dump for {name}")
        totals[name], counts = inclusive_counts(dumps[0])
        if name == "relay":
            relay_counts = counts
    lines = ["# Lambda cold start: where the relay's init goes, in instructions\n",
             f"Measured {machine}. `bench/cold-start-instructions.sh`: each release binary started once under "
             "callgrind (valgrind) in the Lambda environment of `bench/cold-start.sh`, counted from process start "
             "to its first invocation's response (`GET /healthz`), all threads, on an empty table. Counts repeat from run to run within a fraction of a percent, "
             "except the first sweep's: it runs beside the rest and is counted as far as it got; they miss the kernel (exec, page faults, thread starts: most of the hello-world's wall time).\n",
             "| binary | user-space instructions to the first response |", "|---|---:|"]
    lines += [f"| {name} | {total:,} |" for name, total in totals.items()]
    lines += ["\nThe relay's, by part (inclusive counts: a part includes what it calls; the sweeper runs beside the "
              "rest):\n", "| part | instructions | share |", "|---|---:|---:|"]
    for label, function in INIT_PARTS:
        count = relay_counts.get(function)
        if count is None:
            lines.append(f"| {label} | not run | |")
        else:
            lines.append(f"| {label} | {count:,} | {count / totals['relay']:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hello", required=True)
    parser.add_argument("--relay", required=True)
    parser.add_argument("--baseline", help="another relay build, measured in the same rounds")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--machine", default="on this machine")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--callgrind", type=Path, metavar="DIR",
                        help="count instructions under callgrind instead (dumps in DIR), one start each")
    args = parser.parse_args()
    relay_env = {"RELAY_STORE": os.environ.get("RELAY_COLD_STORE", "memory:"), "RELAY_ENV": "prod", "RUST_LOG": "info"}
    binaries = {"hello": (args.hello, {}), "relay": (args.relay, relay_env)}
    if args.baseline:
        binaries["relay-baseline"] = (args.baseline, relay_env)
    if args.callgrind:
        args.report.write_text(callgrind_report(binaries, args.callgrind, args.machine))
        return
    rows = {name: [] for name in binaries}
    for _ in range(args.rounds):
        for name, (binary, env) in binaries.items():
            rows[name].append(cold_start(binary, env))
    median = lambda name, key: statistics.median(r[key] for r in rows[name])  # noqa: E731
    ratio = lambda key, name="relay": statistics.median(  # noqa: E731
        r[key] / h[key] for r, h in zip(rows[name], rows["hello"]))
    out = ["# Lambda cold start: the relay vs a lambda_http hello-world\n",
           f"Measured {args.machine}. `bench/cold-start.sh {args.rounds}`: release builds (x86_64; the deployed "
           "arm64 build is not run here), each started afresh under a Runtime API stand-in "
           "(`bench/lib/cold_start.py`) in the environment Lambda gives a function, alternately, "
           f"{args.rounds} rounds. The relay runs with `RELAY_STORE={relay_env['RELAY_STORE']}` "
           "(the local AWS-API server's table; the DynamoDB client and its credentials are set up at start, "
           "the first call is made by the first request that needs the store) and answers `GET /healthz`; "
           "the hello-world (`relay/examples/lambda_hello.rs`) answers any event."
           + (f" CA bundle: `{CA_BUNDLE}` (`RELAY_COLD_CA_BUNDLE`)." if "RELAY_COLD_CA_BUNDLE" in os.environ else "")
           + "\n",
           "| binary | start to first `next` (init), median | CPU time of the init, median | start to first response, median | peak RSS, median |",
           "|---|---:|---:|---:|---:|"]
    for name in rows:
        out.append(f"| {name} | {median(name, 'init_ms'):.1f} ms | {median(name, 'init_cpu_ms'):.1f} ms | "
                   f"{median(name, 'first_response_ms'):.1f} ms | {median(name, 'peak_rss_kib') / 1024:.1f} MiB |")
    out.append(f"\nRelay / hello-world, taken within each round, median: init **{ratio('init_ms'):.2f}x** "
               f"(goal <= 1.5x), its CPU time **{ratio('init_cpu_ms'):.2f}x**, first response "
               f"**{ratio('first_response_ms'):.2f}x**; relay peak RSS "
               f"**{median('relay', 'peak_rss_kib') / 1024:.1f} MiB** (goal <= 40 MB).")
    if args.baseline:
        out.append(f"\nThe baseline build (`RELAY_BASELINE`) in the same rounds: init {ratio('init_ms', 'relay-baseline'):.2f}x "
                   f"the hello-world's, its CPU time {ratio('init_cpu_ms', 'relay-baseline'):.2f}x.")
    out.append("\nOn Lambda, the platform adds its own sandbox and runtime start before the process starts "
               "(not measured here); `Init Duration` on REPORT lines is this init plus that.")
    args.report.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
