"""Watches under faults (issue 15): writers change a key range while watchers on every
node (and watchers that switch nodes) follow it; after healing, every stream is checked.

The run (`run_watch`, `bin/zraft-nemesis --workload watch`):

- **Writers** (each with a library `Client`, retrying with its session) change the keys
  `watch/a/0..3` and `watch/b/0..3`: puts, deletes, transactions putting two or three keys
  at one revision, deletes of the whole `watch/b/` range, and leases: a put attached to a
  fresh lease that is then revoked or left to expire (its keys' deletes are the cluster's
  own writes). Every value is unique (`<writer>.<n>`), so an event names its write.
- **Watchers** (`Client.watch`, all from one start revision `s0` fixed before the faults):
  one over `watch/` starting at each node; one that moves to another node after its
  events (`Watch.move_to`); one over `watch/a/` only; one whose polls carry one event at
  most (`max_events` 1: a revision must still come whole); and one started halfway
  through, from `s0`, catching up through history (and snapshots).
- After healing: a linearizable read of the range gives the final state at revision `R`;
  every watcher must get past `R`; then the streams are checked (`check_watch`, pure).

The checks (`check_watch`):

- `order`: events strictly increase by (revision, key): no duplicate, no reordering;
- `bounds`: every event is in the watcher's range and within [s0, R];
- `agree`: every stream equals the first full-range stream restricted to its range
  (Jepsen's check: the watchers agree);
- `acknowledged`: every acknowledged write between s0 and R shows at its revision, whole
  (every key of a transaction, every key a range delete removed), in every stream
  covering it;
- `phantom`: every put event carries the value of a write that was invoked (at its
  revision if acknowledged); a delete removes a key the stream saw put;
- `final`: each key's last event matches the final read (value and mod revision, or
  absent);
- `caught-up`: every watcher got past R.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.checkrun import write_faults
from tests.faultplan import Fault, count_faults
from tests.nemesis import FAULT_KINDS, drive_under_faults, make_rig, snapshot_counts
from zraft.client import Client, ClientError
from zraft.client.watch import Watch

PREFIX = "watch/"
SUB_PREFIX = "watch/a/"
KEYS = [f"watch/{group}/{n}" for group in "ab" for n in range(4)]
RANGE_B = "watch/b/"
LEASES_END_S = 30.0
"""How long the writers' last leases may take to expire after the run (TTLs of seconds)."""


@dataclass(slots=True)
class WriteOp:
    """One write: what it asked for, and how it ended (`ok`, `failed`: refused, certainly
    not applied; `unknown`: it may or may not have been applied)."""

    writer: int
    kind: str  # put | delete | txn | delete_range | lease_put | revoke
    keys: list[str]
    values: list[str]
    invoke_ns: int
    complete_ns: int = 0
    outcome: str = "unknown"
    revision: int | None = None
    deleted: int = 0  # delete, delete_range: how many keys it removed (when ok)
    error: str = ""  # the error code of a refusal


@dataclass(slots=True)
class Stream:
    """One watcher's events: (revision, key, type, value, received_ns)."""

    name: str
    prefix: str
    node: str
    start: int = 0  # the revision it started from
    events: list[tuple[int, str, str, str, int]] = field(default_factory=list)
    next_revision: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WatchAnomaly:
    """A broken rule: the check's name, the watcher, and what was found."""

    check: str
    watcher: str
    detail: str


# --- the checker (pure) ---------------------------------------------------------------------


