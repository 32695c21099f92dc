"""CloudWatch alarm semantics, offline: the evaluator that the alarm tests (alarms/tests/) and the incident
drills run the relay's alarms through.

What it implements, as AWS documents it ("Using Amazon CloudWatch alarms", "Metric math syntax",
"Metrics Insights query components"), for what alarms/alarms.yaml and the SLO alarms use:

- metric data: samples (time, value, count) of series named by namespace, metric name and dimensions; a
  period's datapoint is a statistic of the samples in it (Sum, Average, Minimum, Maximum, SampleCount, pNN,
  and the percentile rank PR(low:high), the percent of values v with low < v <= high);
- a metric alarm: Period, EvaluationPeriods (N), DatapointsToAlarm (M), the four comparison operators
  and the four TreatMissingData modes, evaluated over an evaluation range of N + 2 periods that slides
  (it ends at the last whole minute however long the period is: CloudWatch's default SlidingWindow), with
  AWS's rules for missing data (`alarm_state`; every row of AWS's two example tables is a test in alarm_tests.py);
  alarms on AWS/DynamoDB metrics always ignore missing data, as AWS says they do;
- metric math (`Metrics` with `Expression`): numbers, ids, + - * /, comparisons, AND/OR/NOT, IF, FILL,
  and SUM/AVG/MIN/MAX over arrays of series; a missing operand makes the result missing, except in FILL;
- the Metrics Insights subset `SELECT FN(metric) FROM SCHEMA(namespace, dim, ...) [WHERE dim = 'v'
  [AND ...]]` with FN one of SUM, AVG, MIN, MAX, COUNT;
- composite alarm rules: ALARM(name), OK(name), INSUFFICIENT_DATA(name), TRUE, FALSE, AND, OR, NOT and
  parentheses.

Alarms are evaluated once a minute, as CloudWatch does, and only on complete minutes.
It must never guess: anything outside this subset raises ValueError naming what is not supported.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field

OK, ALARM, INSUFFICIENT = "OK", "ALARM", "INSUFFICIENT_DATA"
STATES = (OK, ALARM, INSUFFICIENT)
MISSING_MODES = ("missing", "ignore", "breaching", "notBreaching")
EVALUATION_STEP = 60  # seconds between evaluations of an alarm


@dataclass(frozen=True)
class MetricId:
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]

    @staticmethod
    def of(namespace: str, name: str, dimensions: dict[str, str] | None = None) -> "MetricId":
        return MetricId(namespace, name, tuple(sorted((dimensions or {}).items())))

    def dims(self) -> dict[str, str]:
        return dict(self.dimensions)


@dataclass
class MetricStore:
    """Every sample of every series: {MetricId: [(time in seconds, value, count), ...]}. A sample with a
    count above 1 stands for that many equal values (a statistic set, as PutMetricData's Values/Counts
    send them), so a day of a busy API is a few thousand samples, not millions."""

    series: dict[MetricId, list[tuple[float, float, int]]] = field(default_factory=dict)
    _index: dict[MetricId, "_Index"] = field(default_factory=dict)

    def put(self, metric: MetricId, time: float, value: float, count: int = 1) -> None:
        if count < 1:
            raise ValueError(f"a sample stands for at least one value, not {count}")
        self.series.setdefault(metric, []).append((time, value, count))
        self._index.pop(metric, None)

    def _indexed(self, metric: MetricId) -> "_Index | None":
        samples = self.series.get(metric)
        if not samples:
            return None
        index = self._index.get(metric)
        if index is None:
            samples.sort(key=lambda sample: sample[0])
            index = self._index[metric] = _Index(samples)
        return index

    def samples(self, metric: MetricId, start: float, end: float) -> list[tuple[float, int]]:
        """(value, count) of every sample with start <= time < end."""
        index = self._indexed(metric)
        if index is None:
            return []
        lo, hi = index.span(start, end)
        return [(v, c) for _, v, c in index.samples[lo:hi]]

    def statistic(self, metric: MetricId, start: float, end: float, stat: str) -> float | None:
        """One period's datapoint: Sum, SampleCount, Average and PR from running totals (a day-long period
        evaluated every minute stays cheap), the others from the samples."""
        index = self._indexed(metric)
        if index is None:
            return None
        lo, hi = index.span(start, end)
        if lo == hi:
            return None
        count = index.counts[hi] - index.counts[lo]
        total = index.sums[hi] - index.sums[lo]
        if stat == "Sum":
            return total
        if stat == "SampleCount":
            return float(count)
        if stat == "Average":
            return total / count
        rank = _percentile_rank(stat)
        if rank is not None:
            within = index.within(*rank)
            return 100.0 * (within[hi] - within[lo]) / count
        return statistic([(v, c) for _, v, c in index.samples[lo:hi]], stat)


class _Index:
    """Sample times and running totals of one series (kept in time order)."""

    def __init__(self, samples: list[tuple[float, float, int]]):
        self.samples = samples
        self.times = [t for t, _, _ in samples]
        self.counts = [0]
        self.sums = [0.0]
        for _, value, count in samples:
            self.counts.append(self.counts[-1] + count)
            self.sums.append(self.sums[-1] + value * count)
        self._within: dict[tuple[float, float], list[int]] = {}

    def span(self, start: float, end: float) -> tuple[int, int]:
        return bisect.bisect_left(self.times, start), bisect.bisect_left(self.times, end)

    def within(self, low: float, high: float) -> list[int]:
        """Running count of the values v with low < v <= high."""
        key = (low, high)
        if key not in self._within:
            running = [0]
            for _, value, count in self.samples:
                running.append(running[-1] + (count if low < value <= high else 0))
            self._within[key] = running
        return self._within[key]


_PERCENTILE_RANK = re.compile(r"PR\((?P<low>-?\d+(?:\.\d+)?)?:(?P<high>-?\d+(?:\.\d+)?)?\)")


def _percentile_rank(stat: str) -> tuple[float, float] | None:
    """`PR(:300)` -> (-inf, 300): the share, in percent, of values v with low < v <= high."""
    match = _PERCENTILE_RANK.fullmatch(stat)
    if not match:
        return None
    low, high = match.group("low"), match.group("high")
    if low is None and high is None:
        raise ValueError(f"{stat}: a percentile rank needs a bound")
    return (float(low) if low else -math.inf, float(high) if high else math.inf)


def statistic(samples: list[tuple[float, int]], stat: str) -> float | None:
    """One period's datapoint from its (value, count) samples; None when there are none."""
    if not samples:
        return None
    count = sum(c for _, c in samples)
    if stat == "Sum":
        return math.fsum(v * c for v, c in samples)
    if stat == "Average":
        return math.fsum(v * c for v, c in samples) / count
    if stat == "Minimum":
        return min(v for v, _ in samples)
    if stat == "Maximum":
        return max(v for v, _ in samples)
    if stat == "SampleCount":
        return float(count)
    rank = _percentile_rank(stat)
    if rank is not None:
        return 100.0 * sum(c for v, c in samples if rank[0] < v <= rank[1]) / count
    match = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
    if match:
        # Nearest rank, as CloudWatch computes percentiles from raw samples.
        wanted = max(1, math.ceil(float(match.group(1)) / 100 * count))
        seen = 0
        for value, c in sorted(samples):
            seen += c
            if seen >= wanted:
                return value
    raise ValueError(f"statistic {stat!r} is not supported")


