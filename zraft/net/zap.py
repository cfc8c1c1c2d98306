"""The ZAP handler: who may connect, decided inside the node's own poller loop.

libzmq asks a ZAP handler (RFC 27) about every new connection to a socket with a ZAP
domain, and a CURVE server without one admits ANY client key (PLATFORM.md §4a). zraft
serves ZAP from the node's loop, with no authentication thread: the transport binds a
ROUTER at `inproc://zeromq.zap.01` (`transport.ZAP_ENDPOINT`) in the node's context
before its curve sockets bind, the node polls it with the others, and
`ZapHandler.handle` answers what arrived.

- `decide` is the pure policy: on the peer domain a key is admitted only if it belongs
  to a cluster member, and the ZAP `User-Id` becomes that member's id; on the client
  domain only a configured client key is admitted, and `User-Id` becomes its role.
  Everything else (unknown keys, any mechanism but CURVE, an unknown domain) is refused.
  The node trusts `User-Id`, never a routing id or a payload field, to say who speaks.
- `ZapHandler` is the socket glue: it parses requests, replies 200 or 400, and returns
  `AuthRecord`s for the node to log.
- `EventLimiter` bounds how many `auth_denied` / `auth_admitted` events are written, so a
  flood of connection attempts cannot fill the disk; what it holds back is counted and
  reported in the next event's `suppressed` field.

A refused client is not retried by libzmq (it treats a 400 as a protocol error), so a
member whose key is missing from a node's config stays cut off from that node until it
reconnects: key rotation must add new keys before they are used (README, "Rotating keys").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import zmq

from zraft.net.security import ClientKey, fingerprint

_ZAP_VERSION = b"1.0"
_CURVE = b"CURVE"
_MAX_TEXT = 80


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one ZAP request: admit with a user id, or refuse with a reason."""

    admitted: bool
    user_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuthRecord:
    """One decided connection attempt, for the `auth_admitted` / `auth_denied` events.

    `key` is the fingerprint of the presented public key ("" when none was presented);
    `user` the id or role it was admitted as; `reason` why it was refused.
    """

    admitted: bool
    source: str
    address: str
    key: str
    mechanism: str
    user: str = ""
    reason: str = ""


def decide(
    source: str | None,
    mechanism: bytes,
    client_key: bytes | None,
    peers_by_key: Mapping[bytes, str],
    clients_by_key: Mapping[bytes, ClientKey],
    revoked: frozenset[str] = frozenset(),
) -> Decision:
    """Decide one connection attempt (pure: no sockets, no clock).

    Args:
        source: `peer` or `client` (from the socket's ZAP domain), None for a domain this
            node does not know.
        mechanism: the ZMTP security mechanism (`CURVE`, `NULL`, `PLAIN`).
        client_key: the raw 32-byte CURVE public key of the connecting side, if any.
        peers_by_key: raw key -> member id (members' keys, including rotation extras).
        clients_by_key: raw key -> the admitted client key's role and name.
        revoked: member ids removed from the cluster: their keys are refused.
    """
    if source is None:
        return Decision(False, reason="unknown ZAP domain")
    if mechanism != _CURVE or client_key is None:
        return Decision(False, reason=f"mechanism {mechanism.decode('ascii', 'replace')}")
    if source == "peer":
        member = peers_by_key.get(client_key)
        if member is None:
            return Decision(False, reason="not a cluster member's key")
        if member in revoked:
            return Decision(False, reason=f"the key of {member}, removed from the cluster")
        return Decision(True, user_id=member)
    client = clients_by_key.get(client_key)
    if client is None:
        return Decision(False, reason="not an admitted client key")
    return Decision(True, user_id=client.role)


class ZapHandler:
    """Answers ZAP requests on a ROUTER bound at `ZAP_ENDPOINT` (socket glue for `decide`).

    Args:
        sock: the ZAP ROUTER (polled by the node's loop).
        domains: ZAP domain -> `peer` or `client`.
        peers_by_key, clients_by_key: see `decide`.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        domains: Mapping[bytes, str],
        peers_by_key: Mapping[bytes, str],
        clients_by_key: Mapping[bytes, ClientKey],
    ) -> None:
        self._sock = sock
        self._domains = dict(domains)
        self._peers = dict(peers_by_key)
        self._clients = dict(clients_by_key)
        self._revoked: frozenset[str] = frozenset()

    def admit_peers(self, peers_by_key: Mapping[bytes, str]) -> None:
        """Also admit these member keys (raw 32 bytes -> member id): a membership change
        added a node the configuration file does not name."""
        self._peers.update(peers_by_key)

    def revoke(self, member_ids: frozenset[str]) -> None:
        """Refuse the keys of these members from now on (removed; re-added: not any more)."""
        self._revoked = member_ids

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The ZAP ROUTER, to register with the poller."""
        return self._sock

    def handle(self, budget: int = 64) -> list[AuthRecord]:
        """Answer up to `budget` pending requests without blocking; return what was decided."""
        records: list[AuthRecord] = []
        for _ in range(budget):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            record = self._answer(frames)
            if record is not None:
                records.append(record)
        return records

    def _answer(self, frames: list[bytes]) -> AuthRecord | None:
        # [routing id, b"", version, request id, domain, address, identity, mechanism, creds...]
        if len(frames) < 8 or frames[1] != b"":
            return None  # not a ZAP request; only libzmq can reach this inproc socket
        rid, _, version, request_id, domain, address, _identity, mechanism, *creds = frames
        key = creds[0] if mechanism == _CURVE and creds and len(creds[0]) == 32 else None
        source = self._domains.get(domain)
        if version != _ZAP_VERSION:
            decision = Decision(False, reason="bad ZAP version")
        else:
            decision = decide(source, mechanism, key, self._peers, self._clients, self._revoked)
        status = b"200" if decision.admitted else b"400"
        text = b"OK" if decision.admitted else decision.reason.encode()[:_MAX_TEXT]
        reply = [rid, b"", _ZAP_VERSION, request_id, status, text, decision.user_id.encode(), b""]
        # If libzmq's own inproc pipe is full the handshake fails; the client may retry.
        with contextlib.suppress(zmq.Again):
            self._sock.send_multipart(reply, zmq.NOBLOCK)
        return AuthRecord(
            admitted=decision.admitted,
            source=source or domain.decode("ascii", "replace")[:_MAX_TEXT],
            address=address.decode("ascii", "replace")[:_MAX_TEXT],
            key=fingerprint(key) if key is not None else "",
            mechanism=mechanism.decode("ascii", "replace")[:_MAX_TEXT],
            user=decision.user_id,
            reason=decision.reason,
        )


class EventLimiter:
    """At most `limit` events per `window_s` seconds; the rest are counted, not logged.

    Args:
        clock: monotonic seconds (injected, so tests need no sleeping).
    """

    def __init__(self, clock: Callable[[], float], limit: int = 5, window_s: float = 1.0) -> None:
        self._clock = clock
        self._limit = limit
        self._window_s = window_s
        self._window_start = float("-inf")
        self._in_window = 0
        self._suppressed = 0

    def admit(self) -> int | None:
        """Ask to log one event: the number held back before it (log it), or None (drop it)."""
        now = self._clock()
        if now - self._window_start >= self._window_s:
            self._window_start = now
            self._in_window = 0
        if self._in_window >= self._limit:
            self._suppressed += 1
            return None
        self._in_window += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