def check_watch(
    writes: Sequence[WriteOp],
    streams: Sequence[Stream],
    final: Mapping[str, tuple[str, int]],
    start: int,
    end: int,
) -> list[WatchAnomaly]:
    """Every broken rule of the module doc's list, for streams that began at `start` (s0;
    a late one at its own `Stream.start`) and whose final read (key -> (value, mod
    revision)) was at revision `end` (R)."""
    anomalies: list[WatchAnomaly] = []
    reference = next((s for s in streams if s.prefix == PREFIX), None)
    by_value = {v: w for w in writes for v in w.values if v}
    for stream in streams:
        begin = max(start, stream.start)
        alive = _alive_before(reference, stream.prefix, begin) if reference else set()
        found: list[WatchAnomaly] = []
        found += _order(stream)
        found += _bounds(stream, begin, end)
        if reference is not None and stream is not reference:
            found += _agree(stream, reference, begin, end)
        found += _acknowledged(stream, writes, begin, end)
        found += _phantoms(stream, by_value, alive)
        found += _final(stream, final)
        if stream.next_revision is None or stream.next_revision <= end:
            found.append(
                WatchAnomaly(
                    "caught-up", stream.name, f"next revision {stream.next_revision} <= R {end}"
                )
            )
        anomalies += found
    return anomalies


def _order(stream: Stream) -> list[WatchAnomaly]:
    found = []
    for before, after in zip(stream.events, stream.events[1:], strict=False):
        if (after[0], after[1]) <= (before[0], before[1]):
            found.append(WatchAnomaly("order", stream.name, f"{after[:3]} after {before[:3]}"))
    return found


def _bounds(stream: Stream, start: int, end: int) -> list[WatchAnomaly]:
    return [
        WatchAnomaly(
            "bounds", stream.name, f"{event[:3]} outside {stream.prefix}* [{start}, {end}]"
        )
        for event in stream.events
        if not event[1].startswith(stream.prefix) or not start <= event[0] <= end
    ]


def _alive_before(reference: Stream, prefix: str, begin: int) -> set[str]:
    """The keys of the range that exist before `begin`, by the reference stream."""
    alive: set[str] = set()
    for revision, key, kind, _value, _ in reference.events:
        if revision < begin and key.startswith(prefix):
            (alive.add if kind == "put" else alive.discard)(key)
    return alive


def _agree(stream: Stream, reference: Stream, begin: int, end: int) -> list[WatchAnomaly]:
    mine = [e[:4] for e in stream.events if e[0] <= end]
    theirs = [
        e[:4] for e in reference.events if e[1].startswith(stream.prefix) and begin <= e[0] <= end
    ]
    if mine == theirs:
        return []
    at = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
    if at is None:
        at = min(len(mine), len(theirs))
    detail = (
        f"differs from {reference.name} at event {at}: "
        f"{mine[at] if at < len(mine) else 'end'} vs {theirs[at] if at < len(theirs) else 'end'}"
    )
    return [WatchAnomaly("agree", stream.name, detail)]


def expected_events(write: WriteOp) -> set[tuple[int, str, str, str]]:
    """The events an acknowledged write must show at its revision (those it can name)."""
    revision = write.revision
    assert revision is not None
    if write.kind in ("put", "txn", "lease_put"):
        return {(revision, k, "put", v) for k, v in zip(write.keys, write.values, strict=True)}
    if write.kind == "delete" and write.deleted:
        return {(revision, write.keys[0], "delete", "")}
    return set()


def _acknowledged(
    stream: Stream, writes: Sequence[WriteOp], start: int, end: int
) -> list[WatchAnomaly]:
    have = {e[:4] for e in stream.events}
    deletes_at: dict[int, int] = {}
    for event in stream.events:
        if event[2] == "delete":
            deletes_at[event[0]] = deletes_at.get(event[0], 0) + 1
    found = []
    for write in writes:
        if write.outcome != "ok" or write.revision is None or not start <= write.revision <= end:
            continue
        wanted = {e for e in expected_events(write) if e[1].startswith(stream.prefix)}
        missing = wanted - have
        if missing:
            found.append(
                WatchAnomaly(
                    "acknowledged",
                    stream.name,
                    f"{write.kind} at {write.revision}: missing {sorted(missing)}",
                )
            )
        # A range delete that removed nothing made no revision (its header is the current
        # one, another write's): only one that removed keys is checked.
        if write.kind == "delete_range" and write.deleted and stream.prefix in (PREFIX, RANGE_B):
            got = deletes_at.get(write.revision, 0)
            if got != write.deleted:
                found.append(
                    WatchAnomaly(
                        "acknowledged",
                        stream.name,
                        f"delete_range at "
                        f"{write.revision} removed {write.deleted}, stream shows {got}",
                    )
                )
    return found