Series = list  # a list of datapoints (float or None), one per period of an evaluation range


# ---- metric math ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>>=|<=|==|!=|&&|\|\||[-+*/(),<>\[\]!]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read metric math at {text[pos:]!r}")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _MathParser:
    """Recursive descent over the metric math grammar; evaluates as it parses (the expressions are tiny)."""

    FUNCTIONS = ("IF", "FILL", "SUM", "AVG", "MIN", "MAX", "ABS")

    def __init__(self, text: str, values: dict[str, Series], length: int):
        self.tokens = _tokens(text)
        self.at = 0
        self.values = values
        self.length = length

    def parse(self):
        result = self.logic()
        if self.at != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.at][1]!r} in metric math")
        return result

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        if self.at >= len(self.tokens):
            raise ValueError("metric math ends early")
        value = self.tokens[self.at][1]
        if expected is not None and value.upper() != expected:
            raise ValueError(f"expected {expected!r}, found {value!r}")
        self.at += 1
        return value

    def logic(self):
        left = self.comparison()
        while self.peek() is not None and self.peek().upper() in ("AND", "OR", "&&", "||"):
            op = self.take().upper()
            right = self.comparison()
            both = op in ("AND", "&&")
            left = _zip(left, right, lambda a, b: float(bool(a) and bool(b)) if both else float(bool(a) or bool(b)))
        return left

    def comparison(self):
        left = self.additive()
        ops = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
               "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
        while self.peek() in ops:
            fn = ops[self.take()]
            right = self.additive()
            left = _zip(left, right, lambda a, b, fn=fn: float(fn(a, b)))
        return left

    def additive(self):
        left = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            left = _zip(left, right, (lambda a, b: a + b) if op == "+" else (lambda a, b: a - b))
        return left

    def term(self):
        left = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.unary()
            if op == "*":
                left = _zip(left, right, lambda a, b: a * b)
            else:
                # CloudWatch returns no datapoint for a division by zero.
                left = _zip(left, right, lambda a, b: a / b if b != 0 else None)
        return left

    def unary(self):
        if self.peek() == "-":
            self.take()
            return _map(self.unary(), lambda a: -a)
        if self.peek() is not None and self.peek().upper() in ("NOT", "!"):
            self.take()
            return _map(self.unary(), lambda a: float(not a))
        return self.primary()

    def primary(self):
        token = self.peek()
        if token is None:
            raise ValueError("metric math ends early")
        kind = self.tokens[self.at][0]
        if token == "(":
            self.take()
            value = self.logic()
            self.take(")")
            return value
        if token == "[":
            self.take()
            items = [self.logic()]
            while self.peek() == ",":
                self.take()
                items.append(self.logic())
            self.take("]")
            return ("array", items)
        if kind == "num":
            self.take()
            return float(token)
        if kind == "id":
            self.take()
            if self.peek() == "(" and token.upper() in self.FUNCTIONS:
                self.take("(")
                args = [self.logic()]
                while self.peek() == ",":
                    self.take()
                    args.append(self.logic())
                self.take(")")
                return self.call(token.upper(), args)
            if self.peek() == "(":
                raise ValueError(f"metric math function {token} is not supported")
            if token not in self.values:
                raise ValueError(f"metric math names {token!r}, which no metric of the alarm has as Id")
            return list(self.values[token])
        raise ValueError(f"unexpected {token!r} in metric math")

    def call(self, name: str, args: list):
        if name == "IF":
            if len(args) not in (2, 3):
                raise ValueError("IF takes 2 or 3 arguments")
            cond, then = args[0], args[1]
            other = args[2] if len(args) == 3 else None
            return [
                None if c is None else (t if c else o)
                for c, t, o in zip(self._series(cond), self._series(then), self._series(other))
            ]
        if name == "FILL":
            if len(args) != 2 or not isinstance(args[1], float):
                raise ValueError("FILL takes a series and a number here")
            return [args[1] if v is None else v for v in self._series(args[0])]
        if name == "ABS":
            return _map(args[0], abs)
        # SUM / AVG / MIN / MAX of one array: per period, over the series present then.
        if len(args) != 1 or not (isinstance(args[0], tuple) and args[0][0] == "array"):
            raise ValueError(f"{name} takes one array of series here")
        columns = zip(*(self._series(item) for item in args[0][1]))
        out = []
        for column in columns:
            present = [v for v in column if v is not None]
            if not present:
                out.append(None)
            elif name == "SUM":
                out.append(math.fsum(present))
            elif name == "AVG":
                out.append(math.fsum(present) / len(present))
            elif name == "MIN":
                out.append(min(present))
            else:
                out.append(max(present))
        return out

    def _series(self, value) -> list:
        if value is None:
            return [None] * self.length
        if isinstance(value, float):
            return [value] * self.length
        if isinstance(value, tuple):
            raise ValueError("an array is only allowed inside SUM, AVG, MIN or MAX")
        return value


