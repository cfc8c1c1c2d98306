"""Building a node's parts from the cluster's configuration: the state machine with the
cluster's limits and the ZeroMQ transport with its message size limits.
"""

from __future__ import annotations

import math
from typing import Any

import zmq

from zraft.config import ClusterConfig, NodeConfig
from zraft.net.transport import CurveKeys, ZmqTransport
from zraft.state.machine import MAX_LEASE_TTL, KVMachine


def machine_for(cluster: ClusterConfig) -> KVMachine:
    """The state machine with the cluster's limits (transactions, quota, lease TTLs)."""
    return KVMachine(
        max_txn_ops=cluster.max_txn_ops,
        quota_bytes=cluster.quota_bytes,
        lease_ttl=(min_lease_ttl(cluster), MAX_LEASE_TTL),
    )


def min_lease_ttl(cluster: ClusterConfig) -> int:
    """The shortest lease TTL granted: 1.5 election timeouts, in whole seconds (etcd's
    rule), so a lease outlives the election that follows a leader's failure."""
    return max(1, math.ceil(1.5 * cluster.election_timeout_ms[1] / 1000))


def zmq_transport(
    cluster: ClusterConfig,
    node_id: str,
    me: NodeConfig,
    peers: dict[str, str],
    curve: CurveKeys | None,
    context: zmq.Context[Any] | None,
) -> ZmqTransport:
    """The node's ZeroMQ sockets, with message size limits from the cluster's."""
    return ZmqTransport(
        node_id,
        me.peer,
        me.client,
        peers,
        client_max_message_bytes=cluster.max_key_bytes + 2 * cluster.max_value_bytes + 8192,
        peer_max_message_bytes=max(8 << 20, 4 * cluster.max_value_bytes),
        curve=curve,
        context=context,
    )
