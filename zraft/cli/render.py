"""How `zraft-client` shows results: text lines, tables and JSON-able values.

Pure formatting: functions take replies and results and return strings or plain values;
`zraft.cli.client` decides where they are printed.

Rules it keeps:

- Bytes become text as UTF-8 with `backslashreplace` in text output: a value written
  as text reads back unchanged, and a non-UTF-8 byte shows as `\\xNN`.
- In JSON, bytes that are valid UTF-8 become a string; any other bytes become
  `{"base64": "<standard base64>"}`, so a binary value survives a round trip exactly
  (a key or value is never a map otherwise, so the marker cannot be mistaken).
- A missing field is shown as `-` in tables and as null in JSON, never guessed.
- Status fields a node reports beyond the known columns are kept: all of them in JSON,
  and as `key=value` details in the verbose table.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zraft.client import ClientTimeout, Reply, StatusProbe

if TYPE_CHECKING:  # only for annotations: rendering a bench result needs no import
    from zraft.bench.load import BenchResult

STATUS_HEADER = (
    "node", "endpoint", "role", "term", "leader", "commit", "applied", "last", "snapshot", "log"
)  # fmt: skip
"""The columns of the status table, before `reachable` (and `details` when verbose).

`snapshot` is the index of the node's newest snapshot, `log` the bytes of its write-ahead
log on disk (`log_bytes`, human-readable)."""

_STATUS_FIELDS = (
    "role", "term", "leader", "commit_index", "applied_index", "last_index", "snapshot_index",
    "log_bytes",
)  # fmt: skip
_BYTES_FIELDS = frozenset({"log_bytes"})
_REPLY_KEYS = frozenset({"ok", "value", "found", "error", "leader", "index"})

BASE64_MARKER = "base64"
"""The key of the map that stands for non-UTF-8 bytes in JSON output (and input)."""


def text(value: bytes) -> str:
    """`value` as text: UTF-8, with undecodable bytes as `\\xNN`."""
    return value.decode("utf-8", "backslashreplace")


def json_bytes(value: bytes) -> str | dict[str, str]:
    """`value` for JSON: the string if it is valid UTF-8, else `{"base64": ...}`."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {BASE64_MARKER: base64.b64encode(value).decode("ascii")}


