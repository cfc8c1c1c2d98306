"""The zraft client library (floor L2): `Client`, its replies and errors, and its policy.

`sync` is the ZeroMQ driver a program calls (`connections` holds its sockets, `monitor`
reads their monitors), with one method per store op from `kvmethods`; `txn` builds a
transaction's compares and ops (`value("k") == b"v"`, `put_op("k", "v")`); `leases`
holds `Lease` (`Client.lease(ttl)`: refresh, keepalive thread, revoke) and its errors;
`probe` asks every node for its status at once. What a reply means, where a request
goes and when to retry is decided by the pure policy (`policy`, with `endpoints`) that
every driver shares; `reply` holds the values and errors they return.

The package imports nothing until a name is asked for (`from zraft.client import Client`
loads `sync` and what it needs, not leases or locks): a one-shot `zraft-client get` starts
faster when it loads only what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what a type checker and an IDE see; at run time, `__getattr__`
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

_WHERE: dict[str, str] = {
    "Client": "zraft.client.sync",
    "ClientAuthError": "zraft.client.reply",
    "ClientError": "zraft.client.reply",
    "ClientPolicy": "zraft.client.policy",
    "ClientTimeout": "zraft.client.reply",
    "CompareTarget": "zraft.client.txn",
    "DEFAULT_TIMEOUT_S": "zraft.client.policy",
    "Exchange": "zraft.client.policy",
    "Finish": "zraft.client.policy",
    "GiveUp": "zraft.client.policy",
    "Header": "zraft.client.reply",
    "KeepAlives": "zraft.client.leases",
    "KeyValue": "zraft.client.reply",
    "Lease": "zraft.client.leases",
    "LeaseError": "zraft.client.leases",
    "LeaseLost": "zraft.client.leases",
    "LeaseNotFound": "zraft.client.leases",
    "NoReply": "zraft.client.policy",
    "Pause": "zraft.client.policy",
    "RETRYABLE_ERRORS": "zraft.client.policy",
    "Reply": "zraft.client.reply",
    "Send": "zraft.client.policy",
    "StatusProbe": "zraft.client.reply",
    "TxnResponse": "zraft.client.reply",
    "check_endpoint": "zraft.client.policy",
    "create_revision": "zraft.client.txn",
    "delete_op": "zraft.client.txn",
    "lease": "zraft.client.txn",
    "mod_revision": "zraft.client.txn",
    "probe_status": "zraft.client.probe",
    "put_op": "zraft.client.txn",
    "range_op": "zraft.client.txn",
    "value": "zraft.client.txn",
    "version": "zraft.client.txn",
}
"""Each public name -> the module that defines it."""

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


def __getattr__(name: str) -> Any:
    """Load the module defining `name` on first use (PEP 562), then keep the value here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