def _phantoms(
    stream: Stream, by_value: Mapping[str, WriteOp], alive: set[str]
) -> list[WatchAnomaly]:
    found = []
    alive = set(alive)
    for revision, key, kind, value, _ in stream.events:
        if kind == "put":
            write = by_value.get(value)
            if write is None or key not in write.keys or write.outcome == "failed":
                found.append(
                    WatchAnomaly(
                        "phantom", stream.name, f"put {key}={value!r} at {revision}: no such write"
                    )
                )
            elif write.outcome == "ok" and write.revision != revision:
                found.append(
                    WatchAnomaly(
                        "phantom",
                        stream.name,
                        f"put {key}={value!r} at {revision}, acknowledged at {write.revision}",
                    )
                )
            alive.add(key)
        elif key not in alive:
            found.append(
                WatchAnomaly("phantom", stream.name, f"delete of absent {key} at {revision}")
            )
        else:
            alive.discard(key)
    return found


def _final(stream: Stream, final: Mapping[str, tuple[str, int]]) -> list[WatchAnomaly]:
    last: dict[str, tuple[int, str, str]] = {}
    for revision, key, kind, value, _ in stream.events:
        last[key] = (revision, kind, value)
    found = []
    for key in sorted(set(last) | {k for k in final if k.startswith(stream.prefix)}):
        event = last.get(key)
        shown = None if event is None or event[1] == "delete" else (event[2], event[0])
        if shown != final.get(key):
            found.append(
                WatchAnomaly(
                    "final",
                    stream.name,
                    f"{key}: stream ends with {shown}, the final read has {final.get(key)}",
                )
            )
    return found


# --- the run ----------------------------------------------------------------------------------


