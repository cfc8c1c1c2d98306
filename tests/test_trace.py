"""The write trace (`zraft.node.trace`): which stage each hook notes, first times win,
the cap, the file written at the stop, and tracing off doing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zraft.core import AppendRequest, AppendResponse, Entry, EntryKind
from zraft.node import trace
from zraft.node.trace import NO_TRACE, WriteTrace


class Ticks:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def entry(index: int) -> Entry:
    return Entry(1, index, EntryKind.NORMAL, b"")


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_leaders_stages_in_the_order_they_happen(tmp_path: Path) -> None:
    path = tmp_path / "n1.trace.jsonl"
    traced = WriteTrace("n1", path, clock=Ticks())
    traced.proposed(7, accepted=50.0)  # proposed at 101
    append = AppendRequest("n1", "n2", 1, 6, 1, (entry(7),), 6)
    traced.sent((append, AppendRequest("n1", "n2", 1, 7, 1, (), 6)))  # 102
    traced.sent((append,))  # a resend: the first time stays
    traced.persisted((entry(7),))  # 104
    traced.received(AppendResponse("n2", "n1", 1, True, 7))  # 105
    traced.received(AppendResponse("n3", "n1", 1, False, 7, hint=3))  # a reject: not an ack
    traced.committed((entry(7),))  # 106
    traced.replied(7)  # 107
    traced.close()
    assert lines(path) == [
        {
            "node": "n1",
            "index": 7,
            "accepted": 50.0,
            "proposed": 101.0,
            "sent": 102.0,
            "persisted": 104.0,
            "acked": {"n2": 105.0},
            "committed": 106.0,
            "replied": 107.0,
        }
    ]


def test_a_followers_stages(tmp_path: Path) -> None:
    path = tmp_path / "n2.trace.jsonl"
    traced = WriteTrace("n2", path, clock=Ticks())
    traced.received(AppendRequest("n1", "n2", 1, 6, 1, (entry(7), entry(8)), 6))  # 101
    traced.persisted((entry(7), entry(8)))  # 102
    traced.sent((AppendResponse("n2", "n1", 1, True, 8),))  # 103: acknowledges up to 8
    traced.close()
    assert [(line["index"], line.get("ack_sent")) for line in lines(path)] == [
        (7, None),
        (8, 103.0),
    ]
    assert all(line["received"] == 101.0 and line["persisted"] == 102.0 for line in lines(path))


def test_the_trace_stops_noting_at_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "MAX_ENTRIES", 2)
    traced = WriteTrace("n1", tmp_path / "t.jsonl", clock=Ticks())
    traced.persisted(tuple(entry(i) for i in range(1, 5)))
    traced.replied(1)  # an entry already kept still gets its later stages
    traced.close()
    assert [(line["index"], "replied" in line) for line in lines(tmp_path / "t.jsonl")] == [
        (1, True),
        (2, False),
    ]


def test_an_unwritable_trace_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traced = WriteTrace("n1", tmp_path / "missing" / "t.jsonl")
    traced.replied(1)
    traced.close()
    assert "cannot write the write trace" in capsys.readouterr().err


def test_tracing_off_notes_nothing() -> None:
    assert not NO_TRACE.enabled
    NO_TRACE.proposed(1, 0.0)
    NO_TRACE.sent(())
    NO_TRACE.received(AppendResponse("n2", "n1", 1, True, 1))
    NO_TRACE.persisted(())
    NO_TRACE.committed(())
    NO_TRACE.replied(1)
    NO_TRACE.close()  # every hook exists with the traced signature, and none raises
