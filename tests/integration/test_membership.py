"""Membership changes on real node processes (issue 6), with a client writing throughout.

- Grow 3 -> 5 (two nodes started with `--join`, added, promoted once caught up), then
  shrink back to 3 by removing a follower and the leader itself.
- Replace a dead host: kill -9 a node and wipe its disk, add a new id, remove the old one.
- A removed node that keeps running stops campaigning.
- A second change while one is still uncommitted is refused (`conflict`).
- transfer_leader moves leadership to the named voter.
- `zraft-client` runs each membership command against real nodes.

Every acknowledged write is read back at the end, election safety is checked over all
logs, and the longest stretch without an acknowledged write is reported (and bounded).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import zmq

from tests import logscan
from tests.procs import ClusterFactory, ProcessCluster
from zraft import wire
from zraft.client import Client, ClientError

CLIENT_BIN = Path(__file__).resolve().parents[2] / "bin" / "zraft-client"
CHANGE_RETRY_ERRORS = frozenset({"unavailable", "timeout", "not_leader", "conflict"})
SOME_KEY = zmq.curve_keypair()[0].decode()  # a well-formed key nobody holds


class Writer(threading.Thread):
    """Writes w-0, w-1, ... through `zraft.client.Client` until stopped; records acks."""

    def __init__(self, cluster: ProcessCluster) -> None:
        super().__init__(daemon=True)
        endpoints = [cluster.client_endpoints[n] for n in cluster.ids]
        self._client = Client(endpoints, timeout=20.0, curve=cluster.curve)
        self._halt = threading.Event()
        self.acked: dict[str, str] = {}
        self.ack_times: list[tuple[float, float]] = []  # (monotonic, wall) per ack
        self.failures: list[str] = []

    def run(self) -> None:
        i = 0
        try:
            while not self._halt.is_set():
                key, value = f"w-{i}", f"value-{i}"
                try:
                    reply = self._client.put(key, value)
                except ClientError as exc:
                    self.failures.append(str(exc))
                    continue  # a retry with a new seq; the old one may or may not apply
                if reply.ok:
                    self.acked[key] = value
                    # Monotonic for the gaps; wall time only to find the matching log lines.
                    self.ack_times.append((time.monotonic(), time.time()))
                i += 1
        finally:
            self._client.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        assert not self.is_alive(), "the writer did not stop"

    def _longest_pair(self) -> tuple[tuple[float, float], tuple[float, float]]:
        pairs = list(itertools.pairwise(self.ack_times)) or [((0.0, 0.0), (0.0, 0.0))]
        return max(pairs, key=lambda p: p[1][0] - p[0][0])

    def longest_gap(self) -> float:
        """The longest time between two acknowledgements, in seconds (monotonic)."""
        before, after = self._longest_pair()
        return after[0] - before[0]

    def gap_window(self) -> tuple[float, float]:
        """When the longest time without an acknowledgement began and ended (wall clock,
        to compare with log timestamps)."""
        before, after = self._longest_pair()
        return before[1], after[1]


def events_during(cluster: ProcessCluster, window: tuple[float, float]) -> str:
    """The info-level events the nodes logged in `window` (wall clock), one per line: what
    the client's longest wait coincided with."""
    start, end = window
    lines = []
    for event in sorted(cluster.events(), key=lambda e: e["timestamp"]):
        at = datetime.fromisoformat(event["timestamp"]).timestamp()
        if start - 0.05 <= at <= end:
            fields = {k: v for k, v in event.items() if k not in ("timestamp", "level", "node")}
            lines.append(f"  +{at - start:6.3f}s {event['node']} {fields}")
    return "\n".join(lines)


