"""The offline Logs Insights evaluator (logs_insights.py) that the drills run the runbooks' queries with:
each command and expression form the runbooks use, on hand-made lines whose answer is known."""

from __future__ import annotations

import json

import pytest

from logs_insights import Event, run

LINES = [
    {"level": "INFO", "message": "Request finished.", "request_id": "a", "route": "/messages", "status": 200, "latency_ms": 12.0},
    {"level": "ERROR", "message": "Request failed.", "request_id": "b", "route": "/messages", "status": 503, "latency_ms": 2400.0},
    {"level": "ERROR", "message": "Store operation failed.", "request_id": "b", "op": "get_message", "error_code": "busy"},
    {"level": "INFO", "message": "Request finished.", "request_id": "c", "route": "/saved", "status": 401, "latency_ms": 3.0},
]
EMF = {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "Relay", "Dimensions": [["env", "op"]],
                                                        "Metrics": [{"Name": "relay_store_errors_total"}]}]},
       "env": "test", "op": "get_message", "error_code": "busy", "relay_store_errors_total": 1}
REPORT = ("REPORT RequestId: 9f1c\tDuration: 2001.50 ms\tBilled Duration: 2002 ms\tMemory Size: 256 MB\t"
          "Max Memory Used: 31 MB\tInit Duration: 95.10 ms\tStatus: timeout")


def events(extra: list[str] = ()) -> list[Event]:
    out = [Event.of(json.dumps(line), 60.0 * i) for i, line in enumerate(LINES)]
    return out + [Event.of(text, 300.0) for text in extra]


def test_filter_compares_numbers_and_strings_and_combines():
    rows = run('fields request_id | filter status >= 400 and route = "/messages"', events())
    assert rows == [{"request_id": "b"}]
    rows = run('fields request_id | filter status = 200 or (status = 401 and not route = "/messages")', events())
    assert [r["request_id"] for r in rows] == ["a", "c"]


def test_a_field_the_line_lacks_matches_no_comparison():
    assert run('filter error_code != "busy"', events()) == []
    assert len(run("filter ispresent(error_code)", events())) == 1


def test_emf_documents_are_lines_with_the_labels_at_top_level():
    """Why the runbooks select store lines by message: EMF documents carry `op` and `error_code` too."""
    with_emf = events([json.dumps(EMF)])
    assert len(run("filter ispresent(op)", with_emf)) == 2
    assert len(run('filter message = "Store operation failed." and error_code = "busy"', with_emf)) == 1


def test_like_takes_a_regex_or_a_substring_and_the_platform_line_is_read():
    rows = run("fields @requestId, @duration | filter @message like /Status: timeout|Task timed out/", events([REPORT]))
    assert rows == [{"@requestId": "9f1c", "@duration": 2001.5}]
    assert len(run('filter @message like "Status: timeout"', events([REPORT]))) == 1
    assert run('filter @type = "REPORT" | stats max(@maxMemoryUsed) as m, count(@initDuration) as cold',
               events([REPORT])) == [{"m": 31_000_000.0, "cold": 1}]


def test_stats_group_aggregate_bin_and_sort():
    rows = run("filter ispresent(status) | stats count() as n, max(latency_ms) as worst by route | sort n desc",
               events())
    assert rows == [{"route": "/messages", "n": 2, "worst": 2400.0}, {"route": "/saved", "n": 1, "worst": 3.0}]
    rows = run("filter ispresent(status) | stats count() as n by bin(2m)", events())
    assert rows == [{"bin(2m)": 0, "n": 2}, {"bin(2m)": 120, "n": 1}]
    assert run("filter ispresent(latency_ms) | stats pct(latency_ms, 50) as p50", events()) == [{"p50": 12.0}]


def test_sort_limit_and_fields():
    rows = run("fields request_id, latency_ms | filter ispresent(latency_ms) | sort latency_ms desc | limit 2",
               events())
    assert rows == [{"request_id": "b", "latency_ms": 2400.0}, {"request_id": "a", "latency_ms": 12.0}]


def test_parse_captures_between_the_literal_parts():
    rows = run('parse @message "Duration: * ms" as took | filter @type = "REPORT" | fields took', events([REPORT]))
    assert rows == [{"took": "2001.50"}]
    rows = run('parse @message "Status: *" as status_text | filter @type = "REPORT" | fields status_text',
               events([REPORT]))
    assert rows == [{"status_text": "timeout"}]


def test_numeric_strings_aggregate_as_numbers():
    access = [Event.of(json.dumps({"requestId": str(i), "responseLatency": str(v)})) for i, v in enumerate([5, 50])]
    assert run("stats max(responseLatency) as worst", access) == [{"worst": 50.0}]


def test_the_dashboard_source_prefix_is_accepted():
    assert len(run("SOURCE '/aws/lambda/relay-${Env}' | filter status = 401", events())) == 1


@pytest.mark.parametrize("query", [
    "filter status in [200, 401]",
    "stats median(latency_ms)",
    "dedup request_id",
    "filter strlen(message) > 3",
])
def test_what_it_does_not_know_it_refuses(query):
    with pytest.raises(ValueError):
        run(query, events())
