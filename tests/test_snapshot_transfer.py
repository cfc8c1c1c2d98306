"""InstallSnapshot transfer: `SnapshotSender` (leader) and `SnapshotInbox` (follower).

Layer 4 (adapters): a real snapshot file written by `SnapshotStore`, real temp files in
`tmp_path`, real wire frames, a fake clock and a fake peer channel. The channel is a FIFO
queue that the tests drain one chunk at a time, pumping the sender after every ack: the
tightest interleaving of acks and sends the node loop can produce. Nothing sleeps.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.fakeclock import FakeClock
from zraft.core import SnapshotRequest
from zraft.core.types import Membership, SnapshotMeta
from zraft.node.snapshot_transfer import (
    RESEND_AFTER_S,
    Received,
    SnapshotInbox,
    SnapshotSender,
    TransferOutcome,
)
from zraft.storage import SnapshotStore
from zraft.wire import (
    SnapshotAck,
    SnapshotChunk,
    decode_peer_frame,
    encode_snapshot_ack,
    encode_snapshot_chunk,
)

MEMBERS = Membership(voters=frozenset({"n1", "n2", "n3"}))
HEADER = {"applied_index": 50, "sessions": []}
CHUNK = 1000  # bytes per chunk: the source file is a dozen or so chunks
WINDOW = 3
STALL_S = 5.0
TERM = 3


def meta(index: int = 50, term: int = 2) -> SnapshotMeta:
    """Snapshot metadata at `index`/`term`."""
    return SnapshotMeta(index=index, term=term, membership=MEMBERS)


@dataclass(frozen=True, slots=True)
class Source:
    """A complete snapshot file on the leader's side."""

    meta: SnapshotMeta
    path: Path
    data: bytes
    pairs: dict[bytes, bytes]


class Channel:
    """The leader's peer channel: every frame queued is decoded and kept in order.

    `accept` False makes `send` report a full queue (nothing is kept).
    """

    def __init__(self) -> None:
        self.queue: list[SnapshotChunk] = []
        self.sent: list[SnapshotChunk] = []
        self.accept = True

    def send(self, peer: str, frame: bytes) -> bool:
        if not self.accept:
            return False
        chunk = decode_peer_frame(frame)
        assert isinstance(chunk, SnapshotChunk)
        assert chunk.dst == peer
        self.queue.append(chunk)
        self.sent.append(chunk)
        return True

    def offsets(self) -> list[int]:
        """Offsets of every chunk sent so far, in order."""
        return [c.offset for c in self.sent]


def write_source(store: SnapshotStore, at: SnapshotMeta, count: int = 200) -> Source:
    """Write a real snapshot of `count` pairs with `store`'s writer."""
    pairs = {i.to_bytes(16, "big"): bytes([i % 251]) * 40 for i in range(count)}
    writer = store.begin(at, HEADER, list(pairs.items()), len(pairs))
    while not writer.step(4096):
        pass
    info = writer.finish()
    return Source(at, info.path, info.path.read_bytes(), pairs)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    """A snapshot file of several chunks whose last chunk is a short one."""
    src = write_source(SnapshotStore(tmp_path / "leader"), meta())
    assert len(src.data) > 8 * CHUNK
    assert len(src.data) % CHUNK != 0
    return src


@pytest.fixture
def follower(tmp_path: Path) -> SnapshotStore:
    """The follower's (empty) snapshot directory."""
    return SnapshotStore(tmp_path / "follower")


def temps(store: SnapshotStore) -> list[Path]:
    """Temp files in a snapshot dir."""
    return sorted(store.snap_dir.glob("*.tmp"))


def request(src: Source, *, leader: str = "n1", term: int = TERM) -> SnapshotRequest:
    """The leader core's request to send `src` to n2."""
    return SnapshotRequest(src=leader, dst="n2", term=term, meta=src.meta)


