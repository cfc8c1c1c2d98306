"""Endpoints and connections for the client policy: which endpoint is next, what is known
about each one's connection, and how an attempt without a reply ended. Pure: no zmq, no
clock, no sockets.

`Rotation` holds the endpoint list and the current position (rotation and leader
preference); `Links` holds what the driver's socket monitors reported (down, refused,
connected once); `NoReply` is the value a driver reports for an attempt without a usable
reply, and `Failure` says whether the request can have reached the node. `check_endpoint`
is the client's name for zraft's one endpoint rule, `zraft.config.is_endpoint`.

`zraft.client.policy` re-exports all of these; it decides what to do with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from zraft.config import is_endpoint


def check_endpoint(endpoint: str) -> str:
    """Return `endpoint` if it is a `tcp://HOST:PORT` endpoint (`zraft.config.is_endpoint`).

    The rule is the node's own, so the client refuses early what a node would refuse.

    Raises:
        ValueError: it is not; the message names the endpoint and the expected form.
    """
    if not is_endpoint(endpoint):
        raise ValueError(f"bad endpoint {endpoint!r}: expected tcp://HOST:PORT")
    return endpoint


def endpoint_list(endpoints: Iterable[str]) -> tuple[str, ...]:
    """`endpoints` checked (`check_endpoint`) and without repeats, in their first order.

    Raises:
        ValueError: a malformed endpoint.
    """
    return tuple(dict.fromkeys(check_endpoint(e) for e in endpoints))


# --- what a driver reports: an attempt without a usable reply ----------------------------


class Failure(StrEnum):
    """How an attempt ended without a usable reply."""

    UNSENT = "unsent"
    """The request never left this client: nothing can have happened."""
    REFUSED = "refused"
    """The node refused the security handshake (for good: libzmq does not retry)."""
    LOST = "lost"
    """The request may have reached the node; no (usable) reply came back."""


@dataclass(frozen=True, slots=True)
class NoReply:
    """An attempt without a usable reply, and why (`text` is what error messages show)."""

    failure: Failure
    detail: str

    @property
    def text(self) -> str:
        """The attempt's outcome as `ClientTimeout.attempts` and messages show it."""
        if self.failure is Failure.UNSENT:
            return "not sent: " + self.detail
        if self.failure is Failure.REFUSED:
            return "refused: " + self.detail
        return self.detail

    @classmethod
    def unsent(cls, detail: str) -> NoReply:
        """The request never left this client (`detail`: why)."""
        return cls(Failure.UNSENT, detail)

    @classmethod
    def refused(cls, why: str) -> NoReply:
        """The node refused this client's security handshake (`why`: what it means)."""
        return cls(Failure.REFUSED, why)

    @classmethod
    def lost(cls, detail: str) -> NoReply:
        """The request was sent; its reply is missing or unusable (`detail`: what happened)."""
        return cls(Failure.LOST, detail)

    @classmethod
    def timed_out(cls, wait_s: float) -> NoReply:
        """No reply within the attempt's wait."""
        return cls.lost(f"no reply within {wait_s:.1f} s")

    @classmethod
    def malformed(cls, reason: str) -> NoReply:
        """A reply arrived that does not decode (`reason`: the decoder's)."""
        return cls.lost(f"malformed reply ({reason})")


# --- which endpoint next, and what is known of each -------------------------------------


