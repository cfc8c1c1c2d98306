"""The lease commands of `zraft-client` (etcdctl v3's shape) against a fake cluster.

`lease grant|revoke|keep-alive|timetolive|list`, `put --lease`, and leases in
transactions, run as command lines through a `Session` toward `tests.fakeserver`, whose
state machine is the node's own; the tests check the printed lines, the exit codes and
the requests the fake received. `lease keep-alive` without `--once` runs until the lease
is lost, so those tests run it in a thread and end it through the fake (`expire`, or a
node that stops answering), waiting on conditions with bounded polls.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator

import pytest

from tests.fakeserver import FakeCluster
from tests.logscan import wait_for
from tests.test_cli_kv import Ran, last_request, run
from zraft.cli.client import Session, Target
from zraft.cli.repl import run_repl
from zraft.cli.txnparse import parse_request
from zraft.cli.usage import EXIT_FAILED, EXIT_OK, EXIT_USAGE


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    """A one-node fake cluster serving the multi-version store."""
    with FakeCluster() as fake:
        yield fake


def grant(cluster: FakeCluster, ttl: int = 60, lease_id: int = 7) -> int:
    """Grant lease `lease_id` through the CLI; returns its id."""
    ran = run(cluster, "lease", "grant", str(ttl), "--id", str(lease_id))
    assert ran.lines == [f"lease {lease_id} granted with TTL({ttl}s)"], ran.err
    return lease_id


def keepalives(cluster: FakeCluster) -> int:
    """How many `lease_keepalive` requests the fake received."""
    return sum(1 for _, req in cluster.requests if req.op == "lease_keepalive")


class Background:
    """A command line run in a thread (for `lease keep-alive`, which runs on)."""

    def __init__(self, cluster: FakeCluster, *argv: str) -> None:
        self.ran: list[Ran] = []
        self._thread = threading.Thread(target=lambda: self.ran.append(run(cluster, *argv)))
        self._thread.start()

    def result(self, timeout: float = 5.0) -> Ran:
        """Its outcome, once it ended (bounded wait)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the command did not end"
        return self.ran[0]


# --- grant, revoke, timetolive, list ----------------------------------------------------


def test_grant_prints_the_id_in_decimal_and_takes_hex(cluster: FakeCluster) -> None:
    ran = run(cluster, "lease", "grant", "30")
    assert (ran.code, ran.lines, ran.err) == (EXIT_OK, ["lease 1 granted with TTL(30s)"], "")
    assert "lease" not in last_request(cluster).fields  # no id: the cluster picks one
    ran = run(cluster, "lease", "grant", "30", "--id", "0x694d5765fc71500b")
    assert ran.lines == [f"lease {0x694D5765FC71500B} granted with TTL(30s)"]
    assert last_request(cluster).fields["lease"] == 0x694D5765FC71500B
    assert run(cluster, "lease", "grant", "5", "--id", "12", "-w", "table").lines == [
        "lease  ttl",
        "12     5",
    ]
    reply = run(cluster, "lease", "grant", "5", "--id", "13", "-w", "json").json()
    assert (reply["ok"], reply["lease"], reply["ttl"]) == (True, 13, 5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["grant"], "usage: lease grant TTL [--id ID]"),
        (["grant", "ten"], "TTL must be a number of seconds"),
        (["grant", "0"], "TTL must be at least 1 second"),
        (["grant", "-5"], "TTL must be at least 1 second"),
        (["grant", "5", "--id", "0"], "a lease id is 1 to 2**63-1"),
        (["grant", "5", "--id", "0xzz"], "expected a lease id (decimal, or hex with 0x)"),
        (["grant", "5", "--id", str(2**63)], "a lease id is 1 to 2**63-1"),
        (["revoke"], "usage: lease revoke ID"),
        (["revoke", "1", "2"], "usage: lease revoke ID"),
        (["revoke", "seven"], "expected a lease id"),
        (["revoke", "7", "--keys"], "--keys goes with `lease timetolive`"),
        (["timetolive", "7", "--once"], "--once goes with `lease keep-alive`"),
        (["list", "--id", "3"], "--id goes with `lease grant`"),
        (["list", "7"], "usage: lease list"),
        (["frob"], "invalid choice: 'frob'"),
        ([], "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2_and_send_nothing(
    cluster: FakeCluster, argv: list[str], message: str
) -> None:
    ran = run(cluster, "lease", *argv)
    assert ran.code == EXIT_USAGE and message in ran.err, ran.err
    assert cluster.requests == []


def test_refusals_exit_1_with_the_nodes_message(cluster: FakeCluster) -> None:
    grant(cluster, lease_id=7)
    taken = run(cluster, "lease", "grant", "60", "--id", "7")
    assert (taken.code, taken.err) == (EXIT_FAILED, "error: bad_request: lease 7 already exists\n")
    too_long = run(cluster, "lease", "grant", "9000000001")
    assert too_long.code == EXIT_FAILED and "error: bad_request: ttl 9000000001 is outside" in (
        too_long.err
    )
    gone = "error: lease_not_found: lease 99 does not exist (expired or revoked?)\n"
    for action in ("revoke", "timetolive", "keep-alive"):
        ran = run(cluster, "lease", action, "99")
        assert (ran.code, ran.out, ran.err) == (EXIT_FAILED, "", gone), action
    as_json = run(cluster, "lease", "revoke", "99", "-w", "json")
    assert as_json.code == EXIT_FAILED
    assert as_json.json()["error"]["code"] == "lease_not_found"