def chunks_of(
    src: Source, *, leader: str = "n1", term: int = TERM, size: int = CHUNK
) -> list[SnapshotChunk]:
    """`src` cut into chunks as a leader would send them to n2."""
    total = len(src.data)
    return [
        SnapshotChunk(leader, "n2", term, src.meta, offset, total, src.data[offset : offset + size])
        for offset in range(0, total, size)
    ]


def make_sender(channel: Channel, clock: FakeClock, *, window: int = WINDOW) -> SnapshotSender:
    """A sender over `channel` with small chunks."""
    return SnapshotSender(
        channel.send, clock, chunk_bytes=CHUNK, window=window, stall_timeout_s=STALL_S
    )


def over_the_wire(ack: SnapshotAck) -> SnapshotAck:
    """`ack` encoded and decoded, as the leader receives it."""
    decoded = decode_peer_frame(encode_snapshot_ack(ack))
    assert isinstance(decoded, SnapshotAck)
    return decoded


@dataclass(slots=True)
class Run:
    """What `shuttle` saw."""

    outcome: TransferOutcome | None = None
    received: Received | None = None
    max_in_flight: int = 0
    refusals: int = 0


def shuttle(
    sender: SnapshotSender,
    inbox: SnapshotInbox,
    channel: Channel,
    *,
    term: int = TERM,
    fault: Callable[[SnapshotChunk], SnapshotChunk | None] = lambda chunk: chunk,
    max_steps: int = 1000,
) -> Run:
    """Deliver queued chunks one by one, ack each, pump after each ack, until it ends.

    `fault` sees each chunk on the way and returns what arrives: it, a changed copy, or
    None (lost). In flight means sent and not yet answered: the channel's queue (a lost
    chunk counts until it is taken out).
    """
    run = Run()
    sender.pump()
    for _ in range(max_steps):
        run.max_in_flight = max(run.max_in_flight, len(channel.queue))
        if not channel.queue:
            return run
        chunk = fault(channel.queue.pop(0))
        if chunk is None:
            continue
        ack, received = inbox.on_chunk(chunk, term)
        if not ack.ok:
            run.refusals += 1
        if received is not None:
            assert run.received is None, "a transfer was handed over twice"
            run.received = received
        outcome = sender.on_ack(over_the_wire(ack))
        if outcome is not None:
            assert run.outcome is None, "a transfer ended twice"
            run.outcome = outcome
        ended, overdue = sender.pump()
        assert (ended, overdue) == ([], [])
    raise AssertionError(f"no end after {max_steps} steps; sent {channel.offsets()}")


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


# --- the whole path ----------------------------------------------------------------------


def test_full_transfer_in_order_delivers_a_verified_copy(
    source: Source, follower: SnapshotStore
) -> None:
    """In-order chunks give a Received that verifies and equals the leader's file."""
    clock, channel = FakeClock(), Channel()
    sender = make_sender(channel, clock)
    assert sender.start(request(source), source.path) is None
    assert sender.sending_to() == {"n2": 50}
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)

    run = shuttle(sender, inbox, channel)

    total = len(source.data)
    assert run.outcome == TransferOutcome("n2", 50, total, 0.0, delivered=True)
    assert run.refusals == 0
    received = run.received
    assert received is not None
    assert received.request == SnapshotRequest(src="n1", dst="n2", term=TERM, meta=source.meta)
    loaded = received.loaded
    assert (loaded.meta, loaded.header, loaded.pairs) == (source.meta, HEADER, source.pairs)
    assert loaded.size_bytes == total
    assert received.receiver.temp_path.read_bytes() == source.data
    assert inbox.receiving() is None
    assert sender.sending_to() == {}
    # Nothing is installed until the node says so; then the file is the leader's, byte
    # for byte, under its final name.
    assert follower.list() == []
    follower.install(received.receiver)
    assert follower.path_of(source.meta).read_bytes() == source.data
    assert temps(follower) == []


