"""Parse wrk --latency output: summary(path) -> (requests/s, p50 ms, p99 ms, errors), where errors are
non-2xx/3xx responses plus socket errors (connections closed or timed out without an answer).
Run as a script, prints the four values."""

import re
import sys


def _ms(value: str) -> float:
    number = float(re.match(r"[\d.]+", value).group())
    unit = re.sub(r"[\d.]+", "", value)
    return number * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def summary(path: str) -> tuple[float, float, float, int]:
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    failed = sum(int(n) for n in socket.groups()) if socket else 0
    return rps, p50, p99, (int(errors.group(1)) if errors else 0) + failed


if __name__ == "__main__":
    print(*summary(sys.argv[1]))
