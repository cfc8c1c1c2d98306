"""Real `Node`s in one thread, driven round-robin on one fake clock (a test helper).

Each round advances the clock by one tick and turns every node's loop once, so elections
follow the seeded election timeouts rather than the machine's load. With real sockets
(`io_pause_s` > 0) each round also gives libzmq's I/O threads a moment; over the
in-memory transport nothing else takes time, and a run is fully deterministic.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import logscan
from tests.fakeclock import FakeClock
from zraft.config import ClusterConfig
from zraft.node import Node

MAX_ROUNDS = 3000  # 30 s of fake time at 10 ms a round: far beyond any election here


class NodeCluster:
    """Nodes sharing one fake clock, driven round-robin by the test.

    Args:
        cluster: the configuration (one `Node` per `[[node]]`).
        log_dir: where each node writes `<id>.jsonl` (events are strict: an event outside
            the vocabulary fails the test).
        stack: closes every node at the end, even if a later one fails to start.
        io_pause_s: a pause per round for real sockets to deliver.
        node_options: more keyword arguments for each `Node` (storage, transport, ...),
            built per node.
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        log_dir: Path,
        stack: contextlib.ExitStack,
        *,
        io_pause_s: float = 0.0,
        node_options: Callable[[str], dict[str, Any]] = lambda node_id: {},
    ) -> None:
        self.cluster = cluster
        self.clock = FakeClock()
        self.log_dir = log_dir
        self.io_pause_s = io_pause_s
        self.nodes: dict[str, Node] = {}
        self.paused: set[str] = set()
        """Nodes `round` skips, as if stopped with SIGSTOP (their clock runs on)."""
        for seed, node_cfg in enumerate(cluster.nodes):
            node = Node(
                cluster,
                node_cfg.id,
                log_path=log_dir / f"{node_cfg.id}.jsonl",
                clock=self.clock,
                rng=random.Random(seed),
                strict_events=True,
                **node_options(node_cfg.id),
            )
            stack.callback(node.close)
            node.announce_start()
            self.nodes[node_cfg.id] = node

    def round(self) -> None:
        """One tick of fake time, one loop turn per node."""
        self.clock.advance(self.cluster.tick_ms / 1000)
        for node_id, node in self.nodes.items():
            if node_id not in self.paused:
                node.run_once(0)
        if self.io_pause_s:
            time.sleep(self.io_pause_s)

    def run_until(self, condition: Callable[[], Any], what: str) -> Any:
        """Run rounds until `condition()` is truthy; fail after MAX_ROUNDS rounds."""
        for _ in range(MAX_ROUNDS):
            result = condition()
            if result:
                return result
            self.round()
        raise AssertionError(
            f"{what}: not reached in {MAX_ROUNDS} rounds\n{logscan.describe_logs(self.log_dir)()}"
        )

    def events(self) -> list[dict[str, Any]]:
        """Every event the nodes logged so far."""
        return logscan.read_events(self.log_dir)
