"""The key-value commands of `zraft-client` (etcdctl v3's shape) against a fake cluster.

Each test runs command lines through a `Session` (the command table, the parsers, the
handlers and the renderers: everything but the process) toward `tests.fakeserver`,
whose state machine is the node's own (multi-version model), and checks what was
printed, the exit code, and the requests the fake received. stdin is a fed stream.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeCluster
from zraft.cli.client import Session, Target
from zraft.cli.repl import Repl, run_repl
from zraft.cli.txnparse import parse_compare, parse_request
from zraft.cli.usage import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from zraft.state.machine import MODEL, KVMachine
from zraft.wire.client import Request


@dataclass
class Ran:
    """What one command line did."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """stdout's lines."""
        return self.out.splitlines()

    def json(self) -> Any:
        """stdout as one JSON object."""
        return json.loads(self.out)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    """A one-node fake cluster serving the multi-version store."""
    with FakeCluster() as fake:
        yield fake


def run(
    cluster: FakeCluster, *argv: str, stdin: bytes = b"", repl: bool = False, json: bool = False
) -> Ran:
    """Run one command line in a fresh one-shot (or REPL-mode) session."""
    out, err = io.StringIO(), io.StringIO()
    session = Session(
        Target(((None, cluster.endpoints[0]),), 3.0, 3.0),
        json_output=json,
        repl=repl,
        stdout=out,
        stderr=err,
        stdin=io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"),
    )
    try:
        code = session.execute(argv)
    finally:
        session.close()
    return Ran(code, out.getvalue(), err.getvalue())


def last_request(cluster: FakeCluster) -> Request:
    """The last request the fake received."""
    return cluster.requests[-1][1]


def fill(cluster: FakeCluster) -> None:
    """a=1, a/b=2, a/c=3 (then 4: version 2), b=5: revisions 2..6."""
    for key, value in (("a", "1"), ("a/b", "2"), ("a/c", "3"), ("a/c", "4"), ("b", "5")):
        assert run(cluster, "put", key, value).code == EXIT_OK


# --- put --------------------------------------------------------------------------------


def test_put_prints_ok_and_with_prev_kv_the_previous_pair(cluster: FakeCluster) -> None:
    assert run(cluster, "put", "k", "v1").lines == ["OK"]
    assert last_request(cluster).fields.get("prev_kv") is None  # only sent when asked
    assert run(cluster, "put", "k", "v2", "--prev-kv").lines == ["OK", "k", "v1"]
    assert last_request(cluster).fields["prev_kv"] is True
    assert run(cluster, "put", "new", "x", "--prev-kv").lines == ["OK"]  # nothing before
    assert run(cluster, "put", "new", "y", "--prev-kv", "-w", "table").lines == [
        "OK",
        "key  value  create_revision  mod_revision  version  lease",
        "new  x      4                4             1        0",
    ]
    assert run(cluster, "put", "newer", "z", "--prev-kv", "-w", "table").lines == ["OK"]
    assert cluster.kv.get(b"k") == b"v2"


def test_put_without_value_reads_stdin_as_bytes(cluster: FakeCluster) -> None:
    """The whole of stdin, byte for byte: no decoding, no newline stripped."""
    binary = b"\xff\x00bin\r\n\x80\n"
    assert run(cluster, "put", "blob", stdin=binary).lines == ["OK"]
    assert cluster.kv.get(b"blob") == binary
    got = run(cluster, "get", "blob", "-w", "json").json()
    assert got["value"] == {"base64": base64.b64encode(binary).decode()}
    assert run(cluster, "put", "text", stdin="héllo\n".encode()).code == EXIT_OK
    assert cluster.kv.get(b"text") == "héllo\n".encode()


def test_put_without_value_is_a_usage_error_in_the_repl_or_on_empty_stdin(
    cluster: FakeCluster,
) -> None:
    repl = run(cluster, "put", "k", stdin=b"put k v\n", repl=True)
    assert (repl.code, repl.lines) == (
        EXIT_USAGE,
        ["error: in the REPL stdin holds the commands: use put KEY VALUE"],
    )
    empty = run(cluster, "put", "k")
    assert empty.code == EXIT_USAGE and "nothing on stdin" in empty.err
    assert cluster.requests == []


