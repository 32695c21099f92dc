"""Read what dashboards, alarms and runbooks refer to: metrics (plain, SEARCH, Metrics Insights), alarms
and Logs Insights queries with the fields they use. Pure parsing, no checks: the tests decide what is
allowed. Must stay strict: a construct it does not understand is an error, never silently skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MetricRef:
    """One metric a widget or alarm reads."""

    where: str
    namespace: str
    metric: str
    # The exact dimension set of the series read (SCHEMA / SEARCH schema / plain dimensions).
    dimensions: frozenset[str]
    # Dimension values the reference pins (plain dimensions, WHERE, SEARCH terms).
    values: dict[str, str] = field(default_factory=dict)
    # Dimensions grouped by (Metrics Insights GROUP BY).
    group_by: tuple[str, ...] = ()
    # The statistic or Metrics Insights function.
    statistic: str = ""


@dataclass
class LogQuery:
    where: str
    log_group: str
    query: str


class ParseError(ValueError):
    pass


# ---- metrics -------------------------------------------------------------------------------------------

_MI = re.compile(
    r"^\s*SELECT\s+(?P<fn>[A-Z]+)\((?P<metric>[A-Za-z0-9_]+)\)\s+FROM\s+SCHEMA\((?P<schema>[^)]*)\)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+GROUP\s+BY\s+(?P<group>.+?))?"
    r"(?:\s+ORDER\s+BY\s+.+?)?(?:\s+LIMIT\s+\d+)?\s*$",
    re.IGNORECASE,
)
_CONDITION = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*'([^']*)'\s*$")
_SEARCH = re.compile(r"^\s*SEARCH\(\s*'\{(?P<schema>[^}]*)\}\s*(?P<terms>[^']*)'\s*,\s*'(?P<stat>[A-Za-z0-9.]+)'\s*,\s*\d+\s*\)\s*$")
_TERM = re.compile(r'([A-Za-z0-9_]+)="([^"]*)"')


def _unquote(token: str) -> str:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return token


def is_metrics_insights(expression: str) -> bool:
    return expression.lstrip().upper().startswith("SELECT ")


def is_search(expression: str) -> bool:
    return expression.lstrip().upper().startswith("SEARCH(")


def parse_metrics_insights(expression: str, where: str) -> MetricRef:
    match = _MI.match(expression)
    if not match:
        raise ParseError(f"{where}: not a Metrics Insights query this parser understands: {expression!r}")
    schema = [_unquote(part) for part in match["schema"].split(",")]
    values: dict[str, str] = {}
    if match["where"]:
        for condition in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE):
            cond = _CONDITION.match(condition)
            if not cond:
                raise ParseError(f"{where}: unsupported WHERE condition {condition!r}")
            values[cond[1]] = cond[2]
    group = tuple(part.strip() for part in match["group"].split(",")) if match["group"] else ()
    return MetricRef(
        where=where,
        namespace=schema[0],
        metric=match["metric"],
        dimensions=frozenset(schema[1:]),
        values=values,
        group_by=group,
        statistic=match["fn"].upper(),
    )


def parse_search(expression: str, where: str) -> MetricRef:
    match = _SEARCH.match(expression)
    if not match:
        raise ParseError(f"{where}: not a SEARCH expression this parser understands: {expression!r}")
    schema = [part.strip() for part in match["schema"].split(",")]
    terms = dict(_TERM.findall(match["terms"]))
    leftover = _TERM.sub("", match["terms"]).strip()
    if leftover:
        raise ParseError(f"{where}: unsupported SEARCH terms {leftover!r}")
    if "MetricName" not in terms:
        raise ParseError(f"{where}: SEARCH without MetricName=\"...\": {expression!r}")
    metric = terms.pop("MetricName")
    return MetricRef(
        where=where,
        namespace=schema[0],
        metric=metric,
        dimensions=frozenset(schema[1:]),
        values=terms,
        statistic=match["stat"],
    )


def parse_expression(expression: str, where: str) -> MetricRef | None:
    """A metric reference for SEARCH / Metrics Insights; None for metric math over other ids."""
    if is_metrics_insights(expression):
        return parse_metrics_insights(expression, where)
    if is_search(expression):
        return parse_search(expression, where)
    if re.search(r"\b(SELECT|SEARCH|FROM|SCHEMA)\b", expression, re.IGNORECASE):
        raise ParseError(f"{where}: cannot parse {expression!r}")
    return None


def widget_metric_refs(widget: dict, where: str) -> list[MetricRef]:
    props = widget.get("properties", {})
    default_stat = props.get("stat", "Average")
    refs: list[MetricRef] = []
    for index, row in enumerate(props.get("metrics", [])):
        here = f"{where} metrics[{index}]"
        options = row[-1] if row and isinstance(row[-1], dict) else {}
        plain = [item for item in row if not isinstance(item, dict)]
        if "expression" in options:
            if plain:
                raise ParseError(f"{here}: an expression row must hold only its options")
            ref = parse_expression(options["expression"], here)
            if ref:
                refs.append(ref)
            continue
        if any(item == "." or item == "..." for item in plain):
            raise ParseError(f"{here}: write rows out in full (no '.' shorthand) so they can be checked")
        if len(plain) < 2 or len(plain) % 2:
            raise ParseError(f"{here}: expected [namespace, metric, (dimension, value)*, options?]: {row!r}")
        namespace, metric, *pairs = plain
        values = dict(zip(pairs[0::2], pairs[1::2], strict=True))
        refs.append(
            MetricRef(
                where=here,
                namespace=namespace,
                metric=metric,
                dimensions=frozenset(values),
                values=values,
                statistic=options.get("stat", default_stat),
            )
        )
    return refs


def dashboard_metric_refs(body: dict, name: str) -> list[MetricRef]:
    refs: list[MetricRef] = []
    for index, widget in enumerate(body["widgets"]):
        if widget["type"] == "metric":
            title = widget["properties"].get("title", "")
            refs.extend(widget_metric_refs(widget, f"{name} widget {index} ({title})"))
    return refs


def alarm_metric_refs(name: str, props: dict) -> list[MetricRef]:
    """References of one alarm's CloudFormation properties (variables still `${...}`)."""
    if "MetricName" in props:
        dimensions = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
        return [
            MetricRef(
                where=name,
                namespace=props["Namespace"],
                metric=props["MetricName"],
                dimensions=frozenset(dimensions),
                values=dimensions,
                statistic=props.get("Statistic") or props.get("ExtendedStatistic", ""),
            )
        ]
    refs = []
    for query in props.get("Metrics", []):
        here = f"{name} {query['Id']}"
        if "MetricStat" in query:
            stat = query["MetricStat"]
            metric = stat["Metric"]
            dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            refs.append(
                MetricRef(
                    where=here,
                    namespace=metric["Namespace"],
                    metric=metric["MetricName"],
                    dimensions=frozenset(dimensions),
                    values=dimensions,
                    statistic=stat["Stat"],
                )
            )
        elif "Expression" in query:
            ref = parse_expression(query["Expression"], here)
            if ref:
                refs.append(ref)
        else:
            raise ParseError(f"{here}: neither MetricStat nor Expression")
    return refs


