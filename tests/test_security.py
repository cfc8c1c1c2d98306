"""Keys, key files, the ZAP policy, roles and rate limits (`zraft.net.security`, `zraft.net.zap`),
and a secured transport over real 127.0.0.1 sockets."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests.procs import write_cluster_config
from zraft import config
from zraft.cli import keygen as keygen_cli
from zraft.net import security
from zraft.net.security import ClientKey, Keypair, SecurityError
from zraft.net.transport import (
    CLIENT_ZAP_DOMAIN,
    PEER_ZAP_DOMAIN,
    REDIAL_FIRST_S,
    CurveKeys,
    TransportError,
    ZmqTransport,
)
from zraft.net.zap import AuthRecord, EventLimiter, ZapHandler, decide
from zraft.wire import ops

WAIT_S = 5.0

# --- key files ----------------------------------------------------------------------------


def test_keygen_writes_a_shareable_public_and_a_private_secret(tmp_path: Path) -> None:
    public_path, secret_path = security.keygen(tmp_path / "keys" / "n1")
    assert (public_path.name, secret_path.name) == ("n1.pub", "n1.key")
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    pair = security.read_secret_key(secret_path)
    assert security.read_public_key(public_path) == pair.public
    assert security.is_z85_key(pair.public.decode()) and security.is_z85_key(pair.secret.decode())
    assert pair.secret.decode() not in repr(pair)  # never shown in a repr or traceback


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    security.keygen(tmp_path / "n1")
    before = (tmp_path / "n1.key").read_bytes()
    with pytest.raises(SecurityError, match="already exists"):
        security.keygen(tmp_path / "n1")
    assert (tmp_path / "n1.key").read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_secret_key_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    _, secret_path = security.keygen(tmp_path / "n1")
    os.chmod(secret_path, mode)
    with pytest.raises(SecurityError) as info:
        security.read_secret_key(secret_path)
    assert f"chmod 600 {secret_path}" in str(info.value)
    assert f"{mode:04o}" in str(info.value)


def test_bad_key_files_are_refused_without_echoing_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(SecurityError, match="cannot read secret key"):
        security.read_secret_key(missing)
    bad = tmp_path / "bad.key"
    secretish = "x" * 39
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, secretish.encode())
    os.close(fd)
    with pytest.raises(SecurityError, match="expected one secret key") as info:
        security.read_secret_key(bad)
    assert secretish not in str(info.value)
    (tmp_path / "bad.pub").write_text("a\nb\n")
    with pytest.raises(SecurityError, match="expected one public key"):
        security.read_public_key(tmp_path / "bad.pub")


def test_fingerprints_are_short_and_agree_for_text_and_raw_keys() -> None:
    public, _ = zmq.curve_keypair()
    fp = security.fingerprint(public)
    assert len(fp) == 8 and int(fp, 16) >= 0
    assert security.fingerprint(zmq.utils.z85.decode(public)) == fp
    assert security.fingerprint(public.decode()) == fp


# --- roles --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("read", {"read", "local"}),
        ("write", {"read", "local", "write"}),
        ("admin", {"read", "local", "write", "admin"}),
        ("root", set()),  # unknown roles allow nothing
    ],
)
def test_roles(role: str, allowed: set[str]) -> None:
    """The role matrix: `read` keys read and look, `write` keys also write, `admin` keys
    also change the cluster and take snapshots (each op's `role` in the op table)."""
    kinds = {
        "get": "read",
        "range": "read",
        "alarm_list": "read",
        "lease_timetolive": "read",
        "lease_leases": "read",
        "watch": "read",
        "status": "local",
        "members": "local",
        "put": "write",
        "delete": "write",
        "cas": "write",
        "delete_range": "write",
        "txn": "write",
        "compact": "write",
        "alarm_disarm": "admin",
        "lease_grant": "write",
        "lease_revoke": "write",
        "lease_keepalive": "write",
        "add_member": "admin",
        "promote_member": "admin",
        "remove_member": "admin",
        "transfer_leader": "admin",
        "snapshot": "admin",
        "snapshot_read": "admin",
    }
    assert set(kinds) == set(ops.OPS)
    for op, kind in kinds.items():
        assert ops.role_allows(role, ops.OPS[op]) == (kind in allowed), (role, op)


def test_required_role_names_the_weakest_role() -> None:
    assert [ops.OPS[op].role for op in ("get", "status", "put", "add_member")] == [
        "read",
        "read",
        "write",
        "admin",
    ]


# --- the ZAP policy -----------------------------------------------------------------------

MEMBER, CLIENT, STRANGER = b"m" * 32, b"c" * 32, b"s" * 32
PEERS = {MEMBER: "n2"}
CLIENTS = {CLIENT: ClientKey(role="read", name="dash")}


@pytest.mark.parametrize(
    ("source", "mechanism", "key", "admitted", "user"),
    [
        ("peer", b"CURVE", MEMBER, True, "n2"),  # the key decides the member id
        ("peer", b"CURVE", STRANGER, False, ""),
        ("peer", b"CURVE", CLIENT, False, ""),  # a client key is no member
        ("client", b"CURVE", CLIENT, True, "read"),  # the key decides the role
        ("client", b"CURVE", MEMBER, False, ""),  # a member key is no client key
        ("client", b"CURVE", STRANGER, False, ""),
        ("peer", b"NULL", None, False, ""),
        ("client", b"PLAIN", None, False, ""),
        (None, b"CURVE", MEMBER, False, ""),  # a domain this node does not serve
    ],
)
def test_decide(
    source: str | None, mechanism: bytes, key: bytes | None, admitted: bool, user: str
) -> None:
    decision = decide(source, mechanism, key, PEERS, CLIENTS)
    assert (decision.admitted, decision.user_id) == (admitted, user)
    assert bool(decision.reason) != admitted


def test_a_removed_members_key_is_refused_and_readmitted_when_no_longer_revoked() -> None:
    removed = decide("peer", b"CURVE", MEMBER, PEERS, CLIENTS, frozenset({"n2"}))
    assert not removed.admitted and removed.reason == "the key of n2, removed from the cluster"
    other = decide("peer", b"CURVE", MEMBER, PEERS, CLIENTS, frozenset({"n3"}))
    assert other.admitted and other.user_id == "n2"


def test_the_event_limiter_counts_what_it_holds_back() -> None:
    now = [100.0]
    limiter = EventLimiter(lambda: now[0], limit=3, window_s=1.0)
    assert [limiter.admit() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] += 0.5
    assert limiter.admit() is None
    now[0] += 0.6  # a new window: the next event reports the three held back
    assert limiter.admit() == 3
    assert limiter.admit() == 0


# --- resolving a cluster's keys ----------------------------------------------------------


def test_node_keys_bind_every_members_key_to_its_id(tmp_path: Path) -> None:
    cluster = config.load(write_cluster_config(tmp_path, 3))
    keys = security.node_keys(cluster, "n1")
    assert keys.own.public == security.read_public_key(tmp_path / "keys" / "n1.pub")
    assert set(keys.peer_server_keys) == {"n2", "n3"}
    assert sorted(keys.peer_ids_by_key.values()) == ["n1", "n2", "n3"]
    assert sorted(c.role for c in keys.clients_by_key.values()) == ["admin", "read", "write"]


def test_a_secret_key_that_does_not_match_the_config_is_refused(tmp_path: Path) -> None:
    path = write_cluster_config(tmp_path, 2)
    keys = tmp_path / "keys"
    (keys / "n1.key").unlink()
    (keys / "n1.key").symlink_to(keys / "n2.key")
    with pytest.raises(SecurityError, match="belongs to public key"):
        security.node_keys(config.load(path), "n1")


def test_a_key_listed_twice_is_refused(tmp_path: Path) -> None:
    path = write_cluster_config(tmp_path, 2)
    n1 = security.read_public_key(tmp_path / "keys" / "n1.pub").decode()
    text = path.read_text().replace(
        'role = "read"', f'role = "read"\n\n[[client_key]]\npublic_key = "{n1}"\nrole = "admin"', 1
    )
    path.write_text(text)
    with pytest.raises(SecurityError, match="listed for both node n1 and client key"):
        security.node_keys(config.load(path), "n2")


def test_client_key_precedence_flag_env_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = config.load(write_cluster_config(tmp_path, 1))
    keys = tmp_path / "keys"
    monkeypatch.delenv(security.ENV_CLIENT_KEY, raising=False)
    assert security.client_key_file(cluster, None) == keys / "admin.key"
    monkeypatch.setenv(security.ENV_CLIENT_KEY, str(keys / "reader.key"))
    assert security.client_key_file(cluster, None) == keys / "reader.key"
    assert security.client_key_file(cluster, keys / "writer.key") == keys / "writer.key"
    curve = security.client_curve(cluster, keys / "writer.key")
    assert curve is not None
    assert curve.own.public == security.read_public_key(keys / "writer.pub")
    assert set(curve.server_keys) == {cluster.nodes[0].client}


def test_a_secured_client_without_a_key_is_told_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_cluster_config(tmp_path, 1)
    text = path.read_text()
    path.write_text(text[: text.index("[client]")])
    monkeypatch.delenv(security.ENV_CLIENT_KEY, raising=False)
    with pytest.raises(SecurityError, match="--key FILE, set ZRAFT_CLIENT_KEY"):
        security.client_curve(config.load(path))
    plain = write_cluster_config(tmp_path / "plain", 1, security_mode="none")
    assert security.client_curve(config.load(plain)) is None


def test_keygen_command_writes_what_a_config_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    local = (Path(__file__).resolve().parent.parent / "conf" / "local.toml").read_text()
    (conf / "local.toml").write_text(local)
    assert keygen_cli.main(["--config", str(conf / "local.toml")]) == 0
    written = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert written == sorted(
        f"{n}.{ext}" for n in ("n1", "n2", "n3", "client") for ext in ("pub", "key")
    )
    assert keygen_cli.main(["--config", str(conf / "local.toml")]) == 0  # nothing missing
    assert capsys.readouterr().out.count("wrote") == 4
    cluster = config.load(conf / "local.toml")
    security.node_keys(cluster, "n2")  # consistent and readable
    assert keygen_cli.main(["--out", str(tmp_path / "keys" / "n1")]) == 2  # no overwrite


# --- a secured transport ------------------------------------------------------------------


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context for raw test sockets; destroy() closes them all with linger 0."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _endpoint() -> str:
    """A free tcp endpoint on 127.0.0.1 (a plain socket: zmq releases ports asynchronously)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def test_a_secured_transport_names_senders_by_their_key(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """The ZAP handler, polled in the test's loop, admits member n2's key (whatever
    routing id the connection presents) and names the sender n2; a stranger's key is
    refused and nothing it sends is delivered; a client key's role arrives with its
    request."""
    me, n2, stranger, client = (Keypair(*zmq.curve_keypair()) for _ in range(4))
    peer_ep, client_ep, n2_ep = _endpoint(), _endpoint(), _endpoint()
    peers = {zmq.utils.z85.decode(n2.public): "n2"}
    clients = {zmq.utils.z85.decode(client.public): ClientKey("write", "ops")}
    with ZmqTransport(
        "n1",
        peer_ep,
        client_ep,
        {"n2": n2_ep},
        curve=CurveKeys(me.public, me.secret, {"n2": n2.public}),
    ) as transport:
        assert transport.secured and transport.zap_socket is not None
        handler = ZapHandler(
            transport.zap_socket,
            {PEER_ZAP_DOMAIN: "peer", CLIENT_ZAP_DOMAIN: "client"},
            peers,
            clients,
        )
        poller = zmq.Poller()
        transport.register(poller)

        def dealer(pair: Keypair, endpoint: str, rid: bytes | None = None) -> zmq.Socket[bytes]:
            sock = ctx.socket(zmq.DEALER if endpoint == peer_ep else zmq.REQ)
            sock.linger = 0
            if rid is not None:
                sock.routing_id = rid
            sock.curve_serverkey, sock.curve_publickey = me.public, pair.public
            sock.curve_secretkey = pair.secret
            sock.connect(endpoint)
            return sock

        sockets = [dealer(stranger, peer_ep, b"n2"), dealer(n2, peer_ep, b"n3")]
        sockets.append(dealer(client, client_ep))  # kept referenced: a GC'd socket closes
        for sock, body in zip(sockets, (b"from a stranger", b"from n2", b"request"), strict=True):
            sock.send(body)
        records: list[AuthRecord] = []
        frames: list[tuple[bytes, bytes]] = []
        requests = []
        deadline = time.monotonic() + WAIT_S
        while (len(records) < 3 or not frames or not requests) and time.monotonic() < deadline:
            events = dict(poller.poll(20))
            if events.get(handler.socket):
                records += handler.handle()
            frames += transport.recv_peers()
            requests += transport.recv_client_requests()
        assert frames == [(b"n2", b"from n2")], (records, transport.take_bad_inputs())
        assert [(r.body, r.user) for r in requests] == [(b"request", "write")]
        by_outcome = sorted((r.source, r.admitted, r.user) for r in records)
        assert by_outcome == [("client", True, "write"), ("peer", False, ""), ("peer", True, "n2")]
        denied = next(r for r in records if not r.admitted)
        assert denied.key == security.fingerprint(stranger.public)
        assert denied.mechanism == "CURVE" and denied.address == "127.0.0.1"
        assert transport.take_bad_inputs() == []


def test_two_secured_transports_cannot_share_a_context(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    pair = Keypair(*zmq.curve_keypair())
    curve = CurveKeys(pair.public, pair.secret, {})
    first = ZmqTransport("n1", _endpoint(), _endpoint(), {}, curve=curve, context=ctx)
    try:
        with pytest.raises(TransportError, match="ZAP handler"):
            ZmqTransport("n2", _endpoint(), _endpoint(), {}, curve=curve, context=ctx)
    finally:
        first.close()


def test_a_refused_peer_link_is_dialed_again_once_the_peer_admits_us() -> None:
    """libzmq never retries a handshake the peer's ZAP handler refused. n2 does not admit
    n1's key at first (as a member that has not yet applied the change adding n1): n1's
    link to n2 fails, and n1 dials again only after `REDIAL_FIRST_S` of its clock; once n2
    admits the key, the redialed link delivers n1's frames, named by its key."""
    n1, n2 = (Keypair(*zmq.curve_keypair()) for _ in range(2))
    n1_ep, n2_ep = _endpoint(), _endpoint()
    domains = {PEER_ZAP_DOMAIN: "peer", CLIENT_ZAP_DOMAIN: "client"}
    with (
        ZmqTransport(
            "n1",
            n1_ep,
            _endpoint(),
            {"n2": n2_ep},
            curve=CurveKeys(n1.public, n1.secret, {"n2": n2.public}),
        ) as sender,
        ZmqTransport(
            "n2",
            n2_ep,
            _endpoint(),
            {},
            curve=CurveKeys(n2.public, n2.secret, {}),
        ) as receiver,
    ):
        assert receiver.zap_socket is not None
        handler = ZapHandler(receiver.zap_socket, domains, {}, {})  # admits nobody yet
        receiver.accept_from(["n1"])
        now = 100.0  # the sender's clock, in the test's hands
        records: list[AuthRecord] = []
        frames: list[tuple[bytes, bytes]] = []
        redialed: list[str] = []

        def turn() -> None:
            """One loop turn of both nodes (real time passes for the handshakes)."""
            sender.send("n2", b"hello")
            if handler.socket.poll(20, zmq.POLLIN):
                records.extend(handler.handle())
            frames.extend(receiver.recv_peers())
            redialed.extend(sender.redial_refused(now))

        deadline = time.monotonic() + WAIT_S
        while not records and time.monotonic() < deadline:
            turn()
        assert [r.admitted for r in records] == [False], records
        handler.admit_peers({zmq.utils.z85.decode(n1.public): "n1"})
        for _ in range(10):  # the clock stands still: no redial yet, nothing delivered
            turn()
        assert (redialed, frames) == ([], [])
        now += REDIAL_FIRST_S
        deadline = time.monotonic() + WAIT_S
        while not frames and time.monotonic() < deadline:
            turn()
        assert redialed == ["n2"]
        assert frames and set(frames) == {(b"n1", b"hello")}, records
        assert [r.admitted for r in records] == [False, True]