class Writer(threading.Thread):
    """Changes the keys until told to stop, recording every write."""

    def __init__(self, number: int, client: Client, seed: int, origin_ns: int) -> None:
        super().__init__(daemon=True, name=f"writer-{number}")
        self.number, self.client = number, client
        self.rng = random.Random(seed)
        self.origin_ns = origin_ns
        self.writes: list[WriteOp] = []
        self.stopping = threading.Event()
        self._seq = 0

    def _value(self) -> str:
        self._seq += 1
        return f"{self.number}.{self._seq}"

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.one()
                self.stopping.wait(self.rng.uniform(0, 0.01))
        finally:
            self.client.close()

    def one(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            key, value = rng.choice(KEYS), self._value()
            self._do("put", [key], [value], "put", key=key, value=value)
        elif roll < 0.6:
            key = rng.choice(KEYS)
            self._do("delete", [key], [""], "delete", key=key)
        elif roll < 0.8:
            keys = rng.sample(KEYS, rng.choice((2, 3)))
            values = [self._value() for _ in keys]
            ops = [{"op": "put", "key": k, "value": v} for k, v in zip(keys, values, strict=True)]
            self._do("txn", keys, values, "txn", success=ops)
        elif roll < 0.9:
            self._do("delete_range", [RANGE_B], [""], "delete_range", key=RANGE_B, prefix=True)
        else:
            self._lease()

    def _lease(self) -> None:
        try:
            granted = self.client.request("lease_grant", ttl=1)
        except ClientError:
            return
        if not granted.ok or granted.lease is None:
            return
        key, value = self.rng.choice(KEYS), self._value()
        self._do("lease_put", [key], [value], "put", key=key, value=value, lease=granted.lease)
        if self.rng.random() < 0.5:
            self._do("revoke", [], [], "lease_revoke", lease=granted.lease)

    def _do(self, kind: str, keys: list[str], values: list[str], op: str, **fields: Any) -> None:
        write = WriteOp(self.number, kind, keys, values, time.monotonic_ns() - self.origin_ns)
        self.writes.append(write)
        try:
            reply = self.client.request(op, **fields)
        except ClientError:
            write.complete_ns = time.monotonic_ns() - self.origin_ns
            return  # unknown: it may have been applied
        write.complete_ns = time.monotonic_ns() - self.origin_ns
        if not reply.ok:
            write.error = reply.error_code or ""
            write.outcome = "failed" if reply.error_code not in ("timeout",) else "unknown"
            return
        write.outcome = "ok"
        write.revision = reply.header.revision if reply.header else None
        write.deleted = reply.deleted or 0


class Watcher(threading.Thread):
    """Follows one watch, recording its events; `switch` moves it between nodes."""

    def __init__(
        self, stream: Stream, watch: Watch, origin_ns: int, nodes: Sequence[str], switch: bool
    ) -> None:
        super().__init__(daemon=True, name=f"watcher-{stream.name}")
        self.stream, self.watch, self.origin_ns = stream, watch, origin_ns
        self.nodes, self.switch = list(nodes), switch

    def run(self) -> None:
        turn = 0
        try:
            for event in self.watch:
                value = event.kv.value.decode() if event.type == "put" else ""
                now = time.monotonic_ns() - self.origin_ns
                self.stream.events.append(
                    (event.revision, event.key.decode(), event.type, value, now)
                )
                self.stream.next_revision = self.watch.next_revision
                if self.switch:
                    turn += 1
                    self.watch.move_to(self.nodes[turn % len(self.nodes)])
        except Exception as exc:  # kept in the report: a watch must not end by itself
            self.stream.error = repr(exc)
        self.stream.next_revision = self.watch.next_revision


@dataclass
class WatchReport:
    """Everything a run found; `exit_code` says what the runner returns."""

    seed: int
    nodes: int
    duration_s: float
    directory: Path
    start: int = 0
    end: int = 0
    writes: list[WriteOp] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    final: dict[str, tuple[str, int]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    anomalies: list[WatchAnomaly] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    safety: str | None = None
    snapshots: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.errors and self.safety is None

    @property
    def exit_code(self) -> int:
        if self.anomalies or self.safety is not None:
            return 1
        return 2 if self.errors else 0

    def delivery_latencies(self) -> list[float]:
        """Seconds from a write's acknowledgement to its event in each full-range stream."""
        done = {
            (w.revision, k): w.complete_ns for w in self.writes if w.outcome == "ok" for k in w.keys
        }
        out = []
        for stream in self.streams:
            # The watchers that follow live (not the late one catching up, nor the one
            # taking one revision per poll, which falls behind by design under load).
            if stream.prefix != PREFIX or stream.name in ("late", "one-event"):
                continue
            for revision, key, _kind, _value, received in stream.events:
                acked = done.get((revision, key))
                if acked is not None:
                    out.append(max(0.0, (received - acked) / 1e9))
        return out

    def summary(self) -> str:
        outcomes: dict[str, int] = {}
        for write in self.writes:
            outcomes[write.outcome] = outcomes.get(write.outcome, 0) + 1
        lines = [
            f"watch run seed {self.seed}, {self.nodes} nodes, {self.duration_s:g}s: "
            f"revisions {self.start} -> {self.end}, writes {outcomes}",
            "faults: "
            + ", ".join(f"{k} {n}" for k, n in count_faults(self.faults, FAULT_KINDS).items()),
            "snapshots: " + json.dumps(self.snapshots),
        ]
        for stream in self.streams:
            lines.append(
                f"  {stream.name:<14} {stream.prefix:<9} {len(stream.events):>6} events"
                f"{'  ERROR ' + stream.error if stream.error else ''}"
            )
        latencies = sorted(self.delivery_latencies())
        if latencies:
            p50 = latencies[len(latencies) // 2]
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            lines.append(
                f"delivery after the acknowledgement: p50 {p50:.3f}s p99 {p99:.3f}s "
                f"({len(latencies)} events)"
            )
        by_check: dict[str, int] = {}
        for anomaly in self.anomalies:
            by_check[anomaly.check] = by_check.get(anomaly.check, 0) + 1
        lines.append(f"anomalies: {by_check or 0}")
        lines += [f"  {a.check} {a.watcher}: {a.detail}" for a in self.anomalies[:20]]
        lines += [f"error: {e}" for e in self.errors]
        lines.append(f"election safety: {'ok' if self.safety is None else self.safety}")
        lines.append("result: " + ("OK" if self.ok else f"FAILED (exit {self.exit_code})"))
        return "\n".join(lines)


def run_watch(
    directory: Path,
    *,
    seed: int,
    duration_s: float,
    nodes: int = 3,
    writers: int = 3,
    faults: Iterable[str] = FAULT_KINDS,
    request_timeout_ms: int = 1500,
    progress: Callable[[str], None] | None = None,
    cluster_options: dict[str, int] | None = None,
    nemesis_options: dict[str, Any] | None = None,
) -> WatchReport:
    """Run writers and watchers under the nemesis, heal, read, wait for the watchers,
    check; leaves `writes.jsonl`, `streams.jsonl`, `run.json` and `faults.jsonl`."""
    say = progress or (lambda _line: None)
    directory.mkdir(parents=True, exist_ok=True)
    report = WatchReport(seed, nodes, duration_s, directory)
    rig = make_rig(
        directory,
        seed=seed,
        nodes=nodes,
        faults=faults,
        request_timeout_ms=request_timeout_ms,
        cluster_options=cluster_options,
        nemesis_options=nemesis_options,
    )
    cluster = rig.cluster
    endpoints = dict(cluster.client_endpoints)
    timeout_s = 2 * request_timeout_ms / 1000 + 1

    def client() -> Client:
        return Client(
            list(endpoints.values()),
            timeout=timeout_s,
            node_endpoints=endpoints,
            curve=cluster.curve,
        )

    watchers: list[Watcher] = []
    holder: list[Client] = []

    def start_watcher(
        name: str,
        prefix: str,
        node: str,
        *,
        switch: bool = False,
        max_events: int | None = None,
        start: int | None = None,
    ) -> None:
        owner = client()
        holder.append(owner)
        begin = report.start if start is None else start
        watch = owner.watch(
            prefix,
            prefix=True,
            start_revision=begin,
            node=node,
            wait_s=0.5,
            max_events=max_events,
        )
        stream = Stream(name, prefix, node, begin)
        report.streams.append(stream)
        watcher = Watcher(stream, watch, rig.origin_ns, list(endpoints), switch)
        watchers.append(watcher)
        watcher.start()

    def setup() -> None:
        with client() as first:
            report.start = first.put("marker", "start").header.revision + 1  # type: ignore[union-attr]
        ids = list(endpoints)
        for node in ids:
            start_watcher(f"on-{node}", PREFIX, node)
        start_watcher("switching", PREFIX, ids[0], switch=True)
        start_watcher(f"sub-{ids[-1]}", SUB_PREFIX, ids[-1])
        start_watcher("one-event", PREFIX, ids[1 % len(ids)], max_events=1)

    running = [Writer(n, client(), seed * 100 + n, rig.origin_ns) for n in range(writers)]

    def run_load(should_stop: Callable[[], bool]) -> None:
        for writer in running:
            writer.start()
        deadline = time.monotonic() + duration_s
        late_started = False
        while time.monotonic() < deadline and not should_stop():
            if not late_started and time.monotonic() > deadline - duration_s / 2:
                # From 2,000 revisions back (or s0): history that automatic compaction
                # (10,000 revisions) keeps, read through the store's records and
                # snapshots rather than the live stream.
                try:
                    with client() as probe:
                        now = probe.put("marker", "late").header.revision  # type: ignore[union-attr]
                except ClientError:
                    continue
                start_watcher(
                    "late", PREFIX, list(endpoints)[-1], start=max(report.start, now - 2000)
                )
                late_started = True
            time.sleep(0.05)
        for writer in running:
            writer.stopping.set()
        for writer in running:
            writer.join(timeout=timeout_s + 5)

    try:
        drive_under_faults(
            rig,
            run_load,
            clients=writers,
            duration_s=duration_s,
            errors=report.errors,
            say=say,
            setup=setup,
        )
        report.writes = sorted((w for r in running for w in r.writes), key=lambda w: w.invoke_ns)
        say("waiting for the writers' leases to end; reading the range")
        with client() as last:
            # A lease left to expire deletes its key at its expiry: one ending after the
            # final read would be a write the checks bound out (seed 1702 did that).
            deadline = time.monotonic() + LEASES_END_S
            while time.monotonic() < deadline:
                leases = last.request("lease_leases")
                if leases.ok and not leases.raw.get("leases"):
                    break
                time.sleep(0.2)
            else:
                report.errors.append(f"leases still granted {LEASES_END_S:g}s after the run")
            read = last.range(PREFIX, prefix=True)
        if not read.ok or read.header is None or read.kvs is None:
            report.errors.append(f"the final read failed: {read}")
        else:
            report.end = read.header.revision
            report.final = {
                kv.key.decode(): (kv.value.decode(), kv.mod_revision) for kv in read.kvs
            }
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                (w.stream.next_revision or 0) <= report.end and w.is_alive() for w in watchers
            ):
                time.sleep(0.05)
        for watcher in watchers:
            watcher.watch.cancel()
        for watcher in watchers:
            watcher.join(timeout=5)
            if watcher.is_alive():
                report.errors.append(f"watcher {watcher.stream.name} did not stop")
        _save(report)
        report.faults = list(rig.nemesis.faults)
        write_faults(directory / "faults.jsonl", report.faults)
        try:
            cluster.assert_safety()
        except AssertionError as exc:
            report.safety = str(exc).splitlines()[0]
        report.snapshots = snapshot_counts(cluster.events())
        if report.end:
            report.anomalies = check_watch(
                report.writes, report.streams, report.final, report.start, report.end
            )
        return report
    finally:
        try:
            rig.nemesis.stop()
        finally:
            for watcher in watchers:
                watcher.watch.cancel()
            for owner in holder:
                owner.close()
            cluster.close()


def _save(report: WatchReport) -> None:
    directory = report.directory
    with (directory / "writes.jsonl").open("w") as out:
        for write in report.writes:
            out.write(json.dumps(asdict(write)) + "\n")
    with (directory / "streams.jsonl").open("w") as out:
        for stream in report.streams:
            out.write(json.dumps(asdict(stream)) + "\n")
    run = {"start": report.start, "end": report.end, "final": report.final}
    (directory / "run.json").write_text(json.dumps(run) + "\n")


def recheck(directory: Path) -> list[WatchAnomaly]:
    """Check a saved run again (after changing the checker, or doctoring its files)."""
    writes = [WriteOp(**json.loads(line)) for line in (directory / "writes.jsonl").open()]
    streams = []
    for line in (directory / "streams.jsonl").open():
        raw = json.loads(line)
        raw["events"] = [tuple(e) for e in raw["events"]]
        streams.append(Stream(**raw))
    run = json.loads((directory / "run.json").read_text())
    final = {k: (v[0], v[1]) for k, v in run["final"].items()}
    return check_watch(writes, streams, final, run["start"], run["end"])


def summary_json(report: WatchReport) -> dict[str, Any]:
    """The run's figures, for scripts."""
    latencies = sorted(report.delivery_latencies())
    return {
        "seed": report.seed,
        "nodes": report.nodes,
        "duration_s": report.duration_s,
        "revisions": [report.start, report.end],
        "writes": len(report.writes),
        "acknowledged": sum(1 for w in report.writes if w.outcome == "ok"),
        "events": {s.name: len(s.events) for s in report.streams},
        "faults": count_faults(report.faults, FAULT_KINDS),
        "snapshots": report.snapshots,
        "anomalies": [asdict(a) for a in report.anomalies],
        "errors": report.errors,
        "delivery_p50_s": latencies[len(latencies) // 2] if latencies else None,
        "delivery_p99_s": latencies[int(len(latencies) * 0.99)] if latencies else None,
        "ok": report.ok,
    }