def dashboard_alarm_arns(body: dict) -> list[str]:
    arns: list[str] = []
    for widget in body["widgets"]:
        if widget["type"] == "alarm":
            arns.extend(widget["properties"]["alarms"])
        if widget["type"] == "metric" and "annotations" in widget["properties"]:
            arns.extend(widget["properties"]["annotations"].get("alarms", []))
    return arns


# ---- Logs Insights -----------------------------------------------------------------------------------------

_SOURCE = re.compile(r"^\s*SOURCE\s+'([^']+)'\s*\|\s*(.*)$", re.DOTALL)


def dashboard_log_queries(body: dict, name: str) -> list[LogQuery]:
    queries = []
    for index, widget in enumerate(body["widgets"]):
        if widget["type"] != "log":
            continue
        query = widget["properties"]["query"]
        match = _SOURCE.match(query)
        if not match:
            raise ParseError(f"{name} widget {index}: a log widget query must start with SOURCE '<log group>' |")
        queries.append(LogQuery(f"{name} widget {index} ({widget['properties'].get('title', '')})", match[1], match[2]))
    return queries


_FENCE = re.compile(r"^```logs-insights\n(.*?)^```", re.MULTILINE | re.DOTALL)
_GROUP_COMMENT = re.compile(r"^#\s*log group:\s*(\S+)\s*$")


def runbook_log_queries(path: Path) -> list[LogQuery]:
    """```logs-insights blocks; each opens with `# log group: NAME`."""
    queries = []
    for index, block in enumerate(_FENCE.findall(path.read_text(encoding="utf-8"))):
        lines = block.strip().splitlines()
        match = _GROUP_COMMENT.match(lines[0]) if lines else None
        if not match:
            raise ParseError(f"{path.name} query {index}: first line must be `# log group: NAME`")
        body = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        queries.append(LogQuery(f"{path.name} query {index}", match[1], body))
    return queries


_COMMANDS = {"fields", "filter", "stats", "sort", "limit", "display", "parse", "dedup", "unmask", "pattern", "diff"}
_KEYWORDS = {"by", "as", "and", "or", "not", "in", "like", "desc", "asc", "true", "false", "null"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_REGEX = re.compile(r"(?<![\w)])/(?:[^/\\\n]|\\.)+/")
_WORD = re.compile(r"(?<![\w@.])@?[A-Za-z_][A-Za-z0-9_.]*")


def query_fields(query: str) -> set[str]:
    """The log fields a Logs Insights query reads (not the names it defines with `as`)."""
    fields: set[str] = set()
    defined: set[str] = set()
    # Strings and regexes first (they may hold `|`), then split into commands.
    masked = _REGEX.sub(" ", _STRING.sub(" ", query))
    for segment in masked.split("|"):
        segment = segment.strip()
        if not segment:
            continue
        command, _, text = segment.partition(" ")
        if command.lower() not in _COMMANDS:
            raise ParseError(f"unknown Logs Insights command {command!r} in {segment!r}")
        defined.update(re.findall(r"\bas\s+([A-Za-z_][A-Za-z0-9_]*)", text))
        for match in _WORD.finditer(text):
            word = match.group(0)
            after = text[match.end() :].lstrip()
            if after.startswith("("):
                continue  # a function name
            if word.lower() in _KEYWORDS:
                continue
            fields.add(word)
    return fields - defined
