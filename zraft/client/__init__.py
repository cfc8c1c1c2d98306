"""The zraft client library (floor L2): `Client`, its replies and errors, and its policy.

`sync` is the ZeroMQ driver a program calls (`connections` holds its sockets, `monitor`
reads their monitors); `probe` asks every node for its status at once. What a reply means,
where a request goes and when to retry is decided by the pure policy (`policy`, with
`endpoints`) that every driver shares; `reply` holds the values and errors they return.
"""

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
    Reply,
    StatusProbe,
)
from zraft.client.sync import Client

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RETRYABLE_ERRORS",
    "Client",
    "ClientAuthError",
    "ClientError",
    "ClientPolicy",
    "ClientTimeout",
    "Exchange",
    "Finish",
    "GiveUp",
    "NoReply",
    "Pause",
    "Reply",
    "Send",
    "StatusProbe",
    "check_endpoint",
    "probe_status",
]