# --- get and range ----------------------------------------------------------------------


def test_plain_get_keeps_the_get_op_and_its_output(cluster: FakeCluster) -> None:
    fill(cluster)
    assert run(cluster, "get", "a").lines == ["1"]
    assert last_request(cluster).op == "get"
    missing = run(cluster, "get", "zz")
    assert (missing.code, missing.out, missing.err) == (EXIT_FAILED, "", "(not found)\n")
    assert run(cluster, "get", "a", "--serializable").lines == ["1"]
    assert last_request(cluster) == Request.of("get", key=b"a", consistency="serializable")
    assert run(cluster, "get", "a", "-w", "table").lines == ["key  value", "a    1"]


@pytest.mark.parametrize(
    ("argv", "fields", "lines"),
    [
        (["a", "--prefix"], {"prefix": True}, ["a", "1", "a/b", "2", "a/c", "4"]),
        (["a/", "a/c"], {"key": b"a/", "range_end": b"a/c"}, ["a/b", "2"]),
        (
            ["a/b", "--from-key"],
            {"key": b"a/b", "range_end": b"\0"},
            ["a/b", "2", "a/c", "4", "b", "5"],
        ),
        (
            ["", "--prefix"],
            {"key": b"\0", "range_end": b"\0"},
            ["a", "1", "a/b", "2", "a/c", "4", "b", "5"],
        ),
        (
            ["", "--from-key", "--limit", "2"],
            {"key": b"\0", "range_end": b"\0", "limit": 2},
            ["a", "1", "a/b", "2"],
        ),
        (
            ["a", "--prefix", "--keys-only"],
            {"prefix": True, "keys_only": True},
            ["a", "a/b", "a/c"],
        ),
        (["a", "--prefix", "--count-only"], {"prefix": True, "count_only": True}, ["3"]),
        (["zz", "--prefix"], {"key": b"zz", "prefix": True}, []),  # nothing, exit 0
        (
            ["a", "--prefix", "--sort-by", "modify", "--order", "descend", "--keys-only"],
            {"prefix": True, "sort_target": "mod", "sort_order": "descend", "keys_only": True},
            ["a/c", "a/b", "a"],
        ),
        (
            ["a", "--prefix", "--sort-by", "version", "--keys-only"],  # ascend by default
            {"prefix": True, "sort_target": "version", "sort_order": "ascend", "keys_only": True},
            ["a", "a/b", "a/c"],
        ),
        (["a/c", "--rev", "4"], {"key": b"a/c", "revision": 4}, ["a/c", "3"]),
        (["a", "--limit", "0"], {"key": b"a"}, ["a", "1"]),  # a range option: a range op
        (
            ["a", "--prefix", "--serializable", "--keys-only"],
            {"prefix": True, "serializable": True, "keys_only": True},
            ["a", "a/b", "a/c"],
        ),
    ],
)
def test_a_range_option_makes_get_a_range(
    cluster: FakeCluster, argv: list[str], fields: dict[str, Any], lines: list[str]
) -> None:
    fill(cluster)
    ran = run(cluster, "get", *argv)
    assert (ran.code, ran.lines, ran.err) == (EXIT_OK, lines, "")
    request = last_request(cluster)
    assert request.op == "range"
    assert dict(request.fields) == {"key": b"a", **fields}  # defaults are left out


def test_range_tables_and_json(cluster: FakeCluster) -> None:
    fill(cluster)
    table = run(cluster, "get", "a", "--prefix", "--limit", "2", "-w", "table").lines
    assert table == [
        "key  value  create_revision  mod_revision  version  lease",
        "a    1      2                2             1        0",
        "a/b  2      3                3             1        0",
        "2 of 3 keys at revision 6 (more: raise --limit)",
    ]
    keys = run(cluster, "get", "a", "--prefix", "--keys-only", "-w", "table").lines
    assert keys[0] == "key  create_revision  mod_revision  version  lease"
    assert run(cluster, "get", "a", "--prefix", "--count-only", "-w", "table").lines == [
        "count",
        "3",
    ]
    reply = run(cluster, "get", "a/c", "--from-key", "--json").json()
    assert reply["header"] == {"revision": 6, "raft_term": 3, "member": "n1"}
    assert [(kv["key"], kv["value"], kv["version"]) for kv in reply["kvs"]] == [
        ("a/c", "4", 2),
        ("b", "5", 1),
    ]
    assert (reply["count"], reply["more"]) == (2, False)