def test_each_chunk_is_sent_once_when_nothing_is_lost(
    source: Source, follower: SnapshotStore
) -> None:
    """Without loss every byte crosses once: an ack slides the window, it never rewinds."""
    channel = Channel()
    sender = make_sender(channel, FakeClock())
    sender.start(request(source), source.path)
    run = shuttle(sender, SnapshotInbox("n2", follower, max_bytes=1 << 20), channel)
    assert run.received is not None
    assert channel.offsets() == list(range(0, len(source.data), CHUNK))


@pytest.mark.parametrize("window", [1, WINDOW, 100])
def test_never_more_than_the_window_is_in_flight(
    source: Source, follower: SnapshotStore, window: int
) -> None:
    """At most `window` chunks are sent and unacknowledged at any time (and it fills)."""
    channel = Channel()
    sender = make_sender(channel, FakeClock(), window=window)
    sender.start(request(source), source.path)
    sender.pump()
    chunk_count = len(range(0, len(source.data), CHUNK))
    assert len(channel.queue) == min(window, chunk_count)
    sender.pump()  # no ack came: nothing more may go out
    assert len(channel.queue) == min(window, chunk_count)

    run = shuttle(sender, SnapshotInbox("n2", follower, max_bytes=1 << 20), channel)

    assert run.received is not None
    assert run.max_in_flight == min(window, chunk_count)


def test_sender_retries_a_chunk_the_transport_would_not_queue(
    source: Source, follower: SnapshotStore
) -> None:
    """send() returning False loses nothing: the next pump sends that chunk again."""
    channel = Channel()
    sender = make_sender(channel, FakeClock())
    sender.start(request(source), source.path)
    channel.accept = False
    sender.pump()
    assert channel.sent == []
    channel.accept = True
    run = shuttle(sender, SnapshotInbox("n2", follower, max_bytes=1 << 20), channel)
    assert run.received is not None
    assert channel.offsets() == list(range(0, len(source.data), CHUNK))


# --- loss, duplicates, reordering --------------------------------------------------------


@pytest.mark.parametrize("lost_chunk", [1, 4, 8])
def test_a_lost_chunk_is_sent_again_from_the_acked_offset(
    source: Source, follower: SnapshotStore, lost_chunk: int
) -> None:
    """Go-back-N: after a loss the sender resumes at the follower's offset, once.

    The chunks of the window behind the lost one are discarded by the follower and answered
    with the offset it still wants; the sender goes back there, and the loss costs about
    one window of extra chunks, not a resend per ack.
    """
    channel = Channel()
    sender = make_sender(channel, FakeClock())
    sender.start(request(source), source.path)
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    lost = lost_chunk * CHUNK
    dropped: list[int] = []

    def lose(chunk: SnapshotChunk) -> SnapshotChunk | None:
        if chunk.offset == lost and not dropped:
            dropped.append(chunk.offset)
            return None
        return chunk

    run = shuttle(sender, inbox, channel, fault=lose)

    assert dropped == [lost]
    assert run.received is not None
    assert run.received.receiver.temp_path.read_bytes() == source.data
    assert run.outcome is not None and run.outcome.delivered
    offsets = channel.offsets()
    # Up to and including the first send of the lost chunk, each chunk once, in order.
    first_pass = offsets.index(lost) + 1
    assert offsets[:first_pass] == list(range(0, lost + CHUNK, CHUNK))
    # The chunks sent before the follower's answer came back (the window), then a rewind
    # to exactly the lost offset, then every chunk from there once, in order.
    rewind = offsets.index(lost, first_pass)
    assert all(offset > lost for offset in offsets[first_pass:rewind])
    assert rewind - first_pass <= WINDOW - 1
    assert offsets[rewind:] == list(range(lost, len(source.data), CHUNK))