def jsonable(obj: Any) -> Any:
    """`obj` for JSON: bytes as `json_bytes` makes them, tuples as lists, map keys as str."""
    if isinstance(obj, bytes):
        return json_bytes(obj)
    if isinstance(obj, Mapping):
        return {text(k) if isinstance(k, bytes) else str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


ERROR_HINTS = {
    "compacted": "the history before revision {compact} is gone: use {compact} or later",
    "future_revision": "use {revision} or below (0: the newest)",
    "too_many_ops": "split the transaction (the limit is the cluster's max_txn_ops)",
}
"""What `error_line` adds to these codes' messages: what to do about them. `{compact}` is
the reply's `compact_revision`, `{revision}` its header's; a hint whose value the reply
lacks is left out."""


def error_line(reply: Reply, hints: Mapping[str, str] = ERROR_HINTS) -> str:
    """`error: CODE: MESSAGE`, plus the current value for a failed cas, and what to do
    for the codes of `hints` (default `ERROR_HINTS`; a command may say it its own way)."""
    line = f"error: {reply.error_code}: {reply.error_message}"
    if reply.error_code == "cas_failed":
        current = "(absent)" if reply.value is None else text(reply.value)
        line += f" (current value: {current})"
    hint = hints.get(reply.error_code or "")
    header = reply.raw.get("header")
    known = {
        "compact": reply.raw.get("compact_revision"),
        "revision": header.get("revision") if isinstance(header, Mapping) else None,
    }
    if hint is not None and all(known[name] is not None for name in known if f"{{{name}}}" in hint):
        line += f"; {hint.format(**known)}"
    return line


def timeout_map(exc: ClientTimeout) -> dict[str, Any]:
    """A reply-shaped map for a client-side timeout (error code `client_timeout`)."""
    return {
        "ok": False,
        "value": None,
        "error": {"code": "client_timeout", "message": str(exc)},
        "leader": None,
        "index": None,
        "endpoints": list(exc.endpoints),
    }


def status_fields(probe: StatusProbe) -> dict[str, Any]:
    """The status map of a probe's reply ({} when there is no reply)."""
    if probe.reply is None:
        return {}
    status = probe.reply.status
    if status is not None:
        return status
    # Tolerate a server that puts the fields at the top level of the reply.
    return {k: v for k, v in probe.reply.raw.items() if k not in _REPLY_KEYS}


def probe_map(node_id: str | None, probe: StatusProbe) -> dict[str, Any]:
    """One node's entry in `status --json`: node, endpoint, reachable, status, error."""
    status = status_fields(probe)
    reply = probe.reply
    error = None
    if probe.problem is not None:
        error = {"code": "client_timeout", "message": probe.problem}
    elif reply is not None and not reply.ok:
        error = {"code": reply.error_code, "message": reply.error_message}
    return {
        "node": node_id or status.get("id") or probe.endpoint,
        "endpoint": probe.endpoint,
        "reachable": probe.reachable,
        "status": status or None,
        "error": error,
    }


def human_bytes(count: int) -> str:
    """`count` bytes in binary units, like `ls -h`: `512B`, `1.2K`, `35M`, `4.0G`."""
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            if unit == "B":
                return f"{count}B"
            return f"{value:.1f}{unit}" if abs(value) < 10 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def snapshot_line(reply: Reply) -> str:
    """`snapshot at index N (B bytes)`, or `(already current)` when no file was written."""
    snapshot = reply.raw.get("snapshot")
    snapshot = snapshot if isinstance(snapshot, Mapping) else {}
    size = snapshot.get("size_bytes")
    if type(size) is int:
        detail = f"{size} bytes, {human_bytes(size)}" if size >= 1024 else f"{size} bytes"
    else:
        detail = "already current: nothing applied since the last one"
    return f"snapshot at index {_cell(snapshot.get('index'))} ({detail})"


MEMBERS_HEADER = ("", "node", "role", "match", "peer", "client")
"""The columns of the members table: the leader mark (`*`), then one per field."""


def members_table(reply: Reply) -> list[str]:
    """The members table (voters first, as the node lists them) and a footer line.

    `match` is how far the member's log matches the leader's; only the leader knows it,
    so it shows `-` when the answer came from another node.
    """
    rows = [list(MEMBERS_HEADER)]
    for member in reply.members or []:
        mark = "*" if reply.leader is not None and member.get("id") == reply.leader else ""
        fields = [member.get(name) for name in ("id", "role", "match_index", "peer", "client")]
        rows.append([mark, *(_cell(value) for value in fields)])
    footer = f"leader {_cell(reply.leader)}, config index {_cell(reply.config_index)}"
    answered_by = reply.endpoint or "?"
    if not any(row[3] != "-" for row in rows[1:]):
        footer += f" (match indexes unknown: answered by {answered_by}, not the leader)"
    retired = [f"retired (never reused): {', '.join(reply.retired)}"] if reply.retired else []
    return [*aligned(rows), footer, *retired]


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows as lines with their columns aligned (two spaces apart, no trailing blanks)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def text_cell(value: Any) -> str:
    """`value` as a table cell: `-` for None, bytes as text, lists comma-separated."""
    return _cell(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    return text(value) if isinstance(value, bytes) else str(value)


def _status_row(node_id: str | None, probe: StatusProbe, *, verbose: bool) -> list[str]:
    status = status_fields(probe)
    row = [_cell(node_id or status.get("id") or "?"), probe.endpoint]
    row += [
        human_bytes(value)
        if name in _BYTES_FIELDS and type(value := status.get(name)) is int
        else _cell(status.get(name))
        for name in _STATUS_FIELDS
    ]
    row.append("yes" if probe.reachable else "no")
    if verbose:
        shown = {"id", *_STATUS_FIELDS}
        details = [f"{k}={_cell(v)}" for k, v in status.items() if k not in shown]
        if probe.problem:
            details.append(probe.problem)
        row.append(" ".join(details) or "-")
    return row


def status_table(
    node_ids: Sequence[str | None], probes: Sequence[StatusProbe], *, verbose: bool = False
) -> list[str]:
    """The status table, one line per node after the header, columns aligned."""
    header = [*STATUS_HEADER, "reachable", *(["details"] if verbose else [])]
    rows = [header]
    rows += [
        _status_row(node_id, probe, verbose=verbose)
        for node_id, probe in zip(node_ids, probes, strict=True)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def bench_summary(result: BenchResult) -> list[str]:
    """The bench summary: the load, then ops/errors/ops/s, then latency percentiles."""
    spec = result.spec
    amount = (
        f"{spec.requests} requests each" if spec.requests is not None else f"{spec.duration:g} s"
    )
    lat = result.latencies_ms
    lines = [
        f"bench {spec.op}: {spec.clients} clients, {amount}, {spec.value_size}-byte values, "
        f"{spec.keys} keys, {len(result.endpoints)} endpoint(s)",
        f"ops {result.ops}  errors {result.errors}  elapsed {result.elapsed:.3f} s  "
        f"ops/s {result.ops_per_s:.1f}",
        f"latency ms  p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
        f"max {lat['max']:.3f}  mean {lat['mean']:.3f}",
    ]
    if result.error_codes:
        codes = " ".join(f"{k}={v}" for k, v in sorted(result.error_codes.items()))
        lines.append(f"errors by code: {codes}")
    return lines
