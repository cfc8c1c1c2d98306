"""What `zraft-client txn` reads: etcdctl's transaction syntax, or a JSON document.

Both become the fields of a `txn` request (`compare`, `success`, `failure`, in the wire
shape of `zraft.wire.fields`), which the node validates again.

**etcdctl's syntax** (`txn` and `txn -i`): three sections, each ended by an empty line
(or the end of input): the compares, the success requests, the failure requests.

- A compare is `TARGET("KEY") OP "OPERAND"`: TARGET is `value` (`val`), `version`
  (`ver`), `create` (`c`), `mod` (`m`) or `lease`; OP is `=`, `!=`, `<` or `>`; KEY and
  OPERAND are double-quoted with Go/C escapes (`\\"`, `\\\\`, `\\n`, `\\t`, `\\xNN`,
  `\\uNNNN`); a number operand may go unquoted (`version("k") > 0`).
- A request is `put KEY VALUE [--prev-kv] [--lease ID]`, `get KEY [RANGE_END]
  [--prefix|--from-key] [--limit N] [--keys-only] [--count-only]` or `del KEY
  [RANGE_END] [--prefix|--from-key] [--prev-kv]`, split with shell quoting like a REPL
  line (a lease ID in decimal, or hex with `0x`).

**JSON** (`txn --file F`, `-` for stdin): `{"compare": [...], "success": [...],
"failure": [...]}` (each optional), in the wire shape: compares are maps {key, target,
result, operand, optional range_end or prefix}, requests maps {op: range | put |
delete_range, ...its fields} (a put's `lease` is a lease id, a JSON number). Keys and
values are UTF-8 strings; other bytes may be given as `{"base64": "..."}` (what `-w
json` prints for them).

It must not send requests or print: `zraft.cli.kvcommands` does, through the session.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from zraft.cli import kvargs
from zraft.cli.render import BASE64_MARKER
from zraft.cli.repl import split_line
from zraft.cli.usage import CommandParser, UsageError, parse_words

SECTIONS = ("compare", "success", "failure")
"""The fields of a `txn` request, in the order the sections are read."""

PROMPTS = {
    "compare": "compares:",
    "success": "success requests (get, put, del):",
    "failure": "failure requests (get, put, del):",
}
"""What `txn -i` prints before each section (etcdctl's words)."""

COMPARE_TARGETS = {
    "value": "value",
    "val": "value",
    "version": "version",
    "ver": "version",
    "create": "create",
    "c": "create",
    "mod": "mod",
    "m": "mod",
    "lease": "lease",
}
"""The compare targets etcdctl accepts -> the wire's `target`."""

COMPARE_RESULTS = {"=": "equal", "==": "equal", "!=": "not_equal", "<": "less", ">": "greater"}
"""The compare operators -> the wire's `result`."""

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_COMPARE = re.compile(rf"^\s*(\w+)\(\s*{_QUOTED}\s*\)\s*(==|!=|=|<|>)\s*(?:{_QUOTED}|(\d+))\s*$")
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "0": b"\0", "a": b"\a", "b": b"\b"}
_ESCAPES |= {"f": b"\f", "v": b"\v", "\\": b"\\", '"': b'"', "'": b"'"}


def unquote(body: str) -> bytes:
    """The bytes a double-quoted string's body (without its quotes) stands for.

    Raises:
        UsageError: a malformed or unknown escape.
    """
    out = bytearray()
    position = 0
    while position < len(body):
        char = body[position]
        if char != "\\":
            out += char.encode("utf-8")
            position += 1
            continue
        code = body[position + 1 : position + 2]
        if code in _ESCAPES:
            out += _ESCAPES[code]
            position += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}.get(code)
        digits = body[position + 2 : position + 2 + width] if width else ""
        if not width or len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
            raise UsageError(f"error: bad escape in {body!r} at {body[position : position + 4]!r}")
        number = int(digits, 16)
        out += bytes([number]) if code == "x" else chr(number).encode("utf-8", "surrogatepass")
        position += 2 + width
    return bytes(out)