def test_get_refuses_a_range_end_with_prefix_or_from_key(cluster: FakeCluster) -> None:
    for option in ("--prefix", "--from-key"):
        ran = run(cluster, "get", "a", "b", option)
        assert ran.code == EXIT_USAGE and f"give RANGE_END or {option}, not both" in ran.err
    both = run(cluster, "get", "a", "--prefix", "--from-key")
    assert both.code == EXIT_USAGE and "not allowed with" in both.err
    assert cluster.requests == []


# --- del --------------------------------------------------------------------------------


def test_plain_del_keeps_its_op_and_output(cluster: FakeCluster) -> None:
    fill(cluster)
    assert run(cluster, "del", "a").lines == ["1 key deleted"]
    assert last_request(cluster).op == "delete"
    assert run(cluster, "delete", "a").lines == ["0 keys deleted"]
    assert run(cluster, "del", "b", "--prev-kv").lines == ["1 key deleted", "b", "5"]
    request = last_request(cluster)
    assert (request.op, request.fields["key"], request.fields["prev_kv"]) == ("delete", b"b", True)


def test_del_of_a_range(cluster: FakeCluster) -> None:
    fill(cluster)
    ran = run(cluster, "del", "a", "--prefix", "--prev-kv")
    assert ran.lines == ["3 keys deleted", "a", "1", "a/b", "2", "a/c", "4"]
    assert last_request(cluster).op == "delete_range"
    assert run(cluster, "del", "a", "--prefix").lines == ["0 keys deleted"]
    assert run(cluster, "del", "", "--from-key", "-w", "table", "--prev-kv").lines == [
        "1 key deleted",
        "key  value  create_revision  mod_revision  version  lease",
        "b    5      6                6             1        0",
    ]
    assert cluster.kv.get(b"b") is None
    run(cluster, "put", "x1", "1")
    run(cluster, "put", "x2", "2")
    assert run(cluster, "del", "x1", "x2").lines == ["1 key deleted"]  # RANGE_END excluded
    assert last_request(cluster).fields["range_end"] == b"x2"
    reply = run(cluster, "del", "x", "--prefix", "-w", "json").json()
    assert (reply["ok"], reply["deleted"]) == (True, 1)


# --- txn --------------------------------------------------------------------------------

TXN_LINES = (
    'value("k") = "v"\n'
    'version("k") > "0"\n'
    "\n"
    "put k changed --prev-kv\n"
    "get k --keys-only\n"
    "\n"
    'put k "created here"\n'
    "del other --prefix\n"
    "\n"
)


def test_txn_interactive_prompts_on_stderr_and_prints_each_response(cluster: FakeCluster) -> None:
    run(cluster, "put", "k", "v")
    ran = run(cluster, "txn", "-i", stdin=TXN_LINES.encode())
    assert ran.code == EXIT_OK
    assert ran.err.splitlines() == [
        "compares:",
        "success requests (get, put, del):",
        "failure requests (get, put, del):",
    ]
    assert ran.lines == ["SUCCESS", "", "OK", "k", "v", "", "k"]
    request = last_request(cluster)
    assert request.fields["compare"] == [
        {"key": b"k", "target": "value", "result": "equal", "operand": b"v"},
        {"key": b"k", "target": "version", "result": "greater", "operand": 0},
    ]
    assert [op["op"] for op in request.fields["success"]] == ["put", "range"]
    assert request.fields["failure"][1] == {"op": "delete_range", "key": b"other", "prefix": True}
    assert cluster.kv.get(b"k") == b"changed"