def test_a_chunk_lost_twice_is_sent_again_after_a_quiet_second(
    source: Source, follower: SnapshotStore
) -> None:
    """The go-back happens once per offset; if the resent chunk is lost too, the channel
    falls quiet, and after `RESEND_AFTER_S` without an ack the sender sends the window
    again, well before the stall timeout would fail the transfer."""
    clock, channel = FakeClock(), Channel()
    sender = make_sender(channel, clock)
    sender.start(request(source), source.path)
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    lost = 2 * CHUNK
    dropped: list[int] = []

    def lose_twice(chunk: SnapshotChunk) -> SnapshotChunk | None:
        if chunk.offset == lost and len(dropped) < 2:
            dropped.append(chunk.offset)
            return None
        return chunk

    first = shuttle(sender, inbox, channel, fault=lose_twice)
    assert dropped == [lost, lost] and first.outcome is None  # quiet: nothing more to send
    clock.advance(RESEND_AFTER_S / 2)
    assert sender.pump() == ([], []) and not channel.queue  # not yet
    clock.advance(RESEND_AFTER_S)
    run = shuttle(sender, inbox, channel, fault=lose_twice)
    assert run.outcome is not None and run.outcome.delivered
    assert run.received is not None
    assert run.received.receiver.temp_path.read_bytes() == source.data


def test_duplicate_and_out_of_order_chunks_do_not_corrupt_the_result(
    source: Source, follower: SnapshotStore
) -> None:
    """Repeats and gaps write nothing; each is answered with the offset still wanted."""
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    c = chunks_of(source)
    schedule = [c[0], c[1], c[1], c[3], c[2], c[2], c[5], c[3], c[1], c[4], *c[5:]]
    answers = []
    received: Received | None = None
    for chunk in schedule:
        ack, got = inbox.on_chunk(chunk, TERM)
        assert ack.ok, ack.reason
        assert (ack.src, ack.dst, ack.term, ack.index) == ("n2", "n1", TERM, 50)
        answers.append(ack.next_offset)
        if got is not None:
            assert received is None
            received = got
    k = CHUNK
    assert answers[:10] == [k, 2 * k, 2 * k, 2 * k, 3 * k, 3 * k, 3 * k, 4 * k, 4 * k, 5 * k]
    assert answers[-1] == len(source.data)
    assert received is not None
    assert received.receiver.temp_path.read_bytes() == source.data
    assert received.loaded.pairs == source.pairs


def test_a_chunk_from_a_stale_term_is_refused_and_the_transfer_goes_on(
    source: Source, follower: SnapshotStore
) -> None:
    """A chunk whose term is below the follower's is refused; it disturbs nothing."""
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    current = chunks_of(source, term=TERM)
    old = chunks_of(source, leader="n3", term=TERM - 1)
    inbox.on_chunk(current[0], TERM)
    partial = temps(follower)
    assert len(partial) == 1

    for stale in (old[0], old[1]):  # even an offset 0, which would start over
        ack, got = inbox.on_chunk(stale, TERM)
        assert got is None
        assert not ack.ok
        assert "stale term" in ack.reason
        assert (ack.dst, ack.term) == ("n3", TERM - 1)
    assert temps(follower) == partial
    assert inbox.receiving() == 50

    received = None
    for chunk in current[1:]:
        ack, received = inbox.on_chunk(chunk, TERM)
        assert ack.ok
    assert received is not None
    assert received.receiver.temp_path.read_bytes() == source.data


def test_a_stale_chunk_with_no_transfer_creates_nothing(
    source: Source, follower: SnapshotStore
) -> None:
    """A stale term's first chunk opens no temp file."""
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    ack, got = inbox.on_chunk(chunks_of(source, term=TERM)[0], TERM + 1)
    assert (ack.ok, got) == (False, None)
    assert temps(follower) == []
    assert inbox.receiving() is None


