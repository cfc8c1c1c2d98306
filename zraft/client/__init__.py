"""The zraft client library (floor L2): `Client`, its replies and errors, and its policy.

`sync` is the ZeroMQ driver a program calls (`connections` holds its sockets, `monitor`
reads their monitors), with one method per store op from `kvmethods`; `txn` builds a
transaction's compares and ops (`value("k") == b"v"`, `put_op("k", "v")`); `leases`
holds `Lease` (`Client.lease(ttl)`: refresh, keepalive thread, revoke) and its errors;
`probe` asks every node for its status at once. What a reply means, where a request goes and when to
retry is decided by the pure policy (`policy`, with `endpoints`) that every driver
shares; `reply` holds the values and errors they return.
"""

from zraft.client.leases import KeepAlives, Lease, LeaseError, LeaseLost, LeaseNotFound
from zraft.client.policy import (
    DEFAULT_TIMEOUT_S,
    RETRYABLE_ERRORS,
    ClientPolicy,
    Exchange,
    Finish,
    GiveUp,
    NoReply,
    Pause,
    Send,
    check_endpoint,
)
from zraft.client.probe import probe_status
from zraft.client.reply import (
    ClientAuthError,
    ClientError,
    ClientTimeout,
    Header,
    KeyValue,
    Reply,
    StatusProbe,
    TxnResponse,
)
from zraft.client.sync import Client
from zraft.client.txn import (
    CompareTarget,
    create_revision,
    delete_op,
    lease,
    mod_revision,
    put_op,
    range_op,
    value,
    version,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RETRYABLE_ERRORS",
    "Client",
    "ClientAuthError",
    "ClientError",
    "ClientPolicy",
    "ClientTimeout",
    "CompareTarget",
    "Exchange",
    "Finish",
    "GiveUp",
    "Header",
    "KeepAlives",
    "KeyValue",
    "Lease",
    "LeaseError",
    "LeaseLost",
    "LeaseNotFound",
    "NoReply",
    "Pause",
    "Reply",
    "Send",
    "StatusProbe",
    "TxnResponse",
    "check_endpoint",
    "create_revision",
    "delete_op",
    "lease",
    "mod_revision",
    "probe_status",
    "put_op",
    "range_op",
    "value",
    "version",
]