def test_timetolive_with_and_without_keys(cluster: FakeCluster) -> None:
    grant(cluster, ttl=60, lease_id=7)
    assert run(cluster, "put", "zoo2", "b", "--lease", "7").lines == ["OK"]
    assert run(cluster, "put", "zoo1", "a", "--lease", "0x7").lines == ["OK"]
    ran = run(cluster, "lease", "timetolive", "7")
    assert ran.lines == ["lease 7 granted with TTL(60s), remaining(60s)"]
    assert "keys" not in last_request(cluster).fields
    ran = run(cluster, "lease", "timetolive", "7", "--keys")
    assert ran.lines == [
        "lease 7 granted with TTL(60s), remaining(60s), attached keys([zoo1 zoo2])"
    ]
    assert run(cluster, "lease", "timetolive", "7", "--keys", "-w", "table").lines == [
        "lease  ttl  remaining  keys",
        "7      60   60         zoo1 zoo2",
    ]
    reply = run(cluster, "lease", "timetolive", "0x7", "--keys", "-w", "json").json()
    assert (reply["lease"], reply["ttl"], reply["keys"]) == (7, 60, ["zoo1", "zoo2"])
    grant(cluster, ttl=60, lease_id=8)
    empty = run(cluster, "lease", "timetolive", "8", "--keys")
    assert empty.lines == ["lease 8 granted with TTL(60s), remaining(60s), attached keys([])"]


def test_revoke_deletes_the_attached_keys(cluster: FakeCluster) -> None:
    grant(cluster, lease_id=7)
    run(cluster, "put", "a", "1", "--lease", "7")
    run(cluster, "put", "b", "2", "--lease", "7")
    run(cluster, "put", "c", "3")
    ran = run(cluster, "lease", "revoke", "7")
    assert (ran.code, ran.lines) == (EXIT_OK, ["lease 7 revoked"])
    assert run(cluster, "get", "a").code == EXIT_FAILED
    assert run(cluster, "get", "", "--prefix", "--keys-only").lines == ["c"]


def test_list_prints_how_many_then_each_id(cluster: FakeCluster) -> None:
    assert run(cluster, "lease", "list").lines == ["found 0 leases"]
    for lease_id in (30, 4, 1000):
        grant(cluster, lease_id=lease_id)
    assert run(cluster, "lease", "list").lines == ["found 3 leases", "4", "30", "1000"]
    assert run(cluster, "lease", "list", "-w", "table").lines == [
        "lease",
        "4",
        "30",
        "1000",
        "3 leases",
    ]
    assert run(cluster, "lease", "list", "-w", "json").json()["leases"] == [4, 30, 1000]


# --- keep-alive -------------------------------------------------------------------------


def test_keep_alive_once(cluster: FakeCluster) -> None:
    grant(cluster, ttl=60, lease_id=7)
    ran = run(cluster, "lease", "keep-alive", "7", "--once")
    assert (ran.code, ran.lines) == (EXIT_OK, ["lease 7 keepalived with TTL(60)"])
    reply = run(cluster, "lease", "keepalive", "7", "--once", "-w", "json").json()
    assert (reply["lease"], reply["ttl"], reply["remaining"]) == (7, 60, 60)
    assert keepalives(cluster) == 2


def test_keep_alive_refreshes_until_the_lease_is_gone(cluster: FakeCluster) -> None:
    grant(cluster, ttl=1, lease_id=7)  # refreshed every 1/3 s
    running = Background(cluster, "lease", "keep-alive", "7")
    wait_for(lambda: keepalives(cluster) >= 4, timeout=5)
    assert cluster.expire(7)
    ran = running.result()
    assert ran.code == EXIT_FAILED
    assert len(ran.lines) >= 4 and set(ran.lines) == {"lease 7 keepalived with TTL(1)"}
    assert ran.err == "error: lease_not_found: lease 7 does not exist (expired or revoked?)\n"


def test_keep_alive_says_when_the_lease_may_have_expired(cluster: FakeCluster) -> None:
    grant(cluster, ttl=1, lease_id=7)
    running = Background(cluster, "lease", "keep-alive", "7")
    wait_for(lambda: keepalives(cluster) >= 2, timeout=5)
    cluster.silent = {"n1"}
    ran = running.result()
    assert ran.code == EXIT_FAILED and ran.err.startswith("error: lease_lost: lease 7: ")
    assert "past its TTL of 1 s: it may have expired" in ran.err