@pytest.mark.parametrize("change", ["new-leader", "new-index", "same-leader-restarts"])
def test_a_new_transfer_replaces_a_partial_one(
    tmp_path: Path, source: Source, follower: SnapshotStore, change: str
) -> None:
    """Offset 0 of another (or the same) transfer drops the partial one and its temp file."""
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    first = chunks_of(source, leader="n1", term=TERM)
    for chunk in first[:4]:
        inbox.on_chunk(chunk, TERM)
    [partial] = temps(follower)

    new_term = TERM
    if change == "new-leader":
        new_term = TERM + 1
        replacement = source
        second = chunks_of(source, leader="n3", term=new_term)
    elif change == "new-index":
        replacement = write_source(SnapshotStore(tmp_path / "newer"), meta(80), count=150)
        second = chunks_of(replacement, leader="n1", term=TERM)
    else:
        replacement = source
        second = first
    ack, got = inbox.on_chunk(second[0], new_term)
    assert ack.ok and got is None
    assert ack.next_offset == CHUNK
    assert not partial.exists()
    assert len(temps(follower)) == 1
    assert inbox.receiving() == replacement.meta.index

    if change != "same-leader-restarts":
        # The old transfer's next chunk must not land in the new file.
        [fresh] = temps(follower)
        ack, got = inbox.on_chunk(first[4], new_term)
        assert (ack.ok, got) == (False, None)
        assert fresh.stat().st_size == CHUNK
    received = None
    for chunk in second[1:]:
        ack, received = inbox.on_chunk(chunk, new_term)
        assert ack.ok
    assert received is not None
    assert received.request.src == second[0].src
    assert received.loaded.meta == replacement.meta
    assert received.receiver.temp_path.read_bytes() == replacement.data
    assert follower.list() == []  # nothing half installed


def test_abort_removes_the_temp_file(source: Source, follower: SnapshotStore) -> None:
    """abort() drops a partial transfer and its temp file; later chunks find no transfer."""
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    chunks = chunks_of(source)
    for chunk in chunks[:3]:
        inbox.on_chunk(chunk, TERM)
    assert len(temps(follower)) == 1
    inbox.abort()
    assert temps(follower) == []
    assert inbox.receiving() is None
    inbox.abort()  # idempotent
    ack, got = inbox.on_chunk(chunks[3], TERM)
    assert (ack.ok, got) == (False, None)
    assert "no transfer" in ack.reason
    assert temps(follower) == []


