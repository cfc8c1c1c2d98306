"""Test-only fault injection: partition a node by naming peers in a control file.

Where network namespaces are unavailable, fault tests still need partitions. A node
started with `zraft-node --test-fault-file PATH` re-reads PATH whenever it changes (checked
every `CHECK_EVERY_TICKS` ticks) and drops all traffic to and from the peers it lists, in
the transport, while TCP links stay up, exactly like a firewall rule dropping packets.

The file is JSON: ``{"block": ["n2", "n3"], "loss": 0.2}``: `block` cuts those peers
off, `loss` drops that share of this node's outgoing peer messages at random (packet loss);
both are optional, and an empty or missing file heals. Only the command-line flag enables
this; nothing received on the wire can.
A malformed file is reported once per change and otherwise ignored (the last good setting
stays), so a test's half-written file cannot stop a node.

`FaultyTransport` wraps the node's transport with these hooks, so the node itself holds
no fault code: it re-reads the file on `on_tick`, blocks peers in the transport below,
and drops the `loss` share of the Raft messages the node sends.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zraft.net.base import BadInput, ClientRequest, Readiness, Transport

CHECK_EVERY_TICKS = 5


@dataclass(frozen=True, slots=True)
class FaultSetting:
    """What the control file asks for: peers to cut off and a share of sends to drop."""

    block: frozenset[str] = frozenset()
    loss: float = 0.0


class FaultFile:
    """Watches one control file and says which peers to block when it changes."""

    def __init__(self, path: Path, peers: frozenset[str]) -> None:
        self._path = path
        self._peers = peers
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) last read
        self._ticks = 0

    def poll(self) -> FaultSetting | str | None:
        """Call once per tick; returns a new setting, an error text, or None (no change)."""
        self._ticks += 1
        if self._ticks % CHECK_EVERY_TICKS:
            return None
        try:
            st = os.stat(self._path)
            stamp: tuple[int, int] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._seen:
            return None
        self._seen = stamp
        return self._read() if stamp != (0, 0) else FaultSetting()

    def _read(self) -> FaultSetting | str:
        try:
            text = self._path.read_text()
            data = json.loads(text) if text.strip() else {}
            block = frozenset(data.get("block", ()))
            loss = data.get("loss", 0.0)
            if not all(isinstance(p, str) for p in block):
                raise TypeError("block must be a list of peer ids")
            if isinstance(loss, bool) or not isinstance(loss, int | float) or not 0 <= loss <= 1:
                raise ValueError(f"loss must be a number in [0, 1], got {loss!r}")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            return f"unreadable fault file {self._path}: {exc}"
        unknown = block - self._peers
        if unknown:
            return f"fault file {self._path} names unknown peers {sorted(unknown)}"
        return FaultSetting(block, float(loss))


class FaultyTransport:
    """A `Transport` with the control file's faults (TESTS ONLY; see the module doc).

    Args:
        inner: the transport to wrap.
        path: the control file.
        peers: the peer ids the file may name.
        report: called with the text of an unreadable file (logged as `bad_frame`).
    """

    def __init__(
        self,
        inner: Transport,
        path: Path,
        peers: frozenset[str],
        report: Callable[[str], None],
    ) -> None:
        self._inner = inner
        self._file = FaultFile(path, peers)
        self._report = report
        self._loss = 0.0
        self._rng = random.Random()
        self.node_id = inner.node_id

    @property
    def zap_socket(self) -> Any:
        """The inner transport's ZAP socket."""
        return self._inner.zap_socket

    def on_tick(self, now: float) -> list[str]:
        """The inner upkeep (its broken links returned), then the control file."""
        lost = self._inner.on_tick(now)
        change = self._file.poll()
        if isinstance(change, str):
            self._report(change)
        elif change is not None:
            self._inner.set_blocked_peers(change.block)
            self._loss = change.loss
        return lost

    def send_message(self, peer_id: str, frame: bytes) -> bool:
        """Send a Raft message, or drop it as the file's `loss` says (a drop is silent,
        like a lost packet: Raft retries)."""
        if self._loss and self._rng.random() < self._loss:
            return True
        return self._inner.send(peer_id, frame)

    def poll(self, timeout_ms: int) -> Readiness:
        """See `Transport.poll`."""
        return self._inner.poll(timeout_ms)

    def recv_peers(self, budget: int) -> list[tuple[bytes, bytes]]:
        """See `Transport.recv_peers`."""
        return self._inner.recv_peers(budget)

    def recv_client_requests(self, budget: int) -> list[ClientRequest]:
        """See `Transport.recv_client_requests`."""
        return self._inner.recv_client_requests(budget)

    def take_bad_inputs(self) -> list[BadInput]:
        """See `Transport.take_bad_inputs`."""
        return self._inner.take_bad_inputs()

    def send(self, peer_id: str, frame: bytes) -> bool:
        """See `Transport.send`."""
        return self._inner.send(peer_id, frame)

    def has_peer(self, peer_id: str) -> bool:
        """See `Transport.has_peer`."""
        return self._inner.has_peer(peer_id)

    def reply(self, envelope: Sequence[bytes], body: bytes) -> bool:
        """See `Transport.reply`."""
        return self._inner.reply(envelope, body)

    def accept_from(self, peer_ids: Iterable[str]) -> None:
        """See `Transport.accept_from`."""
        self._inner.accept_from(peer_ids)

    def update_peers(
        self, peers: Mapping[str, str], server_keys: Mapping[str, bytes] | None = None
    ) -> None:
        """See `Transport.update_peers`."""
        self._inner.update_peers(peers, server_keys)

    def set_blocked_peers(self, peer_ids: Iterable[str]) -> None:
        """See `Transport.set_blocked_peers`."""
        self._inner.set_blocked_peers(peer_ids)

    @property
    def learned_cluster_id(self) -> str:
        """See `Transport.learned_cluster_id`."""
        return self._inner.learned_cluster_id

    def set_cluster_id(self, cluster_id: str) -> None:
        """See `Transport.set_cluster_id`."""
        self._inner.set_cluster_id(cluster_id)

    def close(self) -> None:
        """See `Transport.close`."""
        self._inner.close()