def test_txn_failure_branch_runs_and_exits_0(cluster: FakeCluster) -> None:
    run(cluster, "put", "other/1", "x")
    ran = run(cluster, "txn", stdin=TXN_LINES.encode())  # no -i: no prompts
    assert (ran.code, ran.err) == (EXIT_OK, "")
    assert ran.lines == ["FAILURE", "", "OK", "", "1 key deleted"]
    assert cluster.kv.get(b"k") == b"created here" and cluster.kv.get(b"other/1") is None


def test_txn_table_output_and_end_of_input_ends_the_sections(cluster: FakeCluster) -> None:
    run(cluster, "put", "k", "v")
    ran = run(cluster, "txn", "-w", "table", stdin=b'mod("k") < 100\n\nget k')
    assert ran.lines == [
        "SUCCESS",
        "",
        "key  value  create_revision  mod_revision  version  lease",
        "k    v      2                2             1        0",
        "1 of 1 keys at revision 2",
    ]
    assert last_request(cluster).fields.get("failure") == []


def test_txn_from_a_json_file(cluster: FakeCluster, tmp_path: Path) -> None:
    document = {
        "compare": [{"key": "k", "target": "create", "result": "=", "operand": 0}],
        "success": [
            {"op": "put", "key": "k", "value": {"base64": base64.b64encode(b"\xfe\xff").decode()}},
            {"op": "put", "key": "j", "value": "é"},
            {"op": "range", "key": "j", "count_only": True},
        ],
        "failure": [{"op": "range", "key": "k"}],
    }
    path = tmp_path / "txn.json"
    path.write_text(json.dumps(document))
    ran = run(cluster, "txn", "--file", str(path))
    assert (ran.code, ran.lines) == (EXIT_OK, ["SUCCESS", "", "OK", "", "OK", "", "1"])
    assert cluster.kv.get(b"k") == b"\xfe\xff" and cluster.kv.get(b"j") == "é".encode()
    again = run(cluster, "txn", "--file", "-", "-w", "json", stdin=json.dumps(document).encode())
    reply = again.json()
    assert reply["succeeded"] is False
    assert reply["responses"][0]["kvs"][0]["value"] == {
        "base64": base64.b64encode(b"\xfe\xff").decode()
    }


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["txn"], b'value("k") == \n', "malformed compare"),
        (["txn"], b'size("k") = "1"\n', "unknown compare target 'size'"),
        (["txn"], b'version("k") = "one"\n', "a version compare needs a number"),
        (["txn"], b"\nfrob k\n", "unknown request"),
        (["txn"], b"\nput k\n", "the following arguments are required: VALUE"),
        (["txn"], b"\nget k --rev 3\n", "unrecognized arguments"),
        (["txn", "--file", "-"], b"not json", "not JSON"),
        (["txn", "--file", "-"], b'{"compare": [], "else": []}', "unknown section"),
        (["txn", "--file", "-"], b'{"success": {"op": "put"}}', "must be a list of objects"),
        (
            ["txn", "--file", "-"],
            b'{"success": [{"op": "put", "key": "k", "value": {"base64": "!"}}]}',
            "bad base64",
        ),
        (["txn", "-i", "--file", "x.json"], b"", "give -i or --file, not both"),
        (["txn", "--file", "/nonexistent/txn.json"], b"", "cannot read /nonexistent/txn.json"),
    ],
)
def test_txn_input_that_does_not_parse_is_a_usage_error(
    cluster: FakeCluster, argv: list[str], stdin: bytes, message: str
) -> None:
    ran = run(cluster, *argv, stdin=stdin)
    assert ran.code == EXIT_USAGE and message in ran.err, ran.err
    assert cluster.requests == []  # nothing was sent


def test_txn_errors_from_the_node(cluster: FakeCluster) -> None:
    cluster.machine = KVMachine(model=MODEL, max_txn_ops=2)
    ran = run(cluster, "txn", stdin=b"\nput a 1\nput b 2\nput c 3\n")
    assert ran.code == EXIT_FAILED
    assert ran.err == (
        "error: too_many_ops: success has 3 operations, the limit is 2; split the "
        "transaction (the limit is the cluster's max_txn_ops)\n"
    )
    twice = run(cluster, "txn", stdin=b"\nput a 1\nput a 2\n")
    assert twice.code == EXIT_FAILED and "error: bad_request: a key is put twice" in twice.err