class Rotation:
    """Which endpoint a request goes to next.

    Args:
        endpoints: the endpoints, in preference order (not checked here: see
            `endpoint_list`); at least one.
        node_endpoints: node id -> endpoint, so a leader named in a reply can be preferred;
            pairs whose endpoint is not in `endpoints` are ignored.
        start: the position of the first endpoint to use.

    Raises:
        ValueError: no endpoints.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        node_endpoints: Mapping[str, str] | None = None,
        start: int = 0,
    ) -> None:
        self._endpoints = tuple(endpoints)
        if not self._endpoints:
            raise ValueError("a Client needs at least one endpoint")
        self._node_endpoints = {
            node_id: ep for node_id, ep in (node_endpoints or {}).items() if ep in self._endpoints
        }
        self._position = start % len(self._endpoints)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every endpoint, in the order given."""
        return self._endpoints

    @property
    def node_endpoints(self) -> Mapping[str, str]:
        """The known node id -> endpoint pairs."""
        return self._node_endpoints

    @property
    def position(self) -> int:
        """The index of `current` in `endpoints`."""
        return self._position

    @property
    def current(self) -> str:
        """Where the next attempt goes."""
        return self._endpoints[self._position]

    def advance(self) -> str:
        """Move on to the next endpoint (after the last, the first); return it."""
        self._position = (self._position + 1) % len(self._endpoints)
        return self.current

    def move_to(self, position: int) -> str:
        """Make `endpoints[position]` (modulo their number) the current one; return it."""
        self._position = position % len(self._endpoints)
        return self.current

    def prefer_leader(self, leader: str | None, exclude: str | None = None) -> bool:
        """Make `leader`'s endpoint the current one when known: it saves a forward hop.

        Args:
            leader: the leader a reply named (None: unknown).
            exclude: an endpoint not to switch to (the one that just said "not here").

        Returns:
            Whether the current endpoint changed to the leader's.
        """
        endpoint = self._node_endpoints.get(leader) if leader else None
        if endpoint is None or endpoint == exclude:
            return False
        position = self._endpoints.index(endpoint)
        changed = position != self._position
        self._position = position
        return changed

    def endpoint_of(self, node: str | None) -> str:
        """The endpoint of a node-addressed request: a known node id, or an endpoint.

        Raises:
            ValueError: `node` is unknown, or None with several endpoints.
        """
        if node is None:
            if len(self._endpoints) != 1:
                raise ValueError("name the node: this client has several endpoints")
            return self._endpoints[0]
        if node in self._node_endpoints:
            return self._node_endpoints[node]
        if node in self._endpoints:
            return node
        known = ", ".join(sorted(self._node_endpoints)) or "none"
        raise ValueError(f"unknown node {node!r} (known ids: {known}; or give an endpoint)")


class Links:
    """What the driver's socket monitors said about each endpoint's current connection.

    The driver reports `connected`, `lost` and `refused` as its monitor sees them, and
    `forget` when it closes an endpoint's socket (a new socket starts a new connection).
    """

    def __init__(self) -> None:
        self._down: set[str] = set()  # the connection is known to be lost (or refused)
        self._refused: dict[str, str] = {}  # endpoint -> why its handshake failed
        self._connected: set[str] = set()  # the current socket connected at least once

    def connected(self, endpoint: str) -> None:
        """The connection to `endpoint` is up."""
        self._down.discard(endpoint)
        self._connected.add(endpoint)

    def lost(self, endpoint: str) -> None:
        """The connection to `endpoint` dropped, or nothing listens there."""
        self._down.add(endpoint)

    def refused(self, endpoint: str, why: str) -> None:
        """`endpoint` refused the security handshake for good (`why`: what it means)."""
        self._refused[endpoint] = why

    def forget(self, endpoint: str) -> None:
        """The driver closed `endpoint`'s socket: what was known no longer holds."""
        self._down.discard(endpoint)
        self._refused.pop(endpoint, None)
        self._connected.discard(endpoint)

    def is_down(self, endpoint: str) -> bool:
        """Whether the connection to `endpoint` is known to be lost."""
        return endpoint in self._down

    def before_send(self, endpoint: str, endpoints: Iterable[str]) -> NoReply | None:
        """Why a request must not be sent to `endpoint` now, or None to send it.

        A lost connection is skipped unless every one of `endpoints` is lost too: then
        there is nowhere better, and the socket reconnects by itself.
        """
        if endpoint in self._refused:
            return NoReply.refused(self._refused[endpoint])
        if endpoint in self._down and not self._down.issuperset(endpoints):
            return NoReply.unsent("not connected")  # it went away and has not come back
        return None

    def while_waiting(self, endpoint: str) -> NoReply | None:
        """Whether a connection change ends the attempt waiting at `endpoint` (None: no).

        A socket that never connected still holds the request: it was never sent.
        """
        if endpoint in self._refused:
            return NoReply.refused(self._refused[endpoint])
        if endpoint in self._down and endpoint not in self._connected:
            return NoReply.unsent("connection refused")
        if endpoint in self._down:
            return NoReply.lost("connection lost")
        return None
