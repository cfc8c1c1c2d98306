"""How `zraft-client` shows key-value results: kv lists, deletes, transactions, compaction,
leases.

Pure formatting, like `zraft.cli.render` (which keeps the status, members and bench
views and the JSON conversion): functions take reply maps (`Reply.raw`) and an output
format and return the lines to print.

The formats (`-w/--write-out`):

- `simple`: etcdctl's. A kv list prints each key on a line and its value on the next
  (keys only with --keys-only, the count alone with --count-only); `put` prints `OK`,
  `del` how many keys it deleted, each followed by the previous kvs when asked for.
- `table`: the same results, with every kv list as an aligned table (key, value,
  create_revision, mod_revision, version, lease) and a footer saying how many keys of
  how many matched at which revision. Lines that hold no kv list stay as in `simple`.
- `json` is not rendered here: the session prints the whole reply (`render.jsonable`).

Leases print as etcdctl's do (`lease 7 granted with TTL(10s)`, ...), except that ids
are decimal, as the protocol carries them (etcdctl prints hex); `table` prints a grant,
a time-to-live and the lease list as tables.

Values are shown as text (UTF-8, undecodable bytes as `\\xNN`); in a table cell,
control characters are escaped too (`\\n`, `\\t`, `\\r`, else `\\xNN`), so a row
stays one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zraft.cli.render import aligned, human_bytes, text, text_cell

FORMATS = ("simple", "json", "table")
"""The output formats every command accepts (`-w/--write-out`)."""

KV_COLUMNS = ("key", "value", "create_revision", "mod_revision", "version", "lease")
"""The columns of a kv table (without `value` for --keys-only)."""

_CELL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_CELL_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def kv_maps(value: Any) -> list[Mapping[str, Any]]:
    """The well-formed kv maps of a reply field (`kvs`, `prev_kvs`); others are dropped."""
    if not isinstance(value, list):
        return []
    return [kv for kv in value if isinstance(kv, Mapping) and isinstance(kv.get("key"), bytes)]


def kv_lines(kvs: Sequence[Mapping[str, Any]], fmt: str, *, keys_only: bool = False) -> list[str]:
    """A kv list: key and value lines (`simple`), or a table (`table`, header included)."""
    if fmt == "table":
        columns = [c for c in KV_COLUMNS if not (keys_only and c == "value")]
        rows = [list(columns)]
        rows += [[_table_cell(kv.get(column)) for column in columns] for kv in kvs]
        return aligned(rows)
    lines = []
    for kv in kvs:
        lines.append(text(kv["key"]))
        if not keys_only:
            value = kv.get("value")
            lines.append(text(value) if isinstance(value, bytes) else "")
    return lines


def value_lines(key: str, value: bytes, fmt: str) -> list[str]:
    """A plain `get`'s answer: the value (`simple`), or a table of the key and its value
    (the `get` op says nothing of revisions: a range does)."""
    if fmt == "table":
        return aligned([["key", "value"], [key.translate(_CELL_ESCAPES), _table_cell(value)]])
    return [text(value)]


def range_lines(
    raw: Mapping[str, Any], fmt: str, *, keys_only: bool = False, count_only: bool = False
) -> list[str]:
    """A range's answer: its kvs (see `kv_lines`), or the count alone with --count-only.

    `table` adds a footer: `N of COUNT keys at revision R` (and `more: raise --limit`
    when the limit cut the list short)."""
    count = raw.get("count")
    if count_only:
        lines = aligned([["count"], [text_cell(count)]]) if fmt == "table" else [text_cell(count)]
        return lines
    kvs = kv_maps(raw.get("kvs"))
    lines = kv_lines(kvs, fmt, keys_only=keys_only)
    if fmt == "table":
        footer = f"{len(kvs)} of {text_cell(count)} keys at revision {header_revision(raw)}"
        if raw.get("more") is True:
            footer += " (more: raise --limit)"
        lines.append(footer)
    return lines


def deleted_line(count: Any) -> str:
    """`1 key deleted`, `N keys deleted`."""
    return f"{count} key deleted" if count == 1 else f"{text_cell(count)} keys deleted"


def delete_lines(raw: Mapping[str, Any], fmt: str) -> list[str]:
    """A delete's answer: how many keys it deleted, then the previous kvs if asked for."""
    previous = kv_maps(raw.get("prev_kvs"))
    return [deleted_line(raw.get("deleted")), *(kv_lines(previous, fmt) if previous else [])]


def put_lines(raw: Mapping[str, Any], fmt: str) -> list[str]:
    """A put's answer: `OK`, then the previous kv if asked for and the key existed."""
    previous = kv_maps([raw.get("prev_kv")])
    return ["OK", *(kv_lines(previous, fmt) if previous else [])]


