"""DynamoDB request units from the published sizing rules, for calls seen on the wire.

The local AWS-API server does not account capacity the way DynamoDB does (it returns constants, and
nothing for transactions), so `bench/cost.sh` meters every call itself with these rules, from the
DynamoDB Developer Guide ("Item sizes and formats", "Read/write capacity", "Global secondary indexes:
write activity", "Transactions: capacity"):

- Item size: the UTF-8 bytes of every attribute name plus its value: a string its UTF-8 bytes, binary
  its bytes, a number 1 byte per two significant digits plus 1, a boolean or null 1 byte, a list or map
  3 bytes plus 1 byte per element plus the elements (a map's keys count as names), a set its elements.
- Reads: 1 read unit per 4 KB (rounded up) per item for a strongly consistent read, half that for an
  eventually consistent one; an item that does not exist still costs the minimum. A query sums the items
  it reads and rounds the total up once. Transactional reads cost 2x.
- Writes: 1 write unit per 1 KB (rounded up) of the larger of the item before and after; a delete of an
  absent item, or a failed condition, still costs the minimum of 1. Transactional writes cost 2x.
- A global secondary index costs its own write units for every table write that puts, changes or
  removes an index entry (2 when the index key changes), sized by the projected attributes.
"""

from __future__ import annotations

import base64
import math
from decimal import Decimal

READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024


def number_size(text: str) -> int:
    """Bytes DynamoDB counts for a number: 1 per two significant digits, plus 1."""
    digits = Decimal(text).normalize().as_tuple().digits
    significant = len(digits) if digits != (0,) else 1
    return math.ceil(significant / 2) + 1


def value_size(value: dict) -> int:
    """Bytes of one attribute value in the wire format (`{"S": "..."}`, `{"N": "1"}`, ...)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return len(base64.b64decode(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(number_size(n) for n in inner)
    if kind == "BS":
        return sum(len(base64.b64decode(b)) for b in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict | None) -> int:
    """Bytes of a whole item (0 for an absent one)."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def read_units(size: int, consistent: bool, transactional: bool = False) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    if transactional:
        return 2.0 * units
    return float(units) if consistent else units / 2


def write_units(before: int, after: int, transactional: bool = False) -> float:
    units = max(1, math.ceil(max(before, after) / WRITE_UNIT_BYTES))
    return 2.0 * units if transactional else float(units)


def project(item: dict | None, table_keys: list[str], index: dict) -> dict | None:
    """The index entry an item makes (None when the item lacks an index key attribute)."""
    keys = [k["AttributeName"] for k in index["KeySchema"]]
    if not item or any(k not in item for k in keys):
        return None
    projection = index.get("Projection", {})
    kind = projection.get("ProjectionType", "ALL")
    if kind == "ALL":
        return dict(item)
    names = set(table_keys) | set(keys)
    if kind == "INCLUDE":
        names |= set(projection.get("NonKeyAttributes", []))
    return {n: v for n, v in item.items() if n in names}


def index_write_units(before: dict | None, after: dict | None, table_keys: list[str], index: dict) -> float:
    """Write units one index spends on a table write that turns `before` into `after`."""
    old, new = project(before, table_keys, index), project(after, table_keys, index)
    if old is None and new is None:
        return 0.0
    if old is None or new is None:
        return write_units(0, item_size(old or new))
    keys = [k["AttributeName"] for k in index["KeySchema"]]
    if any(old[k] != new[k] for k in keys):
        return write_units(0, item_size(old)) + write_units(0, item_size(new))
    if old == new:
        return 0.0
    return write_units(item_size(old), item_size(new))