def test_keep_alive_json_prints_each_reply_then_the_loss(cluster: FakeCluster) -> None:
    grant(cluster, ttl=1, lease_id=7)
    running = Background(cluster, "lease", "keep-alive", "7", "-w", "json")
    wait_for(lambda: keepalives(cluster) >= 3, timeout=5)
    cluster.expire(7)
    ran = running.result()
    *refreshes, last = [json.loads(line) for line in ran.lines]
    assert len(refreshes) >= 3 and all(r["ok"] and r["lease"] == 7 for r in refreshes)
    assert last["ok"] is False and last["lease"] == 7
    assert last["error"]["code"] == "lease_not_found"
    assert ran.code == EXIT_FAILED


# --- put --lease and transactions -------------------------------------------------------


def test_put_with_a_lease(cluster: FakeCluster) -> None:
    grant(cluster, lease_id=7)
    assert run(cluster, "put", "k", "v", "--lease", "7").lines == ["OK"]
    assert last_request(cluster).fields["lease"] == 7
    table = run(cluster, "get", "k", "--prefix", "-w", "table").lines
    assert table[1].split() == ["k", "v", "2", "2", "1", "7"]  # a grant makes no revision
    assert run(cluster, "put", "k", "w", "--lease", "0").lines == ["OK"]  # detach
    assert "lease" not in last_request(cluster).fields
    assert run(cluster, "lease", "timetolive", "7", "--keys").lines[0].endswith("keys([])")
    missing = run(cluster, "put", "k", "v", "--lease", "99")
    assert (missing.code, missing.err) == (
        EXIT_FAILED,
        "error: lease_not_found: lease 99 does not exist\n",
    )
    bad = run(cluster, "put", "k", "v", "--lease", "x")
    assert bad.code == EXIT_USAGE and "expected a lease id" in bad.err


def test_transactions_put_with_a_lease_and_compare_it(cluster: FakeCluster) -> None:
    grant(cluster, lease_id=7)
    assert parse_request("put k v --lease 0x7 --prev-kv") == {
        "op": "put",
        "key": "k",
        "value": "v",
        "prev_kv": True,
        "lease": 7,
    }
    ran = run(cluster, "txn", stdin=b'version("k") = "0"\n\nput k v --lease 7\n\n')
    assert (ran.code, ran.lines) == (EXIT_OK, ["SUCCESS", "", "OK"])
    checked = run(cluster, "txn", stdin=b'lease("k") = "7"\n\nget k\n\n')
    assert checked.lines == ["SUCCESS", "", "k", "v"]
    document = {"success": [{"op": "put", "key": "j", "value": "1", "lease": 7}]}
    from_json = run(cluster, "txn", "--file", "-", stdin=json.dumps(document).encode())
    assert from_json.lines == ["SUCCESS", "", "OK"]
    keys = run(cluster, "lease", "timetolive", "7", "--keys")
    assert keys.lines == ["lease 7 granted with TTL(60s), remaining(60s), attached keys([j k])"]
    gone = {"success": [{"op": "put", "key": "j", "value": "1", "lease": 99}]}
    refused = run(cluster, "txn", "--file", "-", stdin=json.dumps(gone).encode())
    assert refused.code == EXIT_FAILED and "lease_not_found" in refused.err


# --- the REPL and help ------------------------------------------------------------------


def test_lease_commands_in_the_repl(cluster: FakeCluster) -> None:
    script = "lease grant 60 --id 5\nput k v --lease 5\nlease timetolive 5 --keys\n"
    script += "lease keep-alive 5 --once\nlease revoke 5\nlease revoke 5\nlease list\n"
    stdin, out = io.StringIO(script), io.StringIO()
    target = Target(((None, cluster.endpoints[0]),), 3.0, 3.0)
    session = Session(
        target, json_output=False, repl=True, stdout=out, stderr=io.StringIO(), stdin=stdin
    )
    try:
        code = run_repl(session, stdin, out)
    finally:
        session.close()
    assert out.getvalue().splitlines() == [
        "lease 5 granted with TTL(60s)",
        "OK",
        "lease 5 granted with TTL(60s), remaining(60s), attached keys([k])",
        "lease 5 keepalived with TTL(60)",
        "lease 5 revoked",
        "error: lease_not_found: lease 5 does not exist (expired or revoked?)",
        "found 0 leases",
    ]
    assert code == EXIT_FAILED  # the last command that failed
    assert session.options_of("lease") == ["--id", "--json", "--keys", "--once", "--write-out"]


def test_help_says_ids_are_decimal_and_lists_every_form(cluster: FakeCluster) -> None:
    ran = run(cluster, "help", "lease")
    text = " ".join(ran.out.split())
    assert ran.code == EXIT_OK and "ids in decimal" in text and "hex with 0x" in text
    summary = run(cluster, "help").lines
    for form in (
        "lease grant TTL [--id ID]",
        "lease revoke ID",
        "lease keep-alive ID [--once]",
        "lease timetolive ID [--keys]",
        "lease list",
    ):
        assert any(line.startswith(form) for line in summary), form
    assert any(line.startswith("put KEY [VALUE] [--prev-kv] [--lease ID]") for line in summary)