def txn_lines(raw: Mapping[str, Any], branch: Sequence[Mapping[str, Any]], fmt: str) -> list[str]:
    """A transaction's answer, as etcdctl prints it: `SUCCESS` or `FAILURE`, then each
    response after an empty line.

    Args:
        raw: the reply.
        branch: the requested ops of the branch that ran (`success` or `failure`), in
            order: a range response is shown as its request asked (--keys-only, ...).
        fmt: `simple` or `table`.
    """
    lines = ["SUCCESS" if raw.get("succeeded") is True else "FAILURE"]
    responses = raw.get("responses")
    for position, response in enumerate(responses if isinstance(responses, list) else []):
        request = branch[position] if position < len(branch) else {}
        response = response if isinstance(response, Mapping) else {}
        lines.append("")
        op = response.get("op")
        if op == "put":
            lines += put_lines(response, fmt)
        elif op == "delete_range":
            lines += delete_lines(response, fmt)
        elif op == "range":
            keys_only, count_only = bool(request.get("keys_only")), bool(request.get("count_only"))
            answer = {**response, "header": raw.get("header")}  # the txn's revision
            lines += range_lines(answer, fmt, keys_only=keys_only, count_only=count_only)
        else:
            lines.append(f"(unexpected response {text_cell(op)})")
    return lines


def compact_line(raw: Mapping[str, Any], requested: int) -> str:
    """`compacted revision N`."""
    revision = raw.get("compact_revision")
    return f"compacted revision {revision if type(revision) is int else requested}"


def alarm_lines(raw: Mapping[str, Any], fmt: str) -> list[str]:
    """`alarm list`: each alarm raised on a line (none: nothing), or a table of the
    alarms and the store's accounted size."""
    alarms = raw.get("alarms")
    names = [text_cell(a) for a in alarms] if isinstance(alarms, list) else []
    if fmt == "table":
        size = raw.get("size_bytes")
        shown = human_bytes(size) if type(size) is int else "-"
        return aligned([["alarms", "store_size"], [",".join(names) or "-", shown]])
    return names


def header_revision(raw: Mapping[str, Any]) -> str:
    """The store revision a reply's `header` names, or `-`."""
    header = raw.get("header")
    return text_cell(header.get("revision")) if isinstance(header, Mapping) else "-"


def _table_cell(value: Any) -> str:
    return text_cell(value).translate(_CELL_ESCAPES)


# --- leases -----------------------------------------------------------------------------


def lease_grant_lines(raw: Mapping[str, Any], fmt: str) -> list[str]:
    """`lease ID granted with TTL(Ns)`, or a table of the lease and its TTL."""
    lease, ttl = text_cell(raw.get("lease")), text_cell(raw.get("ttl"))
    if fmt == "table":
        return aligned([["lease", "ttl"], [lease, ttl]])
    return [f"lease {lease} granted with TTL({ttl}s)"]


def lease_keepalive_line(raw: Mapping[str, Any]) -> str:
    """`lease ID keepalived with TTL(N)` (N: the seconds it has left, its whole TTL)."""
    lease, remaining = text_cell(raw.get("lease")), text_cell(raw.get("remaining"))
    return f"lease {lease} keepalived with TTL({remaining})"


def lease_ttl_lines(raw: Mapping[str, Any], fmt: str, *, keys: bool) -> list[str]:
    """`lease ID granted with TTL(Ns), remaining(Ms)`, with `--keys` followed by
    `, attached keys([k1 k2])`; or a table of the same."""
    lease, ttl, remaining = (text_cell(raw.get(name)) for name in ("lease", "ttl", "remaining"))
    attached = raw.get("keys")
    names = (
        [text(k) for k in attached if isinstance(k, bytes)] if isinstance(attached, list) else []
    )
    if fmt == "table":
        header, row = ["lease", "ttl", "remaining"], [lease, ttl, remaining]
        if keys:
            header.append("keys")
            row.append(_table_cell(" ".join(names)) or "-")
        return aligned([header, row])
    line = f"lease {lease} granted with TTL({ttl}s), remaining({remaining}s)"
    if keys:
        line += f", attached keys([{' '.join(names)}])"
    return [line]


def lease_list_lines(raw: Mapping[str, Any], fmt: str) -> list[str]:
    """`found N leases` then each id on a line; or a table of the ids and a footer."""
    leases = raw.get("leases")
    ids = [text_cell(i) for i in leases] if isinstance(leases, list) else []
    if fmt == "table":
        return [*aligned([["lease"], *([i] for i in ids)]), f"{len(ids)} leases"]
    return [f"found {len(ids)} leases", *ids]


def watch_event_lines(raw: Mapping[str, Any], fmt: str) -> list[str]:
    """One watch event: `PUT`/`DELETE`, the replaced kv's key and value (if any), the key
    and its value (`simple`, as etcdctl); a one-row table with the type (`table`)."""
    kind = str(raw.get("type", "")).upper()
    kv = raw.get("kv") or {}
    previous = raw.get("prev_kv")
    if fmt == "table":
        rows = [["type", *KV_COLUMNS], [kind, *(_table_cell(kv.get(c)) for c in KV_COLUMNS)]]
        return aligned(rows)
    lines = [kind]
    if isinstance(previous, Mapping):
        lines += kv_lines([previous], fmt)
    return lines + kv_lines([kv], fmt)
