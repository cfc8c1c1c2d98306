"""Building a node's parts from the cluster's configuration: the state machine with the
cluster's limits, and the transport (ZeroMQ sockets with their message size limits, the
ZAP handler, and in tests the in-memory transport or the fault file's wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from zraft.config import ClusterConfig, ConfigError, NodeConfig
from zraft.core import Membership
from zraft.net import security
from zraft.net.base import Transport
from zraft.net.faults import FaultyTransport
from zraft.net.security import NodeKeys
from zraft.net.transport import CLIENT_ZAP_DOMAIN, PEER_ZAP_DOMAIN, CurveKeys, ZmqTransport
from zraft.net.zap import ZapHandler
from zraft.node.members import Endpoints
from zraft.state.machine import MAX_LEASE_TTL, KVMachine

TransportFactory = Callable[[str, Mapping[str, str]], Transport]
"""Builds a node's transport from its id and its peers' endpoints (tests: in-memory)."""


def machine_for(cluster: ClusterConfig) -> KVMachine:
    """The state machine with the cluster's limits (transactions, quota, lease TTLs)."""
    return KVMachine(
        max_txn_ops=cluster.max_txn_ops,
        quota_bytes=cluster.quota_bytes,
        lease_ttl=(min_lease_ttl(cluster), MAX_LEASE_TTL),
    )


def bootstrap_membership(cluster: ClusterConfig, node_id: str, join: bool) -> Membership:
    """The membership of a brand-new log: the file's nodes, or for a node joining an
    existing cluster, the others (it is not a voter until a leader makes it one).

    Raises:
        ConfigError: a joining node's file names no other member.
    """
    if not join:
        return cluster.membership
    others = frozenset(cluster.node_ids) - {node_id}
    if not others:
        raise ConfigError(
            cluster.path, None, "--join needs the file to name at least one existing member"
        )
    return Membership(voters=others)


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
    cluster_id: str = "",
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
        cluster_id=cluster_id,
    )


def connect(
    cluster: ClusterConfig,
    me: NodeConfig,
    keys: NodeKeys | None,
    endpoints: Endpoints,
    *,
    awaiting_contact: bool,
    context: zmq.Context[Any] | None,
    fault_file: Path | None,
    transport: TransportFactory | None,
    report: Callable[[str], None],
    cluster_id: str = "",
) -> tuple[Transport, ZapHandler | None]:
    """The node's transport, accepting frames from its peers, and its ZAP handler (CURVE).

    A node joining a cluster (`awaiting_contact`) dials nobody until a member talks to it:
    the members would refuse its key until they have added it, and libzmq never retries a
    refused handshake. `report` logs the fault file's complaints (tests only).
    """
    node_id = me.id
    peer_ids = frozenset(endpoints.peers_of(node_id))
    peers = {} if awaiting_contact else endpoints.peers_of(node_id)
    if keys is not None:
        server_keys = endpoints.keys_of(node_id)
        peers = {i: e for i, e in peers.items() if i in server_keys}
    if transport is not None:
        inner = transport(node_id, peers)
    else:
        curve = None
        if keys is not None:
            known = {**endpoints.keys_of(node_id), **keys.peer_server_keys}
            curve = CurveKeys(keys.own.public, keys.own.secret, known)
        inner = zmq_transport(cluster, node_id, me, peers, curve, context, cluster_id)
    outer = inner if fault_file is None else FaultyTransport(inner, fault_file, peer_ids, report)
    outer.accept_from(peer_ids)
    zap = None
    if keys is not None and inner.zap_socket is not None:
        zap = ZapHandler(
            inner.zap_socket,
            {PEER_ZAP_DOMAIN: "peer", CLIENT_ZAP_DOMAIN: "client"},
            keys.peer_ids_by_key,
            keys.clients_by_key,
        )
        # Members the file does not name, learned from the log or a snapshot.
        zap.admit_peers({security.raw_key(k): i for i, k in endpoints.keys_of(node_id).items()})
    return outer, zap