def change(
    cluster: ProcessCluster, op: str, timeout: float = 30.0, **fields: Any
) -> dict[str, Any]:
    """Send a membership op to whichever node answers until it succeeds.

    A retry after a lost reply may find the change already made: `bad_request` saying
    so counts as done.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for node_id in cluster.running():
            try:
                reply = cluster.request(node_id, op, timeout=5.0, **fields)
            except AssertionError as exc:  # no reply
                last = exc
                continue
            if reply["ok"]:
                return reply
            last = reply
            code, message = reply["error"]["code"], reply["error"]["message"]
            done = "already" in message or "not a member" in message
            if code == "bad_request" and done:
                return reply
            if code not in CHANGE_RETRY_ERRORS:
                raise AssertionError(f"{op} {fields}: {reply}")
        time.sleep(0.05)  # pace retries while a previous change commits
    raise AssertionError(f"{op} {fields} did not succeed: {last}\n{cluster.describe()}")


def members(cluster: ProcessCluster, node_id: str) -> dict[str, str]:
    reply = cluster.request(node_id, "members")
    assert reply["ok"], reply
    return {row["id"]: row["role"] for row in reply["members"]}


def leader_members(cluster: ProcessCluster) -> dict[str, str]:
    return members(cluster, cluster.wait_leader())


def wait_every_member_replicating(cluster: ProcessCluster) -> None:
    """Wait until the leader sees every member acknowledge its whole log: each link in
    both directions works (a handshake refused while a member did not know another yet
    must not cut the link for good)."""

    def caught_up() -> bool:
        leader = cluster.wait_leader()
        reply = cluster.request(leader, "members")
        last = cluster.status(leader)["last_index"]
        return reply["ok"] and all(row["match_index"] == last for row in reply["members"])

    logscan.wait_for(caught_up, timeout=20, describe=cluster.describe)


def check_writes(cluster: ProcessCluster, writer: Writer, node_id: str) -> None:
    for key, value in writer.acked.items():
        reply = cluster.request_until_ok(node_id, "get", key=key)
        assert reply["value"] == value.encode(), (key, reply)


def test_grow_to_five_then_shrink_to_three_removing_the_leader(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    joiners = {n: cluster.add_joiner(n) for n in ("n4", "n5")}
    writer = Writer(cluster)
    writer.start()
    try:
        for node_id, fields in joiners.items():
            cluster.start(node_id)
            change(cluster, "add_member", id=node_id, **fields)
            logscan.wait_for(
                lambda node_id=node_id: leader_members(cluster).get(node_id) == "voter",
                timeout=30,
                describe=cluster.describe,
            )
        assert set(leader_members(cluster)) == {"n1", "n2", "n3", "n4", "n5"}
        old_leader = cluster.wait_leader()
        follower = next(n for n in ("n1", "n2", "n3") if n != old_leader)
        change(cluster, "remove_member", id=follower)
        change(cluster, "remove_member", id=old_leader)
        logscan.wait_for(
            lambda: (
                (leader := cluster.wait_leader()) not in (old_leader, follower)
                and set(members(cluster, leader)) == set(cluster.ids) - {old_leader, follower}
            ),
            timeout=30,
            describe=cluster.describe,
        )
        acked_before = len(writer.acked)
        logscan.wait_for(
            lambda: len(writer.acked) > acked_before + 20, timeout=30, describe=cluster.describe
        )
    finally:
        writer.stop()
    wait_every_member_replicating(cluster)
    new_leader = cluster.wait_leader()
    events = cluster.events()
    added = {(e["member"], e["role"]) for e in events if e["event"] == "member_added"}
    assert {("n4", "voter"), ("n5", "voter")} <= added
    removed = {e["member"] for e in events if e["event"] == "member_removed"}
    assert {old_leader, follower} <= removed
    check_writes(cluster, writer, new_leader)
    cluster.assert_safety()
    print(
        f"grow/shrink: {len(writer.acked)} writes acked, longest gap without an ack "
        f"{writer.longest_gap():.2f} s, client-side failures {len(writer.failures)}\n"
        f"{events_during(cluster, writer.gap_window())}"
    )
    assert writer.longest_gap() < 10.0, "bounded unavailability"


def test_replace_a_dead_host_with_a_new_id(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    dead = next(n for n in cluster.ids if n != leader)
    fields = cluster.add_joiner("n6")
    writer = Writer(cluster)
    writer.start()
    try:
        logscan.wait_for(lambda: len(writer.acked) > 20, timeout=20, describe=cluster.describe)
        cluster.kill(dead)
        for path in sorted((cluster.directory / "data" / dead).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        cluster.start("n6")
        change(cluster, "add_member", id="n6", **fields)
        logscan.wait_for(
            lambda: leader_members(cluster).get("n6") == "voter",
            timeout=30,
            describe=cluster.describe,
        )
        change(cluster, "remove_member", id=dead)
        logscan.wait_for(
            lambda: dead not in leader_members(cluster), timeout=30, describe=cluster.describe
        )
        acked_before = len(writer.acked)
        logscan.wait_for(
            lambda: len(writer.acked) > acked_before + 20, timeout=30, describe=cluster.describe
        )
    finally:
        writer.stop()
    wait_every_member_replicating(cluster)
    check_writes(cluster, writer, cluster.wait_leader())
    # The new node holds everything too (read locally on it).
    logscan.wait_for(
        lambda: (
            cluster.status("n6")["applied_index"]
            >= cluster.status(cluster.wait_leader())["commit_index"]
        ),
        timeout=20,
        describe=cluster.describe,
    )
    last = max(writer.acked, key=lambda k: int(k.split("-")[1]))
    reply = cluster.request("n6", "get", key=last, consistency="serializable")
    assert reply["value"] == writer.acked[last].encode()
    cluster.assert_safety()
    print(
        f"replace: longest gap {writer.longest_gap():.2f} s, {len(writer.acked)} acked\n"
        f"{events_during(cluster, writer.gap_window())}"
    )
    assert writer.longest_gap() < 10.0


def test_a_removed_node_stops_campaigning(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    gone = next(n for n in cluster.ids if n != leader)
    change(cluster, "remove_member", id=gone)
    logscan.wait_for(
        lambda: members(cluster, gone).keys() == set(cluster.ids) - {gone},
        timeout=10,
        describe=cluster.describe,
    )
    elections = len([e for e in cluster.node_events(gone) if e["event"] == "election_started"])
    terms = {cluster.status(n)["term"] for n in cluster.ids}
    # Watch for several election timeouts: the removed node, cut off from heartbeats,
    # would campaign within one if it still thought it could.
    window_end = time.monotonic() + 4 * cluster.election_timeout_ms[1] / 1000
    while time.monotonic() < window_end:
        assert cluster.is_running(gone)
        time.sleep(0.1)
    after = [e for e in cluster.node_events(gone) if e["event"] == "election_started"]
    assert len(after) == elections, after
    assert {cluster.status(n)["term"] for n in cluster.ids} == terms
    assert cluster.request_until_ok(leader, "put", key="k", value="v")["ok"]


def test_a_second_change_while_one_is_uncommitted_is_refused(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    others = [n for n in cluster.ids if n != leader]
    cluster.partition({leader}, set(others))  # the leader can append but not commit
    context: zmq.Context[Any] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if cluster.curve is not None:
        cluster.curve.apply(sock, cluster.client_endpoints[leader])
    sock.connect(cluster.client_endpoints[leader])
    try:
        key = {"public_key": SOME_KEY} if cluster.curve is not None else {}
        first = wire.encode_request(
            "add_member",
            id="n7",
            peer="tcp://127.0.0.1:1",
            client_endpoint="tcp://127.0.0.1:2",
            **key,
        )
        second = wire.encode_request(
            "add_member",
            id="n8",
            peer="tcp://127.0.0.1:3",
            client_endpoint="tcp://127.0.0.1:4",
            **key,
        )
        sock.send_multipart([b"", first])
        sock.send_multipart([b"", second])
        assert sock.poll(5000), "no answer to the second change"
        reply = wire.decode_reply(sock.recv_multipart()[-1])
        assert not reply["ok"] and reply["error"]["code"] == "conflict", reply
        assert "not committed yet" in reply["error"]["message"]
    finally:
        sock.close(linger=0)
        context.destroy(linger=0)
        cluster.heal()


def test_transfer_leader_moves_leadership(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    target = next(n for n in cluster.ids if n != leader)
    other = next(n for n in cluster.ids if n not in (leader, target))
    reply = cluster.request(other, "transfer_leader", id=target, timeout=10)  # forwarded
    assert reply["ok"] and reply["transferred_to"] == target, reply
    assert cluster.wait_leader() == target
    bad = cluster.request(target, "transfer_leader", id="nope", timeout=5)
    assert not bad["ok"] and bad["error"]["code"] == "bad_request"
    cluster.assert_safety()


def test_zraft_client_membership_commands(make_cluster: ClusterFactory) -> None:
    """`zraft-client members / add-learner / promote / remove / transfer-leader` end to end."""
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    fields = cluster.add_joiner("n4")
    peer, client = fields["peer"], fields["client_endpoint"]
    key = ["--public-key", fields["public_key"]] if "public_key" in fields else []
    cluster.start("n4")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(CLIENT_BIN), "--config", str(cluster.config_path), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    table = run("members")
    assert table.returncode == 0, table
    print(table.stdout)
    rows = [line.split() for line in table.stdout.splitlines()[1:-1]]
    leader = cluster.wait_leader()
    marked = [row[1:] for row in rows if row[0] == "*"]
    assert len(marked) == 1 and marked[0][:2] == [leader, "voter"], table.stdout
    assert marked[0][3:] == cluster_endpoints(cluster, leader), table.stdout
    assert all(row[-3].isdigit() for row in rows), "match indexes come from the leader"

    added = run("add-learner", "n4", peer, client, *key)
    assert added.returncode == 0 and added.stdout.startswith("OK: n4 added as a learner"), added
    assert run("add-learner", "n4", peer, client, *key).returncode == 1  # already a learner
    promoted = run("promote", "n4")
    assert (promoted.returncode, promoted.stdout.split()[:5]) == (
        0,
        ["OK:", "n4", "is", "a", "voter"],
    ), promoted
    listed = json.loads(run("--json", "members").stdout)
    assert {m["id"]: m["role"] for m in listed["members"]} == {
        "n1": "voter",
        "n2": "voter",
        "n3": "voter",
        "n4": "voter",
    }
    print(run("members").stdout)
    removed = run("remove", "n4")
    assert (removed.returncode, removed.stdout.split()[:3]) == (0, ["OK:", "n4", "removed"])
    target = next(n for n in ("n1", "n2", "n3") if n != cluster.wait_leader())
    moved = run("transfer-leader", target)
    assert (moved.returncode, moved.stdout) == (0, f"OK: {target} is the leader\n"), moved
    assert cluster.wait_leader() == target
    unknown = run("remove", "n9")
    assert unknown.returncode == 1 and "error: bad_request" in unknown.stderr
    cluster.assert_safety()


def cluster_endpoints(cluster: ProcessCluster, node_id: str) -> list[str]:
    """The peer and client endpoints of `node_id`, as the members table shows them."""
    return [cluster.peer_endpoints[node_id], cluster.client_endpoints[node_id]]