def _map(value, fn):
    if isinstance(value, float):
        return fn(value)
    return [None if v is None else fn(v) for v in value]


def _zip(left, right, fn):
    if isinstance(left, float) and isinstance(right, float):
        return fn(left, right)
    length = len(left) if isinstance(left, list) else len(right)
    a = left if isinstance(left, list) else [left] * length
    b = right if isinstance(right, list) else [right] * length
    return [None if x is None or y is None else fn(x, y) for x, y in zip(a, b)]


def evaluate_math(expression: str, values: dict[str, Series], length: int) -> Series:
    result = _MathParser(expression, values, length).parse()
    if isinstance(result, float):
        return [result] * length
    if isinstance(result, tuple):
        raise ValueError("an alarm's expression must return one series, not an array")
    return result


# ---- Metrics Insights --------------------------------------------------------------------------------

_INSIGHTS = re.compile(
    r"\s*SELECT\s+(?P<fn>SUM|AVG|MIN|MAX|COUNT)\((?P<metric>[\"\w.]+)\)\s+FROM\s+SCHEMA\((?P<schema>[^)]*)\)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE,
)
_CONDITION = re.compile(r"\s*(?P<key>[\"\w.]+)\s*(?P<op>=|!=)\s*'(?P<value>[^']*)'\s*")
_NATURAL_STAT = {"SUM": "Sum", "AVG": "Average", "MIN": "Minimum", "MAX": "Maximum", "COUNT": "SampleCount"}


