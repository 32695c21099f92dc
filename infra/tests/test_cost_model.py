"""The DynamoDB sizing rules `bench/cost.sh` meters with (bench/lib/capacity_units.py), checked on hand-
computed items, and the cost report's arithmetic on known inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "lib"))

import capacity_units as cu  # noqa: E402

INDEX = {
    "IndexName": "by_expiry",
    "KeySchema": [
        {"AttributeName": "expiry_bucket", "KeyType": "HASH"},
        {"AttributeName": "expires_at", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "KEYS_ONLY"},
}
TABLE_KEYS = ["pk", "sk"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("1", 2), ("0", 2), ("12", 2), ("123", 3), ("1000", 2), ("-1.50", 2), ("1796177349863", 8)],
)
def test_a_number_costs_one_byte_per_two_significant_digits_plus_one(text: str, size: int) -> None:
    assert cu.number_size(text) == size


def test_item_size_counts_names_and_values_of_every_type() -> None:
    item = {
        "pk": {"S": "msg#é"},  # 2 + 6 (é is two bytes)
        "n": {"N": "12345"},  # 1 + 4
        "b": {"B": "AAEC"},  # 1 + 3 bytes decoded
        "t": {"BOOL": True},  # 1 + 1
        "z": {"NULL": True},  # 1 + 1
        "l": {"L": [{"S": "ab"}, {"N": "1"}]},  # 1 + 3 + (1 + 2) + (1 + 2)
        "m": {"M": {"k": {"S": "v"}}},  # 1 + 3 + (1 + 1 + 1)
        "ss": {"SS": ["a", "bc"]},  # 2 + 3
    }
    assert cu.item_size(item) == 8 + 5 + 4 + 2 + 2 + 10 + 7 + 5
    assert cu.item_size(None) == 0


def test_read_units_round_up_per_4_kb_and_halve_when_eventually_consistent() -> None:
    assert cu.read_units(0, consistent=True) == 1.0, "an absent item still costs the minimum"
    assert cu.read_units(4096, consistent=True) == 1.0
    assert cu.read_units(4097, consistent=True) == 2.0
    assert cu.read_units(4097, consistent=False) == 1.0
    assert cu.read_units(100, consistent=False) == 0.5
    assert cu.read_units(100, consistent=True, transactional=True) == 2.0


def test_write_units_take_the_larger_item_per_1_kb_and_double_in_a_transaction() -> None:
    assert cu.write_units(0, 0) == 1.0, "a failed condition or an absent item costs the minimum"
    assert cu.write_units(0, 1024) == 1.0
    assert cu.write_units(1025, 10) == 2.0, "the item before counts when it was the larger"
    assert cu.write_units(0, 300, transactional=True) == 2.0
    assert cu.write_units(0, 2048, transactional=True) == 4.0


def message(expires: str | None, body: str = "hello") -> dict:
    item = {"pk": {"S": "msg#1"}, "sk": {"S": "msg"}, "message_body": {"S": body}}
    if expires:
        item |= {"expiry_bucket": {"S": "exp#1#00"}, "expires_at": {"N": expires}}
    return item


def test_an_index_pays_for_entries_put_changed_and_removed_and_nothing_else() -> None:
    def units(before, after):
        return cu.index_write_units(before, after, TABLE_KEYS, INDEX)

    assert units(None, message(None)) == 0.0, "a sparse index ignores items without its key"
    assert units(None, message("100")) == 1.0, "a new entry"
    assert units(message("100"), message("200")) == 2.0, "a changed index key: delete + put"
    assert units(message("100"), message("100", body="other")) == 0.0, "KEYS_ONLY: body not projected"
    assert units(message("100"), None) == 1.0, "a removed entry"
    projected = cu.project(message("100"), TABLE_KEYS, INDEX)
    assert set(projected) == {"pk", "sk", "expiry_bucket", "expires_at"}
    everything = dict(INDEX, Projection={"ProjectionType": "ALL"})
    assert cu.index_write_units(message("1"), message("1", "x"), TABLE_KEYS, everything) == 1.0


def test_the_report_prices_a_million_requests_of_the_mix_item_by_item() -> None:
    import cost

    # Every operation: 1,000 bytes of lines, 500 of EMF, 2 read and 1 write units, 10 ms billed.
    row = {"log_bytes": 1000, "emf_bytes": 500, "rru": 2.0, "wru": 1.0, "billed_ms": 10.0}
    priced = cost.per_million({op: row for op, _ in cost.MIX})
    assert priced["logs: relay lines"] == pytest.approx(1e6 * 1000 / 1e9 * 0.50)
    assert priced["logs: EMF documents"] == pytest.approx(0.25)
    assert priced["DynamoDB reads"] == pytest.approx(2 * 0.125)
    assert priced["DynamoDB writes"] == pytest.approx(0.625)
    assert priced["Lambda duration"] == pytest.approx(1e6 * 0.010 * 0.125 * 0.0000133334)
    assert priced["Lambda requests"] == pytest.approx(0.20)
    assert priced["API Gateway (HTTP API)"] == pytest.approx(1.00)


def test_the_architecture_documents_capacity_model_is_the_scripts_output() -> None:
    """docs/ARCHITECTURE.md embeds docs/capacity.py's output; both read the prod stage's settings."""
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "docs"))
    import capacity

    text = (root / "docs" / "ARCHITECTURE.md").read_text()
    start = text.index("<!-- capacity:start")
    block = text[text.index("\n", start) + 1 : text.index("<!-- capacity:end -->")]
    assert block == capacity.markdown(), "regenerate: python3 docs/capacity.py"


def test_the_capacity_model_finds_the_lowest_wall_and_sizes_the_shards() -> None:
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "docs"))
    import capacity

    walls = capacity.walls("prod")
    assert [w.creates_per_second for w in walls] == sorted(w.creates_per_second for w in walls)
    shards = next(w for w in walls if "count shards" in w.part)
    assert shards.creates_per_second == 16 * 1000 / 2
    assert capacity.shards_for(8000) == 16 and capacity.shards_for(8001) == 17
    lines = capacity.crowd(10_000_000, 60)
    assert "166,667 creates/s" in lines[0]
