"""Leases as objects: `Lease` (made by `Client.lease`), its keepalive, and the errors that
say a lease is gone.

A lease lives `ttl` seconds after the keepalive the cluster last acknowledged, then the
leader revokes it and deletes every key attached to it. `Lease` keeps a *local deadline*
for it: the moment the request that last granted or refreshed it was **sent**, plus the
TTL. The cluster starts its clock when it applies that refresh, which is later, so the
local deadline never falls after the cluster's: while it has not passed, the lease cannot
have expired (bar a lease revoked by someone else, which the next keepalive reports).

The keepalive (`keep_alive` in the calling thread, `start_keepalive` in a thread of its
own) refreshes the lease `interval` seconds (default TTL / 3) after the send time of the
last acknowledged grant or refresh (at once if that moment is past), and so on. It ends
in one of three ways:

- **stopped** (`stop_keepalive`, `revoke`, leaving a `with` block, `Client.close`): the
  lease is left as it is;
- **the lease is gone**: a keepalive is answered `lease_not_found` (it expired, or was
  revoked elsewhere): `LeaseNotFound`;
- **the deadline passed**: no keepalive was acknowledged before the local deadline
  (every node unreachable, no leader for too long): the lease *may* have expired, and
  nothing can tell before a node answers again: `LeaseLost`. A failed keepalive is
  re-sent after at most `RETRY_PAUSE_S`, and none waits beyond the deadline, so the
  loss is reported at the deadline, not a request timeout later.

Either loss sets `lost` (a `threading.Event`), records `lost_reason` and calls `on_lost(lease,
reason)`, once. Rules it keeps:

- **One client per thread.** The keepalive thread never touches the client the lease was
  made with (ZeroMQ sockets are not thread-safe): it uses its own (`Client.clone`: the
  same endpoints, timeouts and keys, a session and a context of its own), made when the
  thread starts and closed when it ends.
- **The thread never outlives its client.** `Client.close` stops every keepalive thread
  started from its leases (`KeepAlives`) and waits for it; each waits at most
  `KEEPALIVE_REQUEST_MAX_S` for a reply, so stopping takes at most about that long.
- **A loss is never silent.** A keepalive thread that fails for any other reason (a bug)
  also declares the lease lost, then ends with the exception.

No decision about retries or endpoints is made here: each keepalive is one
`Client.request_within` call, retried by the client's policy inside its bounded wait.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from zraft.client.reply import ClientAuthError, ClientError, ClientTimeout, Reply
from zraft.client.txn import as_lease_id

if TYPE_CHECKING:  # annotations only: `sync` imports this module
    from zraft.client.sync import Client

KEEPALIVE_REQUEST_MAX_S = 2.0
"""The longest one keepalive request waits for its answer (retries included) before the
loop looks at its deadline and stop flag again and sends anew."""

RETRY_PAUSE_S = 0.2
"""The pause after a failed keepalive before the next one (at most the interval)."""

LostCallback = Callable[["Lease", str], None]
"""`on_lost(lease, reason)`: called once when a lease is found lost."""


class LeaseError(ClientError):
    """A lease op was answered with an error, or could not be made.

    Attributes:
        lease_id: the lease it was about (0 for a grant that chose none).
        reply: the error reply, or None when there was none.
    """

    def __init__(self, message: str, lease_id: int, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.lease_id = lease_id
        self.reply = reply


class LeaseLost(LeaseError):
    """The lease is gone, or may be: no keepalive was acknowledged before its deadline."""


class LeaseNotFound(LeaseLost):
    """The cluster says the lease does not exist: it expired, or was revoked."""


def check_interval(interval: float | None, ttl: int) -> float:
    """The keepalive interval to use: `interval`, or TTL / 3 when None.

    Raises:
        ValueError: an interval that is not > 0 and below the TTL (the lease would
            expire between two refreshes).
    """
    every = ttl / 3 if interval is None else interval
    if not 0 < every < ttl:
        raise ValueError(f"the keepalive interval must be > 0 and below the TTL ({ttl} s)")
    return every


class Lease:
    """A granted lease: refresh it, keep it alive, revoke it; attach keys with
    `client.put(key, value, lease=lease)`.

    Made by `Client.lease(ttl, ...)`, which grants it. As a context manager it revokes
    the lease on exit (its keepalive stopped first); a revoke failure there is added as a
    note to the body's exception rather than hiding it, and a lease already gone is fine.

    Args:
        client: the client its requests go through (in the thread that owns it).
        lease_id: its id.
        ttl: its granted TTL, in seconds.
        acked_at: the `time.monotonic()` at which the request that granted or last
            refreshed it was sent (default: now); its local deadline counts from there.
        on_lost: called as `on_lost(lease, reason)` once the lease is found lost, from
            the thread that found out (the keepalive thread, or yours in `refresh`,
            `keep_alive`, `remaining`, `keys`); not after `revoke`.

    Raises:
        ValueError: a lease id or TTL that is not one.
    """

    def __init__(
        self,
        client: Client,
        lease_id: int,
        ttl: int,
        *,
        acked_at: float | None = None,
        on_lost: LostCallback | None = None,
    ) -> None:
        if type(ttl) is not int or ttl < 1:
            raise ValueError(f"ttl must be an int >= 1, got {ttl!r}")
        self._client = client
        self._id = as_lease_id(lease_id)
        self._ttl = ttl
        self._on_lost = on_lost
        self._lock = threading.Lock()  # guards the deadline and the lost state
        self._acked_at = time.monotonic() if acked_at is None else acked_at
        self._deadline = self._acked_at + ttl
        self._revoked = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.lost = threading.Event()
        """Set once the lease is found gone, or may have expired (see the module doc)."""
        self.lost_reason: str | None = None
        """Why `lost` was set, in words (None while it is not)."""
        self.last_error: str | None = None
        """What the latest failed keepalive got (None after a success)."""

    # --- what it is ---------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The lease id."""
        return self._id

    @property
    def ttl(self) -> int:
        """The granted TTL, in seconds."""
        return self._ttl

    @property
    def deadline(self) -> float:
        """The local deadline (`time.monotonic()` seconds): before it, the lease cannot
        have expired; it moves on with every acknowledged refresh."""
        with self._lock:
            return self._deadline

    @property
    def keepalive_running(self) -> bool:
        """Whether the keepalive thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "kept alive" if self.keepalive_running else "held"
        return f"Lease(id={self._id}, ttl={self._ttl}, {state})"

    # --- one request each -------------------------------------------------------------

    def refresh(self) -> int:
        """Refresh the lease once; returns the seconds it has left (its TTL).

        Raises:
            LeaseNotFound: the lease is gone (it is then marked lost).
            LeaseError: another error answer (`unavailable`, `timeout`, ...).
            ClientTimeout: no node answered within the client's timeout.
        """
        sent = time.monotonic()
        return self._refreshed(self._client.lease_keepalive(self._id), sent)

    def remaining(self) -> int:
        """The seconds the lease has left, as the leader counts them (rounded up).

        Raises:
            LeaseNotFound: the lease is gone (it is then marked lost).
            LeaseError, ClientTimeout: as for `refresh`.
        """
        reply = self._answer("lease_timetolive", self._client.lease_timetolive(self._id))
        return reply.remaining if reply.remaining is not None else 0

    def keys(self) -> list[bytes]:
        """The keys attached to the lease, in key order.

        Raises:
            LeaseNotFound: the lease is gone (it is then marked lost).
            LeaseError, ClientTimeout: as for `refresh`.
        """
        reply = self._client.lease_timetolive(self._id, keys=True)
        return list(self._answer("lease_timetolive", reply).keys or ())

    def revoke(self) -> None:
        """Stop the keepalive, then end the lease now: its keys are deleted.

        Raises:
            LeaseNotFound: the lease was gone already.
            LeaseError, ClientTimeout: as for `refresh` (then the lease lives on until
                its TTL runs out, unless revoked again).
        """
        self.stop_keepalive()
        self._revoked = True  # no on_lost for a lease ended on purpose
        self._answer("lease_revoke", self._client.lease_revoke(self._id))

    # --- keeping it alive -------------------------------------------------------------

    def keep_alive(
        self,
        interval: float | None = None,
        *,
        stop: threading.Event | None = None,
        on_refresh: Callable[[Reply], None] | None = None,
    ) -> None:
        """Keep the lease alive from the calling thread, with the lease's client, until
        `stop` is set (then it returns) or the lease is lost (then it raises).

        Args:
            interval: seconds between refreshes (default TTL / 3).
            stop: set it (from another thread) to end the loop.
            on_refresh: called with each acknowledged keepalive's reply.

        Raises:
            LeaseNotFound: a keepalive found the lease gone.
            LeaseLost: no keepalive was acknowledged before the deadline.
            ValueError: a bad interval.
        """
        every = check_interval(interval, self._ttl)
        lost = self._loop(self._client, every, stop or threading.Event(), on_refresh)
        if lost is not None:
            self._declare_lost(str(lost))
            raise lost

    def start_keepalive(self, interval: float | None = None) -> None:
        """Keep the lease alive from a daemon thread with a client of its own (see the
        module doc); does nothing if it runs already.

        Args:
            interval: seconds between refreshes (default TTL / 3).

        Raises:
            LeaseLost: the lease was found lost before (`lost_reason` says why).
            ValueError: a bad interval.
            ClientError: the lease's client is closed.
        """
        every = check_interval(interval, self._ttl)
        if self.lost.is_set():
            raise LeaseLost(f"lease {self._id} is lost: {self.lost_reason}", self._id)
        if self.keepalive_running:
            return
        client = self._client.clone()
        stop = self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run_thread,
            args=(client, every, stop),
            name=f"zraft-lease-{self._id}",
            daemon=True,
        )
        self._client.keepalives.add(self)
        self._thread.start()

    def stop_keepalive(self) -> None:
        """Stop the keepalive thread and wait for it to end (at most about
        `KEEPALIVE_REQUEST_MAX_S`); does nothing if none runs. The lease is left as is."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        if thread is not threading.current_thread():  # e.g. called from on_lost
            thread.join()
            self._thread = None
        self._client.keepalives.discard(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.revoke()
        except LeaseNotFound:
            pass  # gone already: what revoking wanted
        except ClientError as error:
            note = f"the lease lives on until its TTL ({self._ttl} s) runs out"
            if exc is None:
                error.add_note(note)
                raise
            exc.add_note(f"also, revoking lease {self._id} on exit failed: {error}; {note}")

    # --- the loop -----------------------------------------------------------------------

    def _run_thread(self, client: Client, interval: float, stop: threading.Event) -> None:
        """The keepalive thread: the loop with its own client, closed at the end."""
        lost: str | None = None
        try:
            error = self._loop(client, interval, stop, None)
            lost = None if error is None else str(error)
        except BaseException as exc:
            lost = f"lease {self._id}: the keepalive thread failed ({exc!r}); it may expire"
            raise
        finally:
            client.close()
            if lost is not None:
                self._declare_lost(lost)

    def _loop(
        self,
        client: Client,
        interval: float,
        stop: threading.Event,
        on_refresh: Callable[[Reply], None] | None,
    ) -> LeaseLost | None:
        """Refresh `interval` after the last acknowledged refresh (or grant; at once if
        that is past), then every `interval`, until `stop` (None) or a loss (its error,
        not raised)."""
        with self._lock:
            next_at = self._acked_at + interval
        while not stop.is_set():
            now, deadline = time.monotonic(), self.deadline
            if now >= deadline:
                return LeaseLost(self._missed(now), self._id)
            if now < next_at:
                stop.wait(min(next_at, deadline) - now)
                continue
            try:
                wait = min(deadline - now, KEEPALIVE_REQUEST_MAX_S)
                reply = client.request_within(wait, "lease_keepalive", lease=self._id)
            except (ClientTimeout, ClientAuthError) as exc:
                failure = str(exc)
            else:
                if reply.ok:
                    self._refreshed(reply, now)
                    self.last_error = None
                    next_at = now + interval
                    if on_refresh is not None:
                        on_refresh(reply)
                    continue
                if reply.error_code == "lease_not_found":
                    return self._error("lease_keepalive", reply)
                failure = f"{reply.error_code}: {reply.error_message}"
            self.last_error = failure
            next_at = time.monotonic() + min(interval, RETRY_PAUSE_S)
        return None

    def _missed(self, now: float) -> str:
        with self._lock:
            since = now - self._acked_at
        return (
            f"lease {self._id}: no keepalive was acknowledged for {since:.1f} s, past its "
            f"TTL of {self._ttl} s: it may have expired (last failure: "
            f"{self.last_error or 'none'})"
        )

    def _refreshed(self, reply: Reply, sent: float) -> int:
        """Move the deadline on after an acknowledged refresh sent at `sent`."""
        remaining = self._answer("lease_keepalive", reply).remaining
        remaining = self._ttl if remaining is None else remaining
        with self._lock:
            if sent + remaining > self._deadline:
                self._acked_at, self._deadline = sent, sent + remaining
        return remaining

    def _answer(self, op: str, reply: Reply) -> Reply:
        """`reply` if it succeeded; else raise its error (marking the lease lost if gone)."""
        if reply.ok:
            return reply
        error = self._error(op, reply)
        if isinstance(error, LeaseNotFound) and op != "lease_revoke":
            self._declare_lost(str(error))
        raise error

    def _error(self, op: str, reply: Reply) -> LeaseError:
        if reply.error_code == "lease_not_found":
            message = reply.error_message or f"lease {self._id} does not exist"
            return LeaseNotFound(message, self._id, reply)
        return LeaseError(
            f"{op} of lease {self._id}: {reply.error_code}: {reply.error_message}", self._id, reply
        )

    def _declare_lost(self, reason: str) -> None:
        """Set `lost` and call `on_lost`, the first time only (and never after `revoke`)."""
        with self._lock:
            if self.lost.is_set() or self._revoked:
                return
            self.lost_reason = reason
            self.lost.set()
        if self._on_lost is not None:
            self._on_lost(self, reason)


class KeepAlives:
    """The leases whose keepalive a client started (`Client.keepalives`), so that
    `Client.close` can stop every thread before closing. Holds them weakly: a lease
    whose thread ended and that nobody holds may go."""

    def __init__(self) -> None:
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, lease: Lease) -> None:
        """Track `lease`."""
        with self._lock:
            self._leases.add(lease)

    def discard(self, lease: Lease) -> None:
        """Stop tracking `lease`."""
        with self._lock:
            self._leases.discard(lease)

    def running(self) -> list[Lease]:
        """The leases whose keepalive thread runs now."""
        with self._lock:
            leases = list(self._leases)
        return [lease for lease in leases if lease.keepalive_running]

    def stop_all(self) -> None:
        """Stop every keepalive thread and wait for each to end."""
        with self._lock:
            leases = list(self._leases)
        for lease in leases:
            lease.stop_keepalive()