def _unquote(text: str) -> str:
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == '"' and text[-1] == '"' else text


def insights_query(store: MetricStore, query: str, period: int, starts: list[float]) -> Series:
    """One datapoint per period start: the query's aggregate over every series its schema and filter match."""
    match = _INSIGHTS.fullmatch(query)
    if not match:
        raise ValueError(f"Metrics Insights query not supported here: {query!r}")
    fn = match.group("fn").upper()
    metric = _unquote(match.group("metric"))
    schema = [_unquote(part) for part in match.group("schema").split(",")]
    namespace, keys = schema[0], set(schema[1:])
    conditions = []
    if match.group("where"):
        for part in re.split(r"\s+AND\s+", match.group("where"), flags=re.IGNORECASE):
            cond = _CONDITION.fullmatch(part)
            if not cond:
                raise ValueError(f"WHERE condition not supported here: {part!r}")
            conditions.append((_unquote(cond.group("key")), cond.group("op"), cond.group("value")))
    matching = []
    for metric_id in store.series:
        dims = metric_id.dims()
        if metric_id.namespace != namespace or metric_id.name != metric or set(dims) != keys:
            continue
        if all((dims.get(k) == v) == (op == "=") for k, op, v in conditions):
            matching.append(metric_id)
    out = []
    for start in starts:
        per_series = [store.samples(m, start, start + period) for m in matching]
        per_series = [s for s in per_series if s]
        if not per_series:
            out.append(None)
        elif fn == "AVG":
            out.append(statistic([sample for s in per_series for sample in s], "Average"))
        else:
            values = [statistic(s, _NATURAL_STAT[fn]) for s in per_series]
            combine = {"SUM": math.fsum, "COUNT": math.fsum, "MIN": min, "MAX": max}[fn]
            out.append(combine(values))
    return out


