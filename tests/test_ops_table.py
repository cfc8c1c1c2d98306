"""The op table (`zraft/wire/ops.py`) against everything that must follow it: the README's
protocol tables, the node's handlers and the state machine, and the client library.

Adding an op means one declaration, one handler (or state machine command), its tests
and its docs; these checks fail when one of those is missing, so the table and the rest
cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zraft.node.serving import HANDLED_ROUTES
from zraft.state.machine import KVMachine
from zraft.wire import ops
from zraft.wire.client import Request, decode_request, encode_request

README = Path(__file__).resolve().parent.parent / "README.md"


def protocol_section() -> str:
    """The README's "Protocol" section."""
    text = README.read_text()
    start = text.index("### Protocol")
    return text[start : text.index("\n## ", start)]


def op_rows() -> dict[str, list[str]]:
    """op name -> the cells of its row in the README's op table."""
    rows: dict[str, list[str]] = {}
    for line in protocol_section().splitlines():
        match = re.match(r"\| `(\w+)`( \(`\w+`\))? \|", line)
        if match and line.count("|") == 8:
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


def names_in(cell: str) -> list[str]:
    """The backticked names in a table cell, in order."""
    return re.findall(r"`(\w+)`", cell)


def test_every_op_has_a_row_that_matches_its_declaration() -> None:
    rows = op_rows()
    assert sorted(rows) == sorted(ops.OPS), "the README's op table lists other ops"
    for name, spec in ops.OPS.items():
        op_cell, summary, role, route, retry, fields, reply = rows[name]
        assert names_in(op_cell) == [name, *spec.aliases], name
        assert summary == spec.summary, f"{name}: the README says {summary!r}"
        assert (role, route, retry) == (spec.role, str(spec.route), str(spec.retry)), name
        optional = re.findall(r"\*`(\w+)`\*", fields)  # optional fields are in italics
        required = [f for f in names_in(fields) if f not in optional]
        assert required == list(spec.required), f"{name}: required fields"
        assert optional == list(spec.optional), f"{name}: optional fields"
        assert names_in(reply) == list(spec.reply), f"{name}: reply keys"


def test_every_field_is_documented() -> None:
    section = protocol_section()
    documented = set()
    for line in section.splitlines():
        if line.startswith("| `") and line.count("|") == 3:
            documented |= set(names_in(line.split("|")[1]))
    assert documented == set(ops.FIELDS), sorted(documented ^ set(ops.FIELDS))


@pytest.mark.parametrize("spec", ops.OPS.values(), ids=lambda s: s.name)
def test_every_op_is_fully_declared(spec: ops.OpSpec) -> None:
    """A role, a route, a retry policy and a summary; a session exactly for log writes;
    and something serves it (a handler route, or the state machine)."""
    assert spec.role in ops.ROLES and spec.summary
    assert spec.has_session == (spec.route is ops.Route.LOG)
    if spec.route is ops.Route.LOG:
        assert spec.name in KVMachine.commands
    elif spec.route is ops.Route.READ:
        assert spec.name in KVMachine.reads
    else:
        assert spec.route in HANDLED_ROUTES, f"{spec.name}: nothing dispatches {spec.route}"


@pytest.mark.parametrize("spec", ops.OPS.values(), ids=lambda s: s.name)
def test_every_op_round_trips_through_the_client_protocol(spec: ops.OpSpec) -> None:
    samples = {
        "key": b"k",
        "value": b"v",
        "expected": None,
        "client": "c",
        "seq": 1,
        "consistency": "serializable",
        "id": "n4",
        "peer": "tcp://127.0.0.1:1",
        "client_endpoint": "tcp://127.0.0.1:2",
        "public_key": "k" * 40,
        "learner": True,
        "prev_kv": True,
        "range_end": b"\0",
        "prefix": False,
        "limit": 3,
        "sort_order": "descend",
        "sort_target": "mod",
        "keys_only": True,
        "count_only": False,
        "revision": 2,
        "serializable": True,
        "compare": [
            {"key": b"k", "target": "version", "result": "greater", "operand": 0},
            {"key": b"a", "range_end": b"b", "target": "value", "result": "equal", "operand": b"x"},
        ],
        "success": [
            {"op": "put", "key": b"k", "value": b"v", "prev_kv": True},
            {"op": "range", "key": b"k", "prefix": True, "limit": 1},
        ],
        "failure": [{"op": "delete_range", "key": b"a", "range_end": b"b"}],
        "lease": 7,
        "ttl": 10,
        "keys": True,
        "start_revision": 5,
        "wait_ms": 250,
        "max_events": 10,
        "filters": ["nodelete"],
        "require_leader": True,
        "offset": 1 << 20,
        "snapshot_index": 12000,
    }
    fields = {name: samples[name] for name in (*spec.required, *spec.optional)}
    for alias in (spec.name, *spec.aliases):
        assert decode_request(encode_request(alias, **fields)) == Request(spec.name, fields)


def test_a_bad_declaration_is_refused_at_import() -> None:
    """The table's own guard: an unknown field or role cannot be declared."""
    with pytest.raises(RuntimeError, match="bad op declaration"):
        ops._declare(ops.OpSpec("x", "y", "root", ops.Route.LOCAL, ops.Retry.ALWAYS))
    with pytest.raises(RuntimeError, match="nope"):
        ops._declare(ops.OpSpec("x", "y", "read", ops.Route.LOCAL, ops.Retry.ALWAYS, ("nope",)))
