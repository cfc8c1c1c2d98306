"""The fault injector's lifecycle, shared by every nemesis: schedule, inject, hold, undo, record.

Both nemeses (`tests.nemesis` on 127.0.0.1 with the in-node fault hook, `tests.netns_nemesis`
with iptables in network namespaces) run faults the same way; only how a fault is *made*
differs. This module owns the part that is the same:

- **The schedule.** One `random.Random(seed)` draws everything: the quiet gap before each
  fault, the kind (kinds come in rounds, each a seeded shuffle of every enabled kind, so a
  run of a few rounds has hit every kind), how long each fault is held, and, through
  `FaultPlan.rng`, every choice the environment's actions make (which node, which side).
  The draws happen in one fixed order, so a seed replays the same kinds in the same order.
- **One fault at a time.** An action plans the fault (`Injection`: its nodes and note, how
  to make it, how long to keep it, how to undo it); the plan records it as a `Fault`
  before making it, applies it, holds it for a time drawn from its span (a stop request
  cuts the hold short, so a stopping run undoes its fault at once), undoes it and stamps
  its end.
- **Stopping.** A run lasts for its duration, and, when asked (`is_finished`), until
  `min_rounds` whole rounds were injected and undone, so a short run has hit every kind.
  `stop` ends the thread (the current fault is undone first); `heal` then undoes whatever
  the environment still has in effect.
- **The record** (`Fault`: kind, nodes, start and end since the run's origin, note) and
  the count by kind for a summary (`count_faults`).

The environment plugs in a table `{kind: action}` and a `heal` callable. It must not keep
its own schedule, thread or fault list, and an action must not hold or record a fault
itself: it draws its choices from `FaultPlan.rng` and returns an `Injection`.

An exception in the thread is its boundary: the traceback goes to `FaultPlan.error`, the
thread ends, and the runner heals and fails the run.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tests.procs import NoReply


@dataclass(slots=True)
class Fault:
    """One injected fault.

    Args:
        kind: one of the nemesis's fault kinds.
        nodes: the nodes it hit (for a partition: the cut-off minority).
        start_ns, end_ns: when it was applied and undone (ns since the run's origin).
        note: set when the plan could not be followed (e.g. no leader was found), or to
            say more (for `loss`, the drop probability).
    """

    kind: str
    nodes: list[str]
    start_ns: int
    end_ns: int | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Injection:
    """One fault as an action planned it; `FaultPlan` records, makes, holds and undoes it.

    Args:
        nodes: the nodes it hits (the record's `nodes`; `apply` may change them).
        note: the record's first note (`apply` and `undo` may change it).
        apply: makes the fault; None when there is nothing to make (a plan that could not
            be followed, recorded with its note and ended at once).
        hold_s: how long the fault is kept (uniform range); None for a one-shot change.
        undo: undoes the fault; None when nothing is left to undo.
        restamp: take the start time again once `apply` returned (a kill or a membership
            change takes a while; the fault starts when it took effect).
    """

    nodes: list[str]
    note: str | None = None
    apply: Callable[[Fault], None] | None = None
    hold_s: tuple[float, float] | None = None
    undo: Callable[[Fault], None] | None = None
    restamp: bool = False


Action = Callable[[str], Injection]
"""Plans one fault of the kind it is given (drawing its choices from `FaultPlan.rng`)."""


class LeaderSource(Protocol):
    """What `FaultPlan.find_leader` needs of a cluster: its running nodes and their status."""

    def running(self) -> list[str]:
        """The ids of nodes whose process has not exited."""
        ...

    def status(self, node_id: str, timeout: float = ...) -> dict[str, Any]:
        """The node's `status` map; raises `NoReply` when it does not answer in time."""
        ...


def count_faults(faults: Iterable[Fault], order: Sequence[str]) -> dict[str, int]:
    """kind -> how many faults of that kind, for the kinds in `order` that occur, in order."""
    counts = Counter(fault.kind for fault in faults)
    return {kind: counts[kind] for kind in order if counts[kind]}


class FaultPlan:
    """Runs seeded faults, one at a time, in a background thread.

    Args:
        actions: kind -> the action that plans a fault of that kind.
        heal: undoes everything the environment still has in effect (safe to repeat).
        kinds: which kinds to draw from (each must have an action).
        known: every kind the environment knows, in the order a summary lists them.
        seed: seeds every choice, the actions' included (`rng`).
        origin_ns: `time.monotonic_ns()` at the start of the run (shared with the workload).
        gap_s: the quiet time before each fault (uniform range).
        thread_name: the background thread's name.

    Raises:
        ValueError: an unknown kind, or none.
    """

    def __init__(
        self,
        actions: Mapping[str, Action],
        heal: Callable[[], None],
        *,
        kinds: Iterable[str],
        known: Sequence[str],
        seed: int = 0,
        origin_ns: int | None = None,
        gap_s: tuple[float, float] = (0.5, 2.0),
        thread_name: str = "nemesis",
    ) -> None:
        self.kinds = list(kinds)
        self.known = tuple(known)
        unknown = set(self.kinds) - set(self.known)
        if unknown or not self.kinds:
            raise ValueError(f"unknown or no fault kinds: {sorted(unknown)}; known: {self.known}")
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.error: str | None = None  # the thread's traceback, if it failed
        self._actions = actions
        self._heal = heal
        self._origin_ns = time.monotonic_ns() if origin_ns is None else origin_ns
        self._gap_s = gap_s
        self._thread_name = thread_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start injecting faults in a background thread."""
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the thread to stop (the current fault is undone first) and wait for it.

        Raises:
            RuntimeError: the thread did not finish within `timeout`.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the nemesis thread did not stop within {timeout:g}s")

    def heal(self) -> None:
        """Undo everything the environment still has in effect. Safe to repeat."""
        self._heal()

    def is_stopping(self) -> bool:
        """Whether `stop` was asked for."""
        return self._stop.is_set()

    def rounds_done(self) -> int:
        """How many whole rounds (every kind once) were injected and undone."""
        done = sum(1 for fault in self.faults if fault.end_ns is not None)
        return done // len(self.kinds)

    def is_finished(self, elapsed_s: float, duration_s: float, min_rounds: int) -> bool:
        """Whether a run should stop: the thread failed, or `duration_s` has passed and
        `min_rounds` whole rounds were injected (so every kind was hit that often)."""
        if self.error is not None:
            return True
        return elapsed_s >= duration_s and self.rounds_done() >= min_rounds

    def counts(self) -> dict[str, int]:
        """kind -> how many faults of that kind were injected, in `known` order."""
        return count_faults(self.faults, self.known)

    def now(self) -> int:
        """Nanoseconds since the run's origin."""
        return time.monotonic_ns() - self._origin_ns

    def _run(self) -> None:
        schedule: list[str] = []
        try:
            while not self._stop.wait(self.rng.uniform(*self._gap_s)):
                if not schedule:
                    schedule = list(self.kinds)
                    self.rng.shuffle(schedule)
                self._inject(schedule.pop())
        except Exception:  # the thread's boundary: report; the runner heals and fails
            self.error = traceback.format_exc()

    def _inject(self, kind: str) -> None:
        """Plan, record, make, hold and undo one fault of `kind`."""
        injection = self._actions[kind](kind)
        fault = Fault(kind, list(injection.nodes), self.now(), note=injection.note)
        # Recorded before it is made: a fault whose undo failed shows as still active.
        self.faults.append(fault)
        if injection.apply is not None:
            injection.apply(fault)
            if injection.restamp:
                fault.start_ns = self.now()
        if injection.hold_s is not None:
            self._stop.wait(self.rng.uniform(*injection.hold_s))  # a stop cuts it short
        if injection.undo is not None:
            injection.undo(fault)
        fault.end_ns = self.now()

    # --- helpers for actions ------------------------------------------------------------

    def find_leader(
        self,
        cluster: LeaderSource,
        *,
        search_s: float,
        skip: Collection[str] = (),
        while_stopping: bool = False,
    ) -> str | None:
        """The running node reporting itself leader with the highest term, polled a while.

        Args:
            cluster: where to look.
            search_s: how long to look before giving up (None is returned).
            skip: nodes not to ask (read at every poll: e.g. the paused ones).
            while_stopping: go on after a stop request (a change that must be completed
                even then); otherwise a stop request ends the search at once.
        """
        deadline = time.monotonic() + search_s
        while (while_stopping or not self._stop.is_set()) and time.monotonic() < deadline:
            best: tuple[int, str] | None = None
            for node_id in cluster.running():
                if node_id in skip:
                    continue
                try:
                    status = cluster.status(node_id, timeout=0.3)
                except NoReply:
                    continue
                if status["role"] == "leader" and (best is None or status["term"] > best[0]):
                    best = (status["term"], node_id)
            if best is not None:
                return best[1]
            if while_stopping:
                time.sleep(0.05)  # a stop request must not shorten this wait
            else:
                self._stop.wait(0.05)
        return None


class PlannedNemesis:
    """What every nemesis exposes of its `FaultPlan` (set `self._plan` in `__init__`):
    its kinds, the faults so far, the thread's error, and the lifecycle calls."""

    _plan: FaultPlan

    @property
    def kinds(self) -> list[str]:
        """The kinds drawn from."""
        return self._plan.kinds

    @property
    def faults(self) -> list[Fault]:
        """Every fault injected so far, in order."""
        return self._plan.faults

    @property
    def error(self) -> str | None:
        """The nemesis thread's traceback, if it failed."""
        return self._plan.error

    def start(self) -> None:
        """Start injecting faults in a background thread."""
        self._plan.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the thread to stop (the current fault is undone first) and wait for it.

        Raises:
            RuntimeError: the thread did not finish within `timeout`.
        """
        self._plan.stop(timeout)

    def heal(self) -> None:
        """Undo everything still in effect (the environment's heal). Safe to repeat."""
        self._plan.heal()

    def rounds_done(self) -> int:
        """How many whole rounds (every kind once) were injected and undone."""
        return self._plan.rounds_done()

    def is_finished(self, elapsed_s: float, duration_s: float, min_rounds: int) -> bool:
        """Whether the run should stop (see `FaultPlan.is_finished`)."""
        return self._plan.is_finished(elapsed_s, duration_s, min_rounds)

    def counts(self) -> dict[str, int]:
        """kind -> how many faults of that kind were injected, in the environment's order."""
        return self._plan.counts()