# ---- alarms --------------------------------------------------------------------------------------------


def _breaches(value: float, operator: str, threshold: float) -> bool:
    return {
        "GreaterThanThreshold": value > threshold,
        "GreaterThanOrEqualToThreshold": value >= threshold,
        "LessThanThreshold": value < threshold,
        "LessThanOrEqualToThreshold": value <= threshold,
    }[operator]


def alarm_state(datapoints: Series, props: dict, current: str) -> str:
    """The state an alarm goes to, given its evaluation range (oldest first, None = missing).

    AWS's rules: with at least N real datapoints in the range, the most recent N decide and the
    missing-data setting is not used. With fewer, `breaching`/`notBreaching` fill in as few missing
    datapoints as needed to make N, real ones all included; `missing` and `ignore` judge the real ones
    alone: M breaching is ALARM, any non-breaching one is OK, none at all is INSUFFICIENT_DATA (missing)
    or the current state (ignore), and only-breaching-but-fewer-than-M is ALARM for `missing` when the
    oldest of them is at least M periods old (AWS's rule against premature transitions), else
    INSUFFICIENT_DATA; `ignore` keeps the current state then.
    """
    n = int(props["EvaluationPeriods"])
    m = int(props.get("DatapointsToAlarm", n))
    operator, threshold = props["ComparisonOperator"], float(props["Threshold"])
    mode = props.get("TreatMissingData", "missing")
    if mode not in MISSING_MODES:
        raise ValueError(f"TreatMissingData {mode!r} is not one of {MISSING_MODES}")
    real = [(age, v) for age, v in enumerate(reversed(datapoints), start=1) if v is not None]
    if len(real) >= n:
        breaching = sum(_breaches(v, operator, threshold) for _, v in real[:n])
        return ALARM if breaching >= m else OK
    if mode in ("breaching", "notBreaching"):
        breaching = sum(_breaches(v, operator, threshold) for _, v in real)
        if mode == "breaching":
            breaching += n - len(real)
        return ALARM if breaching >= m else OK
    if not real:
        return INSUFFICIENT if mode == "missing" else current
    breaching = [age for age, v in real if _breaches(v, operator, threshold)]
    if len(breaching) >= m:
        return ALARM
    if len(breaching) < len(real):
        return OK
    if mode == "ignore":
        return current
    return ALARM if max(breaching) >= m else INSUFFICIENT


def _metric_id(stat: dict) -> MetricId:
    metric = stat["Metric"]
    dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
    return MetricId.of(metric["Namespace"], metric["MetricName"], dims)


def _namespaces(props: dict) -> set[str]:
    if "Namespace" in props:
        return {props["Namespace"]}
    found = set()
    for entry in props.get("Metrics", []):
        if "MetricStat" in entry:
            found.add(entry["MetricStat"]["Metric"]["Namespace"])
        match = _INSIGHTS.fullmatch(entry.get("Expression", "")) if "Expression" in entry else None
        if match:
            found.add(_unquote(match.group("schema").split(",")[0]))
    return found


def alarm_period(props: dict) -> int:
    if "Period" in props:
        return int(props["Period"])
    periods = {int(e["MetricStat"]["Period"]) for e in props["Metrics"] if "MetricStat" in e}
    periods |= {int(e["Period"]) for e in props["Metrics"] if "Period" in e}
    if len(periods) != 1:
        raise ValueError(f"an alarm's metrics must share one period, found {sorted(periods)}")
    return periods.pop()