def test_compare_and_request_syntax() -> None:
    """etcdctl's target names and escapes; a number operand may go unquoted."""
    assert parse_compare(r'val("a\"b") != "x\ty\xff\u00e9"') == {
        "key": b'a"b',
        "target": "value",
        "result": "not_equal",
        "operand": b"x\ty\xff\xc3\xa9",
    }
    assert parse_compare('m("k")<5')["operand"] == 5
    assert parse_compare('c("k") = "0"')["target"] == "create"
    assert parse_compare('lease( "k" ) == "0"')["result"] == "equal"
    with pytest.raises(UsageError, match="bad escape"):
        parse_compare(r'value("k") = "\q"')
    assert parse_request("put 'two words' -x") == {"op": "put", "key": "two words", "value": "-x"}
    assert parse_request("get a z --limit 3 --count-only") == {
        "op": "range",
        "key": "a",
        "range_end": "z",
        "limit": 3,
        "count_only": True,
    }
    assert parse_request("delete k --from-key --prev-kv") == {
        "op": "delete_range",
        "key": "k",
        "range_end": "\0",
        "prev_kv": True,
    }


def test_txn_in_the_repl_reads_its_sections_from_the_next_lines(cluster: FakeCluster) -> None:
    """On a pipe, `txn` takes the lines after it; the REPL goes on after the sections."""
    script = 'put k v\ntxn\nvalue("k") = "v"\n\nput k w\n\n\nget k\ntxn --file -\n'
    stdin = io.StringIO(script)
    out = io.StringIO()
    target = Target(((None, cluster.endpoints[0]),), 3.0, 3.0)
    session = Session(
        target, json_output=False, repl=True, stdout=out, stderr=io.StringIO(), stdin=stdin
    )
    try:
        code = run_repl(session, stdin, out)
    finally:
        session.close()
    assert out.getvalue().splitlines() == [
        "OK",
        "SUCCESS",
        "",
        "OK",
        "w",
        "error: in the REPL stdin holds the commands: use txn --file F",
    ]
    assert code == EXIT_USAGE


# --- compact and revisions --------------------------------------------------------------


def test_compact_and_the_revision_errors(cluster: FakeCluster) -> None:
    fill(cluster)
    assert run(cluster, "compact", "4").lines == ["compacted revision 4"]
    assert last_request(cluster).fields["revision"] == 4
    old = run(cluster, "get", "a/c", "--rev", "3")
    assert old.code == EXIT_FAILED
    assert old.err == (
        "error: compacted: revision 3 is compacted (the compact revision is 4); the history "
        "before revision 4 is gone: use 4 or later\n"
    )
    assert json.loads(run(cluster, "get", "a", "--rev", "3", "--json").out)["compact_revision"] == 4
    again = run(cluster, "compact", "4")  # compact's own hints: not a read's
    assert again.code == EXIT_FAILED
    assert again.err == (
        "error: compacted: revision 4 is compacted (the compact revision is 4); it is "
        "compacted up to 4 already: give a later revision\n"
    )
    future = run(cluster, "get", "a", "--rev", "99")
    assert future.code == EXIT_FAILED
    assert future.err == (
        "error: future_revision: revision 99 is in the future (the current is 6); use 6 or "
        "below (0: the newest)\n"
    )
    ahead = run(cluster, "compact", "99")
    assert ahead.code == EXIT_FAILED
    assert ahead.err == (
        "error: future_revision: revision 99 is in the future (the current is 6); the "
        "newest revision is 6\n"
    )
    assert run(cluster, "compact", "0").code == EXIT_USAGE  # a revision is >= 1
    assert run(cluster, "get", "a/c", "--rev", "4").lines == ["a/c", "3"]