# --- damage and limits -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "middle", "footer"])
def test_a_damaged_chunk_fails_verification_and_hands_nothing_over(
    source: Source, follower: SnapshotStore, where: str
) -> None:
    """One flipped byte: the last chunk is refused as damaged; no file, nothing handed over."""
    total = len(source.data)
    position = {"header": 20, "middle": total // 2, "footer": total - 2}[where]
    data = bytearray(source.data)
    data[position] ^= 0x01
    damaged = Source(source.meta, source.path, bytes(data), source.pairs)
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    acks = [inbox.on_chunk(chunk, TERM) for chunk in chunks_of(damaged)]
    assert all(ack.ok and got is None for ack, got in acks[:-1])
    last_ack, got = acks[-1]
    assert got is None
    assert not last_ack.ok
    assert last_ack.reason.startswith("damaged:")
    assert temps(follower) == []
    assert follower.list() == []
    assert inbox.receiving() is None


def test_the_sender_reports_a_damaged_transfer_as_failed(
    source: Source, follower: SnapshotStore
) -> None:
    """The follower's refusal ends the leader's transfer as failed, with the reason."""
    clock, channel = FakeClock(), Channel()
    sender = make_sender(channel, clock)
    sender.start(request(source), source.path)
    inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
    total = len(source.data)
    last_offset = total - total % CHUNK

    def corrupt(chunk: SnapshotChunk) -> SnapshotChunk:
        if chunk.offset != last_offset:
            return chunk
        data = bytearray(chunk.data)
        data[0] ^= 0x80  # a byte of the footer flips on the way
        return replace(chunk, data=bytes(data))

    run = shuttle(sender, inbox, channel, fault=corrupt)
    assert run.received is None
    assert run.outcome is not None
    assert not run.outcome.delivered
    assert run.outcome.reason.startswith("refused: damaged:")
    assert sender.sending_to() == {}
    assert temps(follower) == []


def test_a_transfer_larger_than_max_bytes_is_refused(
    source: Source, follower: SnapshotStore
) -> None:
    """total > max_bytes is refused at the first chunk (no temp file); == is accepted."""
    total = len(source.data)
    inbox = SnapshotInbox("n2", follower, max_bytes=total - 1)
    ack, got = inbox.on_chunk(chunks_of(source)[0], TERM)
    assert (ack.ok, got) == (False, None)
    assert "exceeds the limit" in ack.reason
    assert temps(follower) == []
    assert inbox.receiving() is None

    exact = SnapshotInbox("n2", follower, max_bytes=total)
    received = None
    for chunk in chunks_of(source):
        ack, received = exact.on_chunk(chunk, TERM)
        assert ack.ok
    assert received is not None


def test_an_oversized_transfer_ends_the_senders_transfer(
    source: Source, follower: SnapshotStore
) -> None:
    """The leader learns of the size refusal as a failed outcome; nothing more is sent."""
    channel = Channel()
    sender = make_sender(channel, FakeClock())
    sender.start(request(source), source.path)
    run = shuttle(sender, SnapshotInbox("n2", follower, max_bytes=CHUNK), channel)
    assert run.outcome is not None
    assert not run.outcome.delivered
    assert "exceeds the limit" in run.outcome.reason
    assert len(channel.sent) == WINDOW  # the first window, then it stopped
    assert temps(follower) == []


# --- the sender's own rules --------------------------------------------------------------


def test_a_stall_fails_the_transfer(source: Source) -> None:
    """No ack for more than stall_timeout_s: a failed outcome, once; an ack restarts it."""
    clock, channel = FakeClock(), Channel()
    sender = make_sender(channel, clock)
    sender.start(request(source), source.path)
    sender.pump()
    clock.advance(STALL_S)
    assert sender.pump() == ([], [])  # exactly the timeout is not yet a stall
    ok = SnapshotAck("n2", "n1", TERM, 50, CHUNK, ok=True)
    assert sender.on_ack(ok) is None
    clock.advance(STALL_S)
    assert sender.pump() == ([], [])  # the ack reset the timer
    clock.advance(0.5)
    ended, overdue = sender.pump()
    total = len(source.data)
    assert ended == [
        TransferOutcome("n2", 50, total, 2 * STALL_S + 0.5, False, "no progress (timed out)")
    ]
    assert overdue == []
    assert sender.sending_to() == {}
    assert sender.pump() == ([], [])  # reported once
    assert sender.on_ack(SnapshotAck("n2", "n1", TERM, 50, 2 * CHUNK, ok=True)) is None


def test_a_delivered_transfer_not_confirmed_in_time_is_overdue(
    source: Source, follower: SnapshotStore
) -> None:
    """After the last ack the watchdog names the peer once, unless the core confirmed."""
    for confirm in (False, True):
        clock, channel = FakeClock(), Channel()
        sender = make_sender(channel, clock)
        sender.start(request(source), source.path)
        inbox = SnapshotInbox("n2", follower, max_bytes=1 << 20)
        run = shuttle(sender, inbox, channel)
        assert run.received is not None
        run.received.receiver.abort()
        if confirm:
            sender.confirmed("n2")
        clock.advance(STALL_S + 1)
        assert sender.pump() == ([], [] if confirm else ["n2"])
        assert sender.pump() == ([], [])


def test_acks_for_another_term_or_snapshot_are_ignored(source: Source) -> None:
    """Only an ack naming this transfer's term and index, and an offset in the file, counts.

    The others neither end the transfer nor move its window; a refusal ends it as failed.
    """
    clock, channel = FakeClock(), Channel()
    sender = make_sender(channel, clock)
    sender.start(request(source), source.path)
    sender.pump()
    total = len(source.data)
    for foreign in (
        SnapshotAck("n2", "n1", TERM - 1, 50, total, ok=True),
        SnapshotAck("n2", "n1", TERM, 49, total, ok=True),
        SnapshotAck("n3", "n1", TERM, 50, total, ok=True),
        SnapshotAck("n2", "n1", TERM, 50, total + 1, ok=True),  # past the end: nonsense
    ):
        assert sender.on_ack(foreign) is None
    assert sender.sending_to() == {"n2": 50}
    channel.queue.clear()
    assert sender.on_ack(SnapshotAck("n2", "n1", TERM, 50, CHUNK, ok=True)) is None
    sender.pump()  # the window slid by one chunk from where it really was
    assert [c.offset for c in channel.queue] == [WINDOW * CHUNK]
    refused = sender.on_ack(SnapshotAck("n2", "n1", TERM, 50, 0, ok=False, reason="full disk"))
    assert refused is not None
    assert (refused.delivered, refused.reason) == (False, "refused: full disk")
    assert sender.sending_to() == {}


def test_start_on_a_missing_file_fails_at_once(tmp_path: Path, source: Source) -> None:
    """A file that cannot be opened gives a failed outcome at once and no transfer."""
    sender = make_sender(Channel(), FakeClock())
    outcome = sender.start(request(source), tmp_path / "missing.snap")
    assert outcome is not None
    assert (outcome.peer, outcome.index, outcome.delivered) == ("n2", 50, False)
    assert outcome.reason
    assert sender.sending_to() == {}


def test_start_replaces_the_transfer_to_that_peer(tmp_path: Path, source: Source) -> None:
    """A second start to one peer begins at 0 with the new snapshot; the old one is gone."""
    channel = Channel()
    sender = make_sender(channel, FakeClock())
    sender.start(request(source), source.path)
    sender.pump()
    newer = write_source(SnapshotStore(tmp_path / "newer"), meta(80), count=150)
    fds = open_fds()
    sender.start(SnapshotRequest("n1", "n2", TERM, newer.meta), newer.path)
    assert open_fds() == fds  # the old file was closed, the new one opened
    assert sender.sending_to() == {"n2": 80}
    channel.queue.clear()
    sender.pump()
    assert [(c.meta.index, c.offset) for c in channel.queue] == [
        (80, i * CHUNK) for i in range(WINDOW)
    ]
    assert sender.on_ack(SnapshotAck("n2", "n1", TERM, 50, CHUNK, ok=True)) is None


def test_cancel_all_drops_every_transfer(source: Source) -> None:
    """cancel_all: no transfer left, files closed, nothing sent, late acks ignored."""
    clock, channel = FakeClock(), Channel()
    sender = make_sender(channel, clock)
    fds = open_fds()
    for peer in ("n2", "n3"):
        sender.start(SnapshotRequest("n1", peer, TERM, source.meta), source.path)
    assert open_fds() == fds + 2
    sender.pump()
    assert sender.sending_to() == {"n2": 50, "n3": 50}

    sender.cancel_all()

    assert sender.sending_to() == {}
    assert open_fds() == fds
    channel.sent.clear()
    clock.advance(STALL_S + 1)
    assert sender.pump() == ([], [])  # no stall reported for a cancelled transfer
    assert channel.sent == []
    for peer in ("n2", "n3"):
        assert sender.on_ack(SnapshotAck(peer, "n1", TERM, 50, CHUNK, ok=True)) is None
        assert sender.on_ack(SnapshotAck(peer, "n1", TERM, 50, 0, ok=False)) is None
    sender.pump()
    assert channel.sent == []


def test_chunks_round_trip_the_wire(source: Source) -> None:
    """What the sender queues decodes to the file's bytes, in order (sanity of the fake)."""
    channel = Channel()
    sender = make_sender(channel, FakeClock(), window=100)
    sender.start(request(source), source.path)
    sender.pump()
    assert b"".join(c.data for c in channel.queue) == source.data
    assert all(c.total == len(source.data) for c in channel.queue)
    assert channel.queue[-1].is_last
    first = chunks_of(source)[0]
    assert decode_peer_frame(encode_snapshot_chunk(first)) == first