def parse_compare(line: str) -> dict[str, Any]:
    """One compare line as a wire compare map.

    Raises:
        UsageError: the line is not `TARGET("KEY") OP "OPERAND"` with a known target.
    """
    match = _COMPARE.match(line)
    if match is None:
        raise UsageError(
            f'error: malformed compare {line!r}; expected e.g. value("key") = "v" or '
            'mod("key") > "5"'
        )
    name, key, op, quoted, number = match.groups()
    target = COMPARE_TARGETS.get(name)
    if target is None:
        raise UsageError(
            f"error: unknown compare target {name!r} in {line!r} "
            "(value, version, create, mod, lease)"
        )
    if target == "value":
        operand: bytes | int = unquote(quoted) if quoted is not None else number.encode()
    else:
        digits = number if number is not None else unquote(quoted).decode("utf-8", "replace")
        if not digits.isdigit():
            raise UsageError(f"error: a {target} compare needs a number, got {digits!r}")
        operand = int(digits)
    return {
        "key": unquote(key),
        "target": target,
        "result": COMPARE_RESULTS[op],
        "operand": operand,
    }


def _request_parsers() -> dict[str, argparse.ArgumentParser]:
    put = CommandParser(prog="put", add_help=False)
    kvargs.put_arguments(put, value_required=True)
    get = CommandParser(prog="get", add_help=False)
    kvargs.get_arguments(get, in_txn=True)
    delete = CommandParser(prog="del", add_help=False)
    kvargs.delete_arguments(delete)
    return {"put": put, "get": get, "del": delete, "delete": delete}


def parse_request(line: str) -> dict[str, Any]:
    """One request line (`put k v`, `get k --prefix`, `del k`) as a wire op map.

    Raises:
        UsageError: an unknown request, or arguments that do not parse.
    """
    try:
        words = split_line(line)
    except ValueError as exc:
        raise UsageError(f"error: cannot parse {line!r}: {exc}") from None
    parsers = _request_parsers()
    if not words or words[0] not in parsers:
        raise UsageError(f"error: unknown request {line!r}; expected get, put or del")
    args = parse_words(parsers[words[0]], words[1:])
    if words[0] == "put":
        return {"op": "put", "key": args.key, "value": args.value, **kvargs.put_fields(args)}
    if words[0] == "get":
        return {"op": "range", **kvargs.range_fields(args)}
    _, fields = kvargs.delete_fields(args)
    return {"op": "delete_range", **fields}


def read_sections(
    read_line: Callable[[], str | None], prompt: Callable[[str], None] | None
) -> dict[str, list[dict[str, Any]]]:
    """Read the three sections of etcdctl's syntax (see the module doc).

    Args:
        read_line: the next input line without its newline, or None at the end of input.
        prompt: called with each section's prompt before reading it (`txn -i`), or None.

    Raises:
        UsageError: a line that does not parse (the rest of the input is not read).
    """
    parsed: dict[str, list[dict[str, Any]]] = {}
    for section in SECTIONS:
        if prompt is not None:
            prompt(PROMPTS[section])
        items = parsed.setdefault(section, [])
        while (line := read_line()) is not None and line.strip():
            items.append(parse_compare(line) if section == "compare" else parse_request(line))
    return parsed


def from_json(text: str, source: str) -> dict[str, list[Any]]:
    """The fields of a JSON transaction document (see the module doc).

    Args:
        text: the document.
        source: where it came from, for messages (a path, or `stdin`).

    Raises:
        UsageError: not JSON, not an object of lists of objects, an unknown section, or
            a bad `{"base64": ...}`.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"error: txn --file {source}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UsageError(f"error: txn --file {source}: expected a JSON object")
    if unknown := sorted(set(document) - set(SECTIONS)):
        raise UsageError(
            f"error: txn --file {source}: unknown section(s) {unknown}; expected compare, "
            "success, failure"
        )
    fields = {}
    for section, items in document.items():
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UsageError(f"error: txn --file {source}: {section!r} must be a list of objects")
        fields[section] = [_with_bytes(item, f"{section}") for item in items]
    return fields


def _with_bytes(value: Any, where: str) -> Any:
    """`value` with each `{"base64": "..."}` replaced by the bytes it stands for."""
    if isinstance(value, dict):
        if set(value) == {BASE64_MARKER} and isinstance(value[BASE64_MARKER], str):
            try:
                return base64.b64decode(value[BASE64_MARKER], validate=True)
            except binascii.Error as exc:
                raise UsageError(f"error: txn: bad base64 in {where}: {exc}") from None
        return {key: _with_bytes(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_with_bytes(item, where) for item in value]
    return value