def test_alarms_and_no_space(cluster: FakeCluster) -> None:
    cluster.machine = KVMachine(model=MODEL, quota_bytes=64)
    full = run(cluster, "put", "k", "x" * 100)
    assert full.code == EXIT_FAILED and full.err.startswith("error: no_space: ")
    assert "zraft-client alarm disarm" in full.err  # the node says what to do
    assert run(cluster, "alarm", "list").lines == []
    cluster.machine.alarms.add("nospace")  # as the alarm entry a leader writes would
    assert run(cluster, "alarm", "list").lines == ["nospace"]
    table = run(cluster, "alarm", "list", "-w", "table").lines
    assert table[0].split() == ["alarms", "store_size"] and table[1].split()[0] == "nospace"
    assert run(cluster, "alarm", "disarm").lines == ["OK: every alarm lowered"]
    assert run(cluster, "alarm", "list", "--json").json()["alarms"] == []


# --- output formats ---------------------------------------------------------------------


def test_every_command_takes_write_out_and_json(cluster: FakeCluster) -> None:
    """`-w json` and `--json` print the reply; `-w` beats the session's `--json`."""
    put = run(cluster, "put", "k", "v", "-w", "json").json()
    assert put["ok"] is True and put["header"]["revision"] == 2
    assert run(cluster, "get", "k", "--json").json()["value"] == "v"
    assert run(cluster, "get", "k", "-w", "simple", json=True).lines == ["v"]
    assert run(cluster, "get", "k", json=True).json()["found"] is True
    missing = run(cluster, "get", "nope", "-w", "json")
    assert missing.code == EXIT_FAILED and missing.json()["found"] is False
    assert run(cluster, "cas", "k", "v", "w", "-w", "table").lines == ["OK"]
    assert run(cluster, "compact", "2", "--json").json()["compact_revision"] == 2
    assert run(cluster, "del", "k", "-w", "json").json()["deleted"] == 1
    bad = run(cluster, "get", "k", "-w", "yaml")
    assert bad.code == EXIT_USAGE and "invalid choice: 'yaml'" in bad.err
    members = run(cluster, "members", "-w", "json").json()
    assert [m["id"] for m in members["members"]] == ["n1"]
    assert run(cluster, "status", "--json").json()["nodes"][0]["reachable"] is True


def test_table_cells_escape_newlines_and_show_bad_bytes(cluster: FakeCluster) -> None:
    run(cluster, "put", "multi", "one\ntwo")
    run(cluster, "put", "raw", stdin=b"\x00\xff\x7f")
    assert run(cluster, "get", "", "--from-key", "-w", "table").lines[1:3] == [
        "multi  one\\ntwo      2                2             1        0",
        "raw    \\x00\\xff\\x7f  3                3             1        0",
    ]
    assert run(cluster, "get", "multi").lines == ["one", "two"]  # simple: as it is


def test_the_repl_completes_keys_the_cluster_holds(cluster: FakeCluster) -> None:
    """`get app/<TAB>`: one serializable read of the keys that start with it; commands
    whose first argument is not a key get none; keys with white space are left out."""
    for key in ("app/a", "app/b", "apple", "other", "app/with space"):
        assert run(cluster, "put", key, "v").code == EXIT_OK
    session = Session(
        Target(((None, cluster.endpoints[0]),), 3.0, 3.0),
        json_output=False,
        repl=True,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        stdin=io.StringIO(),
    )
    repl = Repl(session, interactive=False, stdin=io.StringIO(), stdout=io.StringIO())
    assert repl.completedefault("app/", "get app/", 4, 8) == ["app/a", "app/b"]
    assert repl.completedefault("app", "del app", 4, 7) == ["app/a", "app/b", "apple"]
    assert "other" in repl.completedefault("", "watch ", 6, 6)
    assert repl.completedefault("", "compact ", 8, 8) == []  # a revision, not a key
    assert repl.completedefault("app/a", "get app/a x", 10, 11) == []  # not the first
    ranges = [req for _, req in cluster.requests if req.op == "range"]
    assert ranges[-1].fields.get("serializable") and ranges[-1].fields.get("keys_only")
    session.close()