def evaluation_range(store: MetricStore, props: dict, now: float) -> Series:
    """The alarm's datapoints for the N + 2 periods before `now`, oldest first. CloudWatch's default
    (and only here) evaluation window slides: the periods end at the last whole minute, whatever their
    length, so an hour-long period evaluated every minute is the last 60 minutes each time."""
    if "WallClockWindow" in (props.get("EvaluationWindow") or {}):
        raise ValueError("EvaluationWindow WallClockWindow is not supported here")
    period = alarm_period(props)
    n = int(props["EvaluationPeriods"])
    last_end = math.floor(now / EVALUATION_STEP) * EVALUATION_STEP
    starts = [last_end - period * (k + 1) for k in reversed(range(n + 2))]
    if "Metrics" not in props:
        stat = props.get("ExtendedStatistic") or props["Statistic"]
        metric = MetricId.of(
            props["Namespace"], props["MetricName"], {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
        )
        return [store.statistic(metric, s, s + period, stat) for s in starts]
    values: dict[str, Series] = {}
    returned = []
    for entry in props["Metrics"]:
        if "MetricStat" in entry:
            stat = entry["MetricStat"]
            metric = _metric_id(stat)
            values[entry["Id"]] = [store.statistic(metric, s, s + period, stat["Stat"]) for s in starts]
        elif _INSIGHTS.fullmatch(entry["Expression"]):
            values[entry["Id"]] = insights_query(store, entry["Expression"], period, starts)
        else:
            values[entry["Id"]] = evaluate_math(entry["Expression"], values, len(starts))
        if entry.get("ReturnData", True):
            returned.append(entry["Id"])
    if len(returned) != 1:
        raise ValueError(f"an alarm returns exactly one series, this one returns {returned}")
    return values[returned[0]]


@dataclass
class Alarm:
    """A metric alarm as CloudWatch runs it: its properties and its current state."""

    name: str
    props: dict
    state: str = INSUFFICIENT

    def evaluate(self, store: MetricStore, now: float) -> str:
        props = self.props
        if "AWS/DynamoDB" in _namespaces(props):
            props = {**props, "TreatMissingData": "ignore"}
        self.state = alarm_state(evaluation_range(store, self.props, now), props, self.state)
        return self.state


# ---- composite alarms ------------------------------------------------------------------------------------

_RULE_TOKEN = re.compile(r'\s*(ALARM|OK|INSUFFICIENT_DATA)\s*\(\s*"?([^")]+?)"?\s*\)|\s*(TRUE|FALSE|AND|OR|NOT|\(|\))')


def composite_state(rule: str, states: dict[str, str]) -> str:
    """ALARM when the rule holds over the child alarms' states, else OK."""
    tokens = []
    pos = 0
    while pos < len(rule.strip()):
        match = _RULE_TOKEN.match(rule, pos)
        if not match:
            raise ValueError(f"composite rule not understood at {rule[pos:]!r}")
        if match.group(1):
            name = match.group(2).strip()
            if name not in states:
                raise ValueError(f"composite rule names {name!r}, which is not an alarm here")
            tokens.append(states[name] == match.group(1))
        else:
            tokens.append(match.group(3))
        pos = match.end()
        if rule[pos:].strip() == "":
            break

    def expr(i):
        value, i = term(i)
        while i < len(tokens) and tokens[i] == "OR":
            right, i = term(i + 1)
            value = value or right
        return value, i

    def term(i):
        value, i = factor(i)
        while i < len(tokens) and tokens[i] == "AND":
            right, i = factor(i + 1)
            value = value and right
        return value, i

    def factor(i):
        token = tokens[i]
        if token == "NOT":
            value, i = factor(i + 1)
            return not value, i
        if token == "(":
            value, i = expr(i + 1)
            if tokens[i] != ")":
                raise ValueError("unbalanced parentheses in composite rule")
            return value, i + 1
        if token in ("TRUE", "FALSE"):
            return token == "TRUE", i + 1
        if isinstance(token, bool):
            return token, i + 1
        raise ValueError(f"unexpected {token!r} in composite rule")

    value, end = expr(0)
    if end != len(tokens):
        raise ValueError("trailing tokens in composite rule")
    return ALARM if value else OK
