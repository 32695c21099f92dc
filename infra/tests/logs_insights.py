"""CloudWatch Logs Insights, offline: the subset of its query language that the runbooks and the dashboard
use, run over captured log events, so a test can check what a query really returns.

An event is one log line as CloudWatch stores it: its text (`@message`), its time, and the fields Logs
Insights discovers in it: every member of a JSON object (nested ones as `a.b`), and for Lambda's platform
lines (`REPORT RequestId: ... Duration: ... ms ...`) `@type`, `@requestId`, `@duration`, `@billedDuration`,
`@memorySize`, `@maxMemoryUsed` (bytes) and `@initDuration`.

Commands: `fields`, `filter`, `stats` (count, count(f), sum, avg, min, max, pct(f, p), by fields and
bin(Nm)), `sort f [asc|desc]`, `limit n`, `parse @message "text * text" as name`, and the dashboard's
`SOURCE '...' |` prefix. Expressions: fields, "strings", numbers, = != < <= > >=, and, or, not,
parentheses, ispresent(f), `f like /regex/`, `f like "text"`. Anything else raises ValueError.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field


@dataclass
class Event:
    message: str
    timestamp: float = 0.0
    fields: dict = field(default_factory=dict)

    @staticmethod
    def of(line: str, timestamp: float = 0.0) -> "Event":
        event = Event(line, timestamp, {"@message": line, "@timestamp": timestamp})
        text = line.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                _flatten(value, "", event.fields)
        report = re.match(r"REPORT RequestId: (\S+)", text)
        if report:
            event.fields["@type"] = "REPORT"
            event.fields["@requestId"] = report.group(1)
            for key, pattern, scale in (
                ("@duration", r"\tDuration: ([\d.]+) ms", 1),
                ("@billedDuration", r"Billed Duration: ([\d.]+) ms", 1),
                ("@memorySize", r"Memory Size: (\d+) MB", 1_000_000),
                ("@maxMemoryUsed", r"Max Memory Used: (\d+) MB", 1_000_000),
                ("@initDuration", r"Init Duration: ([\d.]+) ms", 1),
            ):
                found = re.search(pattern, text)
                if found:
                    event.fields[key] = float(found.group(1)) * scale
        return event


def _flatten(value: dict, prefix: str, out: dict) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            _flatten(item, f"{name}.", out)
        elif isinstance(item, list):
            for index, element in enumerate(item):
                if isinstance(element, dict):
                    _flatten(element, f"{name}.{index}.", out)
                else:
                    out[f"{name}.{index}"] = element
        else:
            out[name] = item


# ---- expressions ---------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<regex>/(?:\\.|[^/])*/)|(?P<str>\"(?:\\.|[^\"])*\"|'(?:\\.|[^'])*')|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op><=|>=|!=|=|<|>|\(|\)|,)|(?P<name>[@A-Za-z_][\w.@]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text.strip()):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"cannot read {text[pos:]!r}")
        out.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return out


class _Expr:
    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.at = 0
        self.tree = self.disjunction()
        if self.at != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.at][1]!r} in {text!r}")

    def peek(self):
        return self.tokens[self.at] if self.at < len(self.tokens) else (None, None)

    def take(self):
        token = self.tokens[self.at]
        self.at += 1
        return token

    def disjunction(self):
        node = self.conjunction()
        while self.peek()[1] and self.peek()[1].lower() == "or":
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self):
        node = self.negation()
        while self.peek()[1] and self.peek()[1].lower() == "and":
            self.take()
            node = ("and", node, self.negation())
        return node

    def negation(self):
        if self.peek()[1] and self.peek()[1].lower() == "not":
            self.take()
            return ("not", self.negation())
        return self.comparison()

    def comparison(self):
        left = self.atom()
        kind, value = self.peek()
        if kind == "op" and value in ("=", "!=", "<", "<=", ">", ">="):
            self.take()
            return ("cmp", value, left, self.atom())
        if kind == "name" and value.lower() == "like":
            self.take()
            pattern_kind, pattern = self.take()
            if pattern_kind == "regex":
                return ("like", left, re.compile(pattern[1:-1]))
            if pattern_kind == "str":
                return ("like", left, re.compile(re.escape(pattern[1:-1])))
            raise ValueError(f"like takes /regex/ or a string, not {pattern!r}")
        return left

    def atom(self):
        kind, value = self.take()
        if kind == "op" and value == "(":
            node = self.disjunction()
            if self.take()[1] != ")":
                raise ValueError("unbalanced parentheses")
            return node
        if kind == "str":
            return ("lit", value[1:-1])
        if kind == "num":
            return ("lit", float(value))
        if kind == "name":
            if self.peek()[1] == "(":
                self.take()
                args = []
                while self.peek()[1] != ")":
                    args.append(self.disjunction())
                    if self.peek()[1] == ",":
                        self.take()
                self.take()
                return ("call", value.lower(), args)
            return ("field", value)
        raise ValueError(f"unexpected {value!r}")


def _value(node, event: Event):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "field":
        return event.fields.get(node[1])
    if kind == "call":
        name, args = node[1], node[2]
        if name == "ispresent":
            return args[0][0] == "field" and args[0][1] in event.fields
        raise ValueError(f"function {name}() is not supported in a filter here")
    if kind == "not":
        return not _truth(node[1], event)
    if kind in ("and", "or"):
        left, right = _truth(node[1], event), _truth(node[2], event)
        return (left and right) if kind == "and" else (left or right)
    if kind == "like":
        value = _value(node[1], event)
        return value is not None and bool(node[2].search(str(value)))
    if kind == "cmp":
        op, left, right = node[1], _value(node[2], event), _value(node[3], event)
        if left is None or right is None:
            return False  # a comparison with a field the event lacks holds for no operator
        if isinstance(left, bool) or isinstance(right, bool):
            left, right = _bool_number(left), _bool_number(right)
        if isinstance(left, (int, float)) and isinstance(right, str):
            right = _number(right)
        if isinstance(right, (int, float)) and isinstance(left, str):
            left = _number(left)
        if left is None or right is None:
            return False
        return {"=": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
                ">": left > right, ">=": left >= right}[op]
    raise ValueError(f"cannot evaluate {node!r}")


def _bool_number(value):
    return float(value) if isinstance(value, bool) else value


def _as_number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return _number(value) if isinstance(value, str) else None


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _truth(node, event: Event) -> bool:
    return bool(_value(node, event))


# ---- commands ------------------------------------------------------------------------------------------


def _split_commands(query: str) -> list[str]:
    lines = [line for line in query.splitlines() if not line.strip().startswith("#")]
    text = " ".join(lines)
    parts, depth, current, quote = [], 0, "", None
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'/":
            quote = ch if ch != "/" or (current.rstrip().lower().endswith("like")) else None
            current += ch
            continue
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        current += ch
    parts.append(current.strip())
    parts = [p for p in parts if p]
    if parts and parts[0].upper().startswith("SOURCE "):
        parts = parts[1:]
    return parts


def _split_args(text: str) -> list[str]:
    out, depth, current, quote = [], 0, "", None
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        current += ch
    if current.strip():
        out.append(current.strip())
    return out


def _name_and_alias(item: str) -> tuple[str, str]:
    match = re.fullmatch(r"(.+?)\s+as\s+([@\w.]+)", item.strip(), re.IGNORECASE)
    return (match.group(1).strip(), match.group(2)) if match else (item.strip(), item.strip())


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _aggregate(spec: str, rows: list[Event]):
    match = re.fullmatch(r"(\w+)\((.*)\)", spec.strip())
    if not match:
        raise ValueError(f"not an aggregate: {spec!r}")
    fn, args = match.group(1).lower(), _split_args(match.group(2))
    if fn == "count" and not args:
        return len(rows)
    name = args[0]
    values = [r.fields[name] for r in rows if name in r.fields]
    # JSON strings that hold numbers (the access log quotes most of its values) count as numbers.
    numbers = [n for n in (_as_number(v) for v in values) if n is not None]
    if fn == "count":
        return len(values)
    if not numbers:
        return None
    if fn == "sum":
        return math.fsum(numbers)
    if fn == "avg":
        return math.fsum(numbers) / len(numbers)
    if fn == "min":
        return min(numbers)
    if fn == "max":
        return max(numbers)
    if fn == "pct":
        return _percentile(numbers, float(args[1]))
    raise ValueError(f"aggregate {fn}() is not supported here")


def _group_key(expr: str, event: Event):
    bin_match = re.fullmatch(r"bin\((\d+)([smhd])\)", expr.strip())
    if bin_match:
        size = int(bin_match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[bin_match.group(2)]
        return math.floor(event.fields.get("@timestamp", 0) / size) * size
    return event.fields.get(expr.strip())


def run(query: str, events: list[Event]) -> list[dict]:
    """The query's result rows (dicts of field -> value), as Logs Insights would return them."""
    rows = list(events)
    aggregated: list[dict] | None = None
    shown: list[str] | None = None
    for command in _split_commands(query):
        verb, _, rest = command.partition(" ")
        verb = verb.lower()
        if verb == "fields":
            shown = [_name_and_alias(item)[0] for item in _split_args(rest)]
        elif verb == "filter":
            expr = _Expr(rest)
            if aggregated is not None:
                raise ValueError("filter after stats is not supported here")
            rows = [r for r in rows if _truth(expr.tree, r)]
        elif verb == "parse":
            match = re.fullmatch(r"(\S+)\s+\"(.*)\"\s+as\s+(.+)", rest.strip())
            if not match:
                raise ValueError(f"parse {rest!r} is not supported here")
            source, pattern, names = match.group(1), match.group(2), [n.strip() for n in match.group(3).split(",")]
            parts = pattern.split("*")
            # Each '*' captures lazily; a trailing '*' captures to the end of the value.
            body = "(.*?)".join(re.escape(p) for p in parts[:-1])
            regex = re.compile(body + ("(.*)" if parts[-1] == "" else "(.*?)" + re.escape(parts[-1]))
                               if len(parts) > 1 else re.escape(pattern))
            for row in rows:
                found = regex.search(str(row.fields.get(source, "")))
                if found:
                    for name, value in zip(names, found.groups()):
                        row.fields[name] = value
        elif verb == "stats":
            by_match = re.search(r"\s+by\s+(.+)$", rest)
            aggregates = _split_args(rest[: by_match.start()] if by_match else rest)
            groups = _split_args(by_match.group(1)) if by_match else []
            buckets: dict = {}
            for row in rows:
                key = tuple(_group_key(g, row) for g in groups)
                buckets.setdefault(key, []).append(row)
            aggregated = []
            for key, members in buckets.items():
                out = {_name_and_alias(g)[1]: k for g, k in zip(groups, key)}
                for spec in aggregates:
                    expr, alias = _name_and_alias(spec)
                    out[alias] = _aggregate(expr, members)
                aggregated.append(out)
        elif verb == "sort":
            parts = rest.split()
            key, descending = parts[0], len(parts) > 1 and parts[1].lower() == "desc"
            if aggregated is not None:
                aggregated.sort(key=lambda r: _sort_value(r.get(key)), reverse=descending)
            else:
                rows.sort(key=lambda r: _sort_value(r.fields.get(key)), reverse=descending)
        elif verb == "limit":
            n = int(rest.strip())
            if aggregated is not None:
                aggregated = aggregated[:n]
            else:
                rows = rows[:n]
        elif verb == "display":
            shown = [item.strip() for item in _split_args(rest)]
        else:
            raise ValueError(f"command {verb!r} is not supported here")
    if aggregated is not None:
        return aggregated
    if shown:
        return [{name: r.fields.get(name) for name in shown} for r in rows]
    return [dict(r.fields) for r in rows]


def _sort_value(value):
    """Numbers before text, both before missing values (which sort last either way round in Logs
    Insights; here they follow the direction, which the queries never rely on)."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (1, 0.0, str(value))
