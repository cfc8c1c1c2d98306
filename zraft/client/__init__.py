"""The zraft client library (floor L2): `Client`, its replies and errors.

`sync` is the ZeroMQ driver a program calls; what a reply means and when to retry is
decided by the pure policy the drivers share.
"""

from zraft.client.sync import (
    DEFAULT_TIMEOUT_S,
    RETRYABLE_ERRORS,
    Client,
    ClientAuthError,
    ClientError,
    ClientTimeout,
    Reply,
    StatusProbe,
    check_endpoint,
    probe_status,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RETRYABLE_ERRORS",
    "Client",
    "ClientAuthError",
    "ClientError",
    "ClientTimeout",
    "Reply",
    "StatusProbe",
    "check_endpoint",
    "probe_status",
]
