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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

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
