"""Layer 4: `zraft.diagnostics` writes the event vocabulary as JSON lines; `logscan` reads it."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import logscan
from zraft import diagnostics
from zraft.core.events import Event, EventName
from zraft.diagnostics import LEVELS, NodeEvent, VocabularyError

ROLE_CHANGED = Event(
    EventName.ROLE_CHANGED,
    {"term": 2, "old_role": "candidate", "new_role": "leader", "leader": "n1"},
)
COMMIT_ADVANCED = Event(EventName.COMMIT_ADVANCED, {"term": 2, "commit_index": 7})
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture(params=["orjson", "stdlib"])
def renderer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with orjson (when installed) and with the stdlib json fallback."""
    if request.param == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(diagnostics, "_orjson", None)  # private: force the fallback
    return str(request.param)


def lines(path: Path) -> list[dict[str, object]]:
    """Every line of `path` parsed as JSON (all must parse)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_event_is_one_json_object_per_line(tmp_path: Path, renderer: str) -> None:
    path = tmp_path / "logs" / "n1.jsonl"  # the parent does not exist yet
    log = diagnostics.configure("n1", path)
    diagnostics.emit(log, ROLE_CHANGED)
    diagnostics.emit_node(
        log, NodeEvent.BAD_FRAME, source="peer", sender="n2", reason="unknown_tag"
    )
    diagnostics.close(log)

    first, second = lines(path)
    assert list(first)[:4] == ["timestamp", "level", "event", "node"]
    assert ISO_UTC.fullmatch(first["timestamp"])
    assert first == {
        "timestamp": first["timestamp"],
        "level": "info",
        "event": "role_changed",
        "node": "n1",
        "term": 2,
        "old_role": "candidate",
        "new_role": "leader",
        "leader": "n1",
    }
    assert (second["level"], second["event"], second["sender"]) == ("warning", "bad_frame", "n2")
    assert second["timestamp"] >= first["timestamp"]


def test_file_is_appended_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    for _ in range(2):
        log = diagnostics.configure("n1", path)
        diagnostics.emit(log, ROLE_CHANGED)
        diagnostics.close(log)
    assert len(lines(path)) == 2


def test_values_json_lacks_are_rendered(tmp_path: Path, renderer: str) -> None:
    path = tmp_path / "n1.jsonl"
    log = diagnostics.configure("n1", path, "debug")
    log.debug("storage_synced", ids=frozenset({"n2", "n1"}), raw=b"\xffa", where=tmp_path)
    diagnostics.close(log)
    (event,) = lines(path)
    assert event["ids"] == ["n1", "n2"]
    assert event["raw"] == "\\xffa"
    assert event["where"] == str(tmp_path)


def test_exc_info_becomes_the_exception_field(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    log = diagnostics.configure("n1", path, strict=True)
    try:
        raise OSError("disk gone")
    except OSError:
        log.critical("fatal_error", kind="storage", exc_info=True)
    diagnostics.close(log)
    (event,) = lines(path)
    assert event["level"] == "critical"
    assert "OSError: disk gone" in event["exception"]


def test_debug_is_suppressed_at_info(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    log = diagnostics.configure("n1", path, "info", strict=True)
    diagnostics.emit(log, COMMIT_ADVANCED)
    diagnostics.emit(log, ROLE_CHANGED)
    log.debug("no_such_event")  # filtered before the vocabulary check even runs
    diagnostics.close(log)
    assert [e["event"] for e in lines(path)] == ["role_changed"]


def test_debug_is_written_at_debug(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    log = diagnostics.configure("n1", path, "debug")
    diagnostics.emit(log, COMMIT_ADVANCED)
    diagnostics.close(log)
    assert [(e["event"], e["level"]) for e in lines(path)] == [("commit_advanced", "debug")]


def test_warning_level_drops_info(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    log = diagnostics.configure("n1", path, "warning")
    diagnostics.emit(log, ROLE_CHANGED)
    diagnostics.emit_node(log, NodeEvent.LOOP_STALLED, lag_ms=120)
    diagnostics.close(log)
    assert [e["event"] for e in lines(path)] == ["loop_stalled"]


def test_unknown_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log level must be one of debug, info"):
        diagnostics.configure("n1", tmp_path / "n1.jsonl", "verbose")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda log: log.info("leader_won", term=1), "unknown event name 'leader_won'"),
        (
            lambda log: log.info("bad_frame", source="peer", sender="n2", reason="x"),
            "event 'bad_frame' is warning, logged as info",
        ),
        (
            lambda log: log.info("role_changed", term=1),
            "event 'role_changed' needs fields ['leader', 'new_role', 'old_role', 'term']",
        ),
        (
            lambda log: diagnostics.emit_node(log, NodeEvent.LOOP_STALLED, lag=3),
            "event 'loop_stalled' needs fields ['lag_ms'], got ['lag']",
        ),
    ],
    ids=["unknown-name", "wrong-level", "missing-fields", "wrong-field"],
)
def test_strict_logger_raises_outside_the_vocabulary(
    tmp_path: Path, call: Callable[[Any], None], message: str
) -> None:
    log = diagnostics.configure("n1", tmp_path / "n1.jsonl", strict=True)
    with pytest.raises(VocabularyError) as info:
        call(log)
    assert message in str(info.value)
    diagnostics.close(log)
    assert (tmp_path / "n1.jsonl").read_bytes() == b""


def test_lenient_logger_renames_unknown_events(tmp_path: Path, renderer: str) -> None:
    path = tmp_path / "n1.jsonl"
    log = diagnostics.configure("n1", path)
    log.info("leader_won", term=1)
    log.info("bad_frame", source="peer")  # wrong level and fields: not checked when lenient
    diagnostics.close(log)
    unknown, bad_frame = lines(path)
    assert (unknown["event"], unknown["original_event"], unknown["term"]) == (
        "unknown_event",
        "leader_won",
        1,
    )
    assert (bad_frame["event"], bad_frame["level"]) == ("bad_frame", "info")


def test_two_loggers_in_one_process_write_their_own_files(tmp_path: Path) -> None:
    logs = {n: diagnostics.configure(n, tmp_path / f"{n}.jsonl", strict=True) for n in ("a", "b")}
    diagnostics.emit(logs["a"], ROLE_CHANGED)
    diagnostics.emit_node(logs["b"], NodeEvent.NODE_STOPPING, reason="signal")
    diagnostics.emit(logs["a"], ROLE_CHANGED)
    for log in logs.values():
        diagnostics.close(log)
    assert [(e["node"], e["event"]) for e in lines(tmp_path / "a.jsonl")] == [
        ("a", "role_changed"),
        ("a", "role_changed"),
    ]
    assert [(e["node"], e["event"]) for e in lines(tmp_path / "b.jsonl")] == [
        ("b", "node_stopping")
    ]


def test_a_stream_target_is_written_and_left_open(renderer: str) -> None:
    stream = io.BytesIO()
    log = diagnostics.configure("n3", stream)
    diagnostics.emit(log, ROLE_CHANGED)
    diagnostics.close(log)
    assert not stream.closed
    assert json.loads(stream.getvalue())["node"] == "n3"


def test_none_writes_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    log = diagnostics.configure("n4", None)
    diagnostics.emit(log, ROLE_CHANGED)
    diagnostics.close(log)
    assert json.loads(capfd.readouterr().out)["event"] == "role_changed"


def test_closed_logger_refuses_to_write(tmp_path: Path) -> None:
    log = diagnostics.configure("n1", tmp_path / "n1.jsonl")
    diagnostics.close(log)
    with pytest.raises(ValueError):
        diagnostics.emit(log, ROLE_CHANGED)


def test_every_event_name_has_a_level_and_a_field_entry() -> None:
    names = {*EventName, *NodeEvent}
    assert set(LEVELS) == names
    assert set(diagnostics.FIELDS) == names
    assert set(LEVELS.values()) <= {"debug", "info", "warning", "error", "critical"}
    assert not set(EventName) & set(NodeEvent)


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("vote_denied", "debug"),
        ("commit_advanced", "debug"),
        ("client_replied", "debug"),
        ("storage_synced", "debug"),
        ("log_truncated", "warning"),
        ("log_tail_repaired", "warning"),
        ("bad_frame", "warning"),
        ("loop_stalled", "warning"),
        ("peer_send_dropped", "warning"),
        ("fatal_error", "critical"),
        ("leader_elected", "info"),
        ("node_started", "info"),
    ],
)
def test_levels_follow_the_design(name: str, level: str) -> None:
    assert LEVELS[name] == level


# --- logscan ------------------------------------------------------------------------------


def test_logscan_reads_what_diagnostics_writes(tmp_path: Path) -> None:
    for node, term in (("n1", 1), ("n2", 2)):
        log = diagnostics.configure(node, tmp_path / f"{node}.jsonl")
        diagnostics.emit(
            log, Event(EventName.LEADER_ELECTED, {"term": term, "votes": 2, "voters": 3})
        )
        diagnostics.emit(log, Event(EventName.LEADER_CHANGED, {"term": term, "leader": None}))
        diagnostics.close(log)
    events = logscan.read_events(tmp_path)
    assert [e["node"] for e in events] == ["n1", "n1", "n2", "n2"]
    assert logscan.count(events, "leader_elected") == 2
    assert logscan.count(events, "leader_elected", term=2, node="n2") == 1
    assert logscan.count(events, "leader_elected", term=3) == 0
    assert logscan.count(events, "leader_changed", leader=None) == 2
    assert logscan.count(events, "leader_elected", leader=None) == 0  # absent is not null
    assert [e["term"] for e in logscan.select(events, "leader_changed")] == [1, 2]
    assert logscan.read_events([tmp_path / "n2.jsonl"]) == events[2:]


def test_logscan_skips_a_torn_last_line_and_missing_files(tmp_path: Path) -> None:
    good = json.dumps({"event": "role_changed", "node": "n1", "term": 1})
    (tmp_path / "n1.jsonl").write_text(f'{good}\n[1, 2]\n\n{good}\n{{"event": "role_ch')
    (tmp_path / "n2.jsonl").write_bytes(b'{"event": "leader_elected"}\n\xff\xfe')
    events = logscan.read_events([tmp_path, tmp_path / "missing.jsonl"])
    assert [e["event"] for e in events] == ["role_changed", "role_changed", "leader_elected"]


def test_tail_formats_compact_lines() -> None:
    events = [
        {
            "timestamp": "2026-11-25T03:27:53.650754Z",
            "level": "info",
            "event": "role_changed",
            "node": "n2",
            "term": 3,
            "new_role": "leader",
        }
    ] * 3
    assert (
        logscan.tail(events, 2).splitlines()
        == ["03:27:53.650 n2 role_changed term=3 new_role=leader"] * 2
    )
    assert logscan.tail([], 5) == "(no events)"


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "", 42])
    assert logscan.wait_for(lambda: next(calls), timeout=5, interval=0.001) == 42


def test_wait_for_times_out_with_what_it_last_saw(tmp_path: Path) -> None:
    log = diagnostics.configure("n1", tmp_path / "n1.jsonl")
    diagnostics.emit(log, ROLE_CHANGED)
    diagnostics.close(log)
    with pytest.raises(AssertionError) as info:
        logscan.wait_for(
            lambda: logscan.count(logscan.read_events(tmp_path), "leader_elected"),
            timeout=0.05,
            interval=0.01,
            describe=logscan.describe_logs(tmp_path),
        )
    message = str(info.value)
    assert "condition not met within 0.05s (last result: 0)" in message
    assert "last 20 events:" in message
    assert "n1 role_changed term=2 old_role=candidate new_role=leader leader=n1" in message


def test_lines_survive_sigkill(tmp_path: Path) -> None:
    """Unbuffered writes: every event logged before a kill -9 is in the file."""
    path = tmp_path / "n1.jsonl"
    script = (
        "import os, signal\n"
        "from zraft import diagnostics\n"
        f"log = diagnostics.configure('n1', {str(path)!r})\n"
        "for i in range(100):\n"
        "    diagnostics.emit_node(log, diagnostics.NodeEvent.LOOP_STALLED, lag_ms=i)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, timeout=30, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert [e["lag_ms"] for e in lines(path)] == list(range(100))
