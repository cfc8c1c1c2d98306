"""A linearizability checker for histories of a key-value store (one register per key).

`check(history)` answers: is there a total order of the operations that respects real
time (an operation that completed before another was invoked comes first) and in which
every operation returns what it returned when replayed against a plain dictionary?

Theory of operation
-------------------

**P-compositionality.** Operations on different keys never interact, so a history is
linearizable exactly when each key's sub-history is (Herlihy & Wing, locality). Each key
is checked on its own with a sequential model of one register: a value, or absent.

**What each operation contributes.**

- `ok` ops are mandatory: they must appear in the order, and what they returned must
  match the model there (`get` the value; `put`/`delete`/`cas` the optional
  `result_found`; `cas` needs the expected value).
- `info` writes are optional: they may take effect at any point after their invocation,
  or never. `info` gets observed nothing and are dropped.
- `fail` ops never took effect and are dropped, except a cas that lost the comparison:
  it is a mandatory read that saw a value different from `expected`, and equal to the
  value returned in the reply when one was recorded.

**The search** (Wing & Gong 1993, with the memoization of Lowe 2017: the algorithm
behind Knossos and Porcupine). The calls and returns of one key's mandatory ops sit in a
doubly linked list ordered by time; at equal times calls come first, so operations whose
intervals touch count as concurrent. The candidates are the calls before the first
return: ops that could take effect now. The search places a candidate if the model
accepts what it returned (unlinks its call and return, "lifts" it, and pushes it on a
stack) and starts again from the front; when no candidate is left, it is at a dead end
and takes the last placed op back (O(1) relinking, dancing links), resuming after that
op's call. The key is linearizable when every mandatory op is placed, and not when a
dead end leaves nothing to take back. Optional ops have no return and sit in a second
list: they never block, and may simply stay unplaced.

**Memoization with subsumption.** A configuration is (set of placed ops, model state).
Two paths reaching the same configuration have the same future, so each is explored
once (Lowe). Stronger: a configuration with the same mandatory ops and state as an
explored one and a superset of its optional ops can do nothing the explored one could
not (the extra optional ops might as well never have happened), so it is pruned too.

**Reductions** that keep the search near one pass on valid histories (`_Search` and
`_simplify` give the arguments): a read that fits the current state is placed at once
and nothing else is tried there (concurrent reads are never permuted); optional writes
are tried last, only when they enable a candidate, and interchangeable ones in a fixed
order; written values that nothing compares against collapse into one (orders of
concurrent writes nobody reads merge); optional writes nobody could notice are dropped.

**Complexity.** Checking linearizability is NP-complete in general (Gibbons & Korach),
and the search is exponential in the worst case. With memoization it visits at most one
configuration per (downward-closed set of placed ops, state): for c concurrent clients
per key, O(n * 2^c * states) configurations, each costing O(c) list steps and O(n / 64)
bitmask work. A valid history with a few clients takes little more than one pass. A
non-linearizable one makes the search exhaust every order of the ops before the point of
failure; so when the search stops making progress, it probes for a small failing window
near the point where it is stuck (below), which usually settles the matter at once. A
budget (steps and seconds) turns a search that would take too long into the answer
"unknown" (`ok=None`).

**The window.** When a key is not linearizable, `CheckResult.window` is a short run of
that key's operations that already cannot be ordered. Precisely: the key's operations,
minus the dropped ones, sorted by invocation time (then id), are numbered 0..m-1; the
window is a run i..j of consecutive ones that fails a *relaxed* check in which

- the register may start with any value written by an op outside the window that was
  invoked before some window op completed (or absent), and
- every write outside the window whose interval overlaps the window's span may take
  effect at any point of its interval (for an indeterminate one: after its
  invocation), or never.

The relaxations only add freedom, so a failing window proves that the whole history is
not linearizable, and a larger run fails whenever a smaller one inside it does. The
window is inclusion-minimal: dropping its first or its last operation makes it pass,
hence so does every shorter run inside it. It is found by galloping back from the point
where the full search got stuck (widths 1, 2, 4, ...), then binary searches on its end
and on its start.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zraft.testing.history import Op, OpKind, Outcome

DEFAULT_TIMEOUT_S = 60.0
"""Default wall-clock budget of the main search, in seconds (the window search gets as much)."""

_INF = math.inf

# Transition codes of the sequential register model.
_PUT, _DELETE, _CAS, _GET, _CAS_FAILED = range(5)

# The main search looks for a failing window when it made no progress in this many steps;
# the probe's own step limit starts here and doubles after each probe.
_PROBE_EVERY = 10_000

# Clock reads cost more than a search step: look at the deadline every this many steps.
_CLOCK_EVERY = 4096


class _Marker:
    """A sentinel that can never equal a register value."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


_ANY = _Marker("ANY")
"""Model state "some seed value, not yet pinned down" (the start of a window)."""

_REJECT = _Marker("REJECT")
"""Transition result: the model cannot apply the op in this state."""

_UNKNOWN = _Marker("UNKNOWN")
"""Observed value of a failed cas whose reply did not record the current value."""

_OPAQUE = _Marker("OPAQUE")
"""Stands for every written value that no operation compares against (see `_simplify`)."""

_State = bytes | None | _Marker


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key.

    Args:
        ok: True linearizable, False not, None unknown (the budget ran out).
        ops: how many of the key's operations took part (dropped ones excluded).
        explored: configurations the main search visited for this key.
        deepest: the most mandatory ops placed at once: the longest linearizable
            prefix the search reached (equals the mandatory count when `ok`).
        linearization: when `ok`, the op ids in one valid order, including the
            indeterminate writes that took effect there; otherwise None.
        window: when not `ok`, the minimal failing window (see the module docstring).
    """

    ok: bool | None
    ops: int
    explored: int
    deepest: int
    linearization: tuple[int, ...] | None
    window: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a whole history.

    Args:
        ok: True if every key is linearizable; False if some key is not; None
            ("unknown") if none failed but the budget ran out before all were decided.
        key: the first key, in sorted order, that is not linearizable (for `ok=None`,
            the first undecided key); None when `ok` is True.
        window: that key's minimal failing window in invocation order, empty unless
            `ok` is False. See the module docstring for its exact meaning.
        explored: configurations visited by the main search over all keys.
        per_key: the verdict of every key.
    """

    ok: bool | None
    key: str | None
    window: tuple[Op, ...]
    explored: int
    per_key: dict[str, KeyResult]

    def describe(self) -> str:
        """A few human-readable lines: the verdict and, on failure, the window."""
        verdict = {True: "linearizable", False: "NOT linearizable", None: "unknown"}[self.ok]
        lines = [f"{verdict}: {len(self.per_key)} keys, {self.explored} configurations"]
        if self.key is not None:
            detail = self.per_key[self.key]
            lines.append(
                f"key {self.key!r}: {detail.ops} ops, longest linearizable prefix "
                f"{detail.deepest}, window of {len(self.window)}:"
            )
            lines.extend(f"  {_format_op(op)}" for op in self.window)
        return "\n".join(lines)


def check(
    history: Sequence[Op],
    *,
    max_steps: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Decide whether `history` is linearizable, key by key.

    Args:
        history: the ops, in any order; ids must be unique.
        max_steps: budget of search steps shared by all keys (None: no limit), probes
            for a failing window included. Once a key is known to fail, shrinking its
            window gets a fresh budget of the same size; if that runs out, the window
            is a larger run that is still known to fail.
        timeout: the same budget in seconds of `clock` (None: no limit).
        clock: a monotonic clock in seconds.

    Returns:
        The verdict; `ok=None` when a budget ran out before a key was decided.

    Raises:
        ValueError: two ops share an id.
    """
    if len({op.id for op in history}) != len(history):
        raise ValueError("op ids must be unique")
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if _is_relevant(op):
            by_key[op.key].append(op)
    budget = _Budget(max_steps, timeout, clock)
    per_key: dict[str, KeyResult] = {}
    for key in sorted(by_key):
        ops = sorted(by_key[key], key=lambda op: (op.invoke, op.id))
        per_key[key] = _check_key(ops, budget, lambda: _Budget(max_steps, timeout, clock))
    failed = [key for key, result in per_key.items() if result.ok is False]
    unknown = [key for key, result in per_key.items() if result.ok is None]
    explored = sum(result.explored for result in per_key.values())
    if failed:
        key = failed[0]
        return CheckResult(
            ok=False, key=key, window=per_key[key].window, explored=explored, per_key=per_key
        )
    if unknown:
        return CheckResult(ok=None, key=unknown[0], window=(), explored=explored, per_key=per_key)
    return CheckResult(ok=True, key=None, window=(), explored=explored, per_key=per_key)


def _check_key(ops: list[Op], budget: _Budget, window_budget: Callable[[], _Budget]) -> KeyResult:
    """Check one key's relevant ops (sorted by invocation) and find a window on failure."""
    steps, init, seeds = _window_problem(ops, 0, len(ops) - 1)
    search = _Search(steps, init, seeds, budget)
    probe_size, deepest = _PROBE_EVERY, -1
    while (found := search.run(_PROBE_EVERY)) is None:
        if search.deepest > deepest:  # still moving forward: no sign of trouble
            deepest = search.deepest
            continue
        # Stuck: most often a failing search exhausting every order of the ops before
        # the point of failure. A small failing window near that point proves the
        # failure much sooner (a failing window implies a failing history).
        bounds = _gallop(ops, search.frontier, budget, probe_size, probe_size // 16)
        if bounds is not None:
            return _failure(ops, search.explored, search.deepest, bounds, window_budget())
        probe_size *= 2
    if found.ok is False:
        fallback = window_budget()
        bounds = _gallop(ops, found.frontier, fallback) or (0, len(ops) - 1)
        return _failure(ops, found.explored, found.deepest, bounds, fallback)
    order = None
    if found.order is not None:
        order = tuple(ops[steps[k].index].id for k in found.order)
    return KeyResult(
        ok=found.ok,
        ops=len(ops),
        explored=found.explored,
        deepest=found.deepest,
        linearization=order,
        window=(),
    )


def _failure(
    ops: list[Op], explored: int, deepest: int, bounds: tuple[int, int], budget: _Budget
) -> KeyResult:
    """The result of a key known to fail in run `bounds`, shrunk to a minimal window."""
    start, end = _shrink(ops, *bounds, budget)
    return KeyResult(
        ok=False,
        ops=len(ops),
        explored=explored,
        deepest=deepest,
        linearization=None,
        window=tuple(ops[start : end + 1]),
    )


# --- preparing a search ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    """One op as the search sees it.

    `value` is what a put or cas writes, or what a get or failed cas observed (possibly
    `_UNKNOWN`); `found` is the recorded presence check, None when there is none.
    """

    index: int  # position in the key's op list
    is_read: bool  # a get or a failed cas: never changes the state
    is_blind: bool  # a put or delete: the state after it does not depend on the state before
    code: int
    value: _State
    expected: bytes | None
    found: bool | None
    optional: bool
    invoke: float
    complete: float  # for an optional step, the latest time it may take effect


def _is_relevant(op: Op) -> bool:
    """Whether `op` can constrain the order: see "what each operation contributes"."""
    if op.outcome is Outcome.FAIL:
        return op.is_observing_cas_failure
    return not (op.kind is OpKind.GET and op.outcome is Outcome.INFO)


def _is_write(op: Op) -> bool:
    """Whether `op` may have changed the register (an ok or indeterminate write)."""
    return op.kind is not OpKind.GET and op.outcome is not Outcome.FAIL


def _complete(op: Op) -> float:
    return _INF if op.complete is None else op.complete


def _written(op: Op) -> bytes | None:
    """The register value after write `op` took effect."""
    return None if op.kind is OpKind.DELETE else op.value


def _optional_step(op: Op, index: int) -> _Step:
    """`op` as a write that may take effect at any point of its interval, or never.

    The interval of an indeterminate op has no end.
    """
    code = {OpKind.PUT: _PUT, OpKind.DELETE: _DELETE, OpKind.CAS: _CAS}[op.kind]
    return _Step(
        index=index,
        is_read=code in (_GET, _CAS_FAILED),
        is_blind=code in (_PUT, _DELETE),
        code=code,
        value=_written(op),
        expected=op.expected,
        found=None,
        optional=True,
        invoke=op.invoke,
        complete=_complete(op),
    )


def _mandatory_step(op: Op, index: int) -> _Step:
    """`op` as it must be placed: `info` writes optional, everything else mandatory."""
    if op.outcome is Outcome.INFO:
        return _optional_step(op, index)
    assert op.complete is not None  # guaranteed by Op for ok and fail outcomes
    if op.kind is OpKind.GET:
        code, value = _GET, op.result
    elif op.outcome is Outcome.FAIL:
        code = _CAS_FAILED
        value = op.result if op.result_found is not None or op.result is not None else _UNKNOWN
    else:
        code = {OpKind.PUT: _PUT, OpKind.DELETE: _DELETE, OpKind.CAS: _CAS}[op.kind]
        value = _written(op)
    found = op.result_found if code in (_PUT, _DELETE, _CAS) else None
    return _Step(
        index=index,
        is_read=code in (_GET, _CAS_FAILED),
        is_blind=code in (_PUT, _DELETE),
        code=code,
        value=value,
        expected=op.expected,
        found=found,
        optional=False,
        invoke=op.invoke,
        complete=op.complete,
    )


def _window_problem(
    ops: list[Op], start: int, end: int
) -> tuple[list[_Step], _State, frozenset[_State]]:
    """The relaxed check of run `start..end` (module docstring): steps, initial state, seeds.

    For the whole list the problem is exact: no extras, and the register starts absent.
    """
    members = ops[start : end + 1]
    span_start = members[0].invoke if members else _INF
    first_complete = min((_complete(op) for op in members), default=_INF)
    last_complete = max((_complete(op) for op in members), default=-_INF)
    steps = [_mandatory_step(op, start + k) for k, op in enumerate(members)]
    seeds: set[bytes | None] = {None}
    for index, op in enumerate(ops):
        if start <= index <= end or not _is_write(op):
            continue
        # Placed before the window's first op, whose point is <= every member's complete.
        if op.invoke <= first_complete:
            seeds.add(_written(op))
        # Placed between two members: its interval meets [span_start, last_complete].
        if op.invoke <= last_complete and _complete(op) >= span_start:
            steps.append(_optional_step(op, index))
    return _simplify(steps, seeds)


def _simplify(
    steps: list[_Step], seeds: set[bytes | None]
) -> tuple[list[_Step], _State, frozenset[_State]]:
    """Shrink a problem without changing its answer; returns steps, initial state, seeds.

    - **Opaque values.** A written value that no step compares against (no get or failed
      cas returned it, no cas expects it) can only be told apart from other such values
      by nobody: every transition treats them alike (present, and unequal to anything
      compared). They all become one `_OPAQUE` value, so orders of concurrent writes that
      differ only in such values reach the same state and are explored once.
    - **Unnoticeable optional writes.** An optional write no step could ever tell from
      the state before it (its value is not compared against, and no presence check or
      failed cas without a recorded value could notice it) never enables anything (see
      `_Search`, phase 3) and is left out; this drops most lost indeterminate puts.
    """
    compared: set[_State] = set()
    notices_any = notices_present = notices_absent = False
    for step in steps:
        if step.code in (_GET, _CAS_FAILED):
            compared.add(step.value)
            notices_any = notices_any or step.value is _UNKNOWN
        if step.code in (_CAS, _CAS_FAILED):
            compared.add(step.expected)
        notices_present = notices_present or step.found is True
        notices_absent = notices_absent or step.found is False

    def canonical(value: _State) -> _State:
        return value if value is None or value in compared else _OPAQUE

    def is_noticeable(step: _Step) -> bool:
        if notices_any or step.value in compared:
            return True
        return notices_absent if step.value is None else notices_present

    kept = [
        dataclasses.replace(step, value=canonical(step.value))
        if step.code in (_PUT, _CAS)
        else step
        for step in steps
        if not step.optional or is_noticeable(step)
    ]
    init: _State = None if seeds == {None} else _ANY
    return kept, init, frozenset(canonical(seed) for seed in seeds)


# --- the sequential model --------------------------------------------------------------


def _transition(step: _Step, state: _State, seeds: frozenset[_State]) -> _State:
    """The register state after `step`, or `_REJECT` if `step` cannot happen in `state`."""
    if state is _ANY:
        return _transition_from_any(step, seeds)
    code = step.code
    if code == _GET:
        return state if state == step.value else _REJECT
    if code == _CAS_FAILED:
        if state == step.expected:
            return _REJECT  # the comparison would have succeeded
        return state if step.value is _UNKNOWN or step.value == state else _REJECT
    if step.found is not None and step.found != (state is not None):
        return _REJECT
    if code == _CAS and state != step.expected:
        return _REJECT  # an ok or optional cas only writes when the comparison holds
    return step.value


def _transition_from_any(step: _Step, seeds: frozenset[_State]) -> _State:
    """`_transition` when the state is any one of `seeds`: the first observation pins it.

    A failed cas whose current value was not recorded leaves the state `_ANY`, which
    still admits `expected`: a relaxation, allowed because `_ANY` only starts windows.
    """
    code = step.code
    if code == _GET:
        return step.value if step.value in seeds else _REJECT
    if code == _CAS_FAILED:
        if step.value is _UNKNOWN:
            return _ANY if any(seed != step.expected for seed in seeds) else _REJECT
        ok = step.value in seeds and step.value != step.expected
        return step.value if ok else _REJECT
    if code == _CAS:
        present = step.expected is not None
        ok = step.expected in seeds and step.found in (None, present)
        return step.value if ok else _REJECT
    if step.found is not None and not any((seed is not None) == step.found for seed in seeds):
        return _REJECT
    return step.value


# --- the search ------------------------------------------------------------------------


class _Budget:
    """Search steps and seconds left, shared by the searches that draw on it."""

    def __init__(
        self, max_steps: int | None, timeout: float | None, clock: Callable[[], float]
    ) -> None:
        self.steps_left = math.inf if max_steps is None else max_steps
        self._clock = clock
        self._deadline = math.inf if timeout is None else clock() + timeout

    def is_expired(self) -> bool:
        """Whether the deadline has passed (steps are counted by the caller)."""
        return self.steps_left <= 0 or self._clock() >= self._deadline


@dataclass(frozen=True, slots=True)
class _Found:
    """What one search found.

    `order`: the placed step positions, in order, when `ok`. `frontier`: the latest
    completion time of an op whose return was a dead end (-inf if none was).
    """

    ok: bool | None
    explored: int
    deepest: int
    order: list[int] | None
    frontier: float


# Scan phases at one configuration, in the order they are tried.
_FORCED = 0  # look for a read the model accepts as it stands
_MANDATORY = 1  # then try each mandatory op
_OPTIONAL = 2  # then each optional op that enables something; after that: dead end

_EXHAUSTED = _Marker("EXHAUSTED")
"""Scan result: no mandatory op left to try here; go on with the optional ones."""


class _Search:
    """One Wing & Gong search with memoization over the steps of one problem.

    Mandatory steps sit in one linked list of calls and returns: node 0 is its head and
    node 1 its end; step k has its call at 2k+2 and its return at 2k+3, so even nodes
    past the head are calls. Optional steps have no return: their calls sit in a second
    list (head 2m+2, end 2m+3 for m steps), ordered by invocation. The candidates of a
    configuration are the calls before the first return of the first list, and the
    optional calls invoked no later than that return whose interval has not ended
    before the latest invocation among the placed steps. (Indeterminate ops never end;
    the optional writes around a window end when their reply came.)

    Each configuration scans its candidates in three phases:

    1. *Forced.* A read (get or failed cas) the model accepts without changing the state
       is placed and nothing else is tried here: any completion of this configuration
       can be reordered to start with that read (no candidate must precede it in real
       time, and taking a read out of its place changes no state), so if placing it
       fails, the configuration fails. This partial-order reduction stops the search
       from permuting concurrent reads. It does not hold for writes, even of the
       current value (moving one changes the state where it was), nor for a read
       invoked after the end of an optional step that can still be placed (that step
       may have to come first).
    2. *Mandatory.* Each other mandatory op, in time order.
    3. *Optional.* Each optional write, last, and only if it *enables* some candidate:
       one the model accepts after the write and not, or not with the same result,
       before it. If the next step after an optional write w is one that w did not
       enable, placing that step without w reaches the same mandatory set and state
       with fewer optional steps, a configuration that subsumes it. So right after an
       optional step only the steps it enabled are tried, and none at all if a forced
       read was not enabled by it (in particular, no blind write follows it). Optional
       steps with the same effect and the same end are interchangeable (none ever has
       to be placed, so swapping two changes nothing): the earlier-invoked one of such
       twins is always placed first, which keeps the placed ones a prefix of each class.
    """

    def __init__(
        self,
        steps: list[_Step],
        init: _State,
        seeds: frozenset[_State],
        budget: _Budget,
    ) -> None:
        self._steps = steps
        self._seeds = seeds
        self._budget = budget
        size = 2 * len(steps) + 4
        self._next = [0] * size
        self._prev = [0] * size
        self._optional_head = size - 2
        optional_order = self._link_lists()
        self._twin = _twins(steps, optional_order)
        # The current configuration: placed steps (bitmasks by position) and model state.
        self._state = init
        self._mandatory = 0
        self._optional = 0
        # Placed steps, oldest first: (position, state before, phase it was found in).
        self._stack: list[tuple[int, _State, int]] = []
        # The latest invocation among placed steps: an optional step that ended before
        # it can no longer be placed (it would follow an op that it preceded).
        self._latest_invoke = -_INF
        self._latest_invokes: list[float] = []  # the values before each placed step
        # Optional steps with an end, by end, to find the earliest open one quickly.
        self._ending = sorted(
            (k for k, step in enumerate(steps) if step.optional and step.complete < _INF),
            key=lambda k: steps[k].complete,
        )
        self._ending_times = [steps[k].complete for k in self._ending]
        self._seen: dict[tuple[int, _State], list[int]] = {}
        self._total = self._remaining = sum(not step.optional for step in steps)
        # Where the next scan starts: (node, phase); None once the root has failed.
        self._resume: tuple[int, int] | None = (self._next[0], _FORCED)
        self.explored = 0  # configurations entered
        self.deepest = 0  # the most mandatory steps placed at once
        self.frontier = -_INF  # the latest completion of a return that was a dead end

    def _link_lists(self) -> list[int]:
        """Build both linked lists; returns the optional step positions in list order."""
        events: list[tuple[float, int, int]] = []
        optional_calls: list[tuple[float, int]] = []
        for k, step in enumerate(self._steps):
            if step.optional:
                optional_calls.append((step.invoke, 2 * k + 2))
            else:
                events.append((step.invoke, 0, 2 * k + 2))  # 0 sorts calls before returns
                events.append((step.complete, 1, 2 * k + 3))
        events.sort()
        optional_calls.sort()
        self._chain([0, *(node for _, _, node in events), 1])
        optional_nodes = [node for _, node in optional_calls]
        self._chain([self._optional_head, *optional_nodes, self._optional_head + 1])
        return [(node - 2) >> 1 for node in optional_nodes]

    def _chain(self, nodes: list[int]) -> None:
        for before, after in itertools.pairwise(nodes):
            self._next[before] = after
            self._prev[after] = before

    def run(self, pause_after: float = math.inf) -> _Found | None:
        """Search until a linearization, a proof there is none, or the budget's end.

        Returns None when paused after `pause_after` steps; calling again resumes.
        """
        budget = self._budget
        iterations = 0
        verdict: bool | None = None if budget.is_expired() else True
        while verdict and self._remaining:
            if iterations >= pause_after:
                budget.steps_left -= iterations
                return None
            iterations += 1
            if iterations >= budget.steps_left or (
                iterations % _CLOCK_EVERY == 0 and budget.is_expired()
            ):
                verdict = None
            elif not self._advance():
                verdict = False
        budget.steps_left -= iterations
        order = [k for k, _, _ in self._stack] if verdict else None
        return _Found(
            ok=verdict,
            explored=self.explored,
            deepest=self.deepest,
            order=order,
            frontier=self.frontier,
        )

    def _advance(self) -> bool:
        """Place the next candidate, or take steps back; False when the root has failed."""
        choice = self._scan(*self._resume) if self._resume is not None else None
        if choice is not None:
            self._remaining -= self._place(*choice)
            self.explored += 1
            self.deepest = max(self.deepest, self._total - self._remaining)
            self._resume = (self._next[0], _FORCED)
            return True
        if not self._stack:
            return False
        self._resume, restored = self._undo()
        self._remaining += restored
        return True

    def _scan(self, node: int, phase: int) -> tuple[int, _State, int] | None:
        """The next step to place, scanning from `node` in `phase`: (position, state
        after, phase). None means a dead end: every candidate was tried, or a forced
        read is already covered by an explored configuration.
        """
        if phase != _OPTIONAL:
            found = self._scan_mandatory(node, phase)
            if not isinstance(found, _Marker):
                return found
            node = self._next[self._optional_head]
        return self._scan_optional(node)

    def _scan_mandatory(self, node: int, phase: int) -> tuple[int, _State, int] | _Marker | None:
        steps, nxt, state, seeds = self._steps, self._next, self._state, self._seeds
        prior = self._prior_state()
        deadline = self._open_deadline()
        while True:
            if node % 2:  # the first return (never the end while a mandatory op is left)
                if phase == _MANDATORY:
                    return _EXHAUSTED
                phase, node = _MANDATORY, nxt[0]
                continue
            k = (node - 2) >> 1
            step = steps[k]
            after = _transition(step, state, seeds)
            is_forced = step.is_read and after == state and step.invoke <= deadline
            if after is not _REJECT and is_forced == (phase == _FORCED):
                is_enabled = prior is _REJECT or _transition(step, prior, seeds) != after
                if is_enabled and not self._is_subsumed(k, after):
                    return k, after, phase
                if phase == _FORCED:
                    return None
            node = nxt[node]

    def _scan_optional(self, node: int) -> tuple[int, _State, int] | None:
        steps, nxt, state, seeds = self._steps, self._next, self._state, self._seeds
        limit = self._first_return_time()
        prior = self._prior_state()
        while node < self._optional_head and steps[(node - 2) >> 1].invoke <= limit:
            k = (node - 2) >> 1
            step = steps[k]
            twin = self._twin[k]
            is_open = step.complete >= self._latest_invoke
            if is_open and (twin < 0 or self._optional >> twin & 1):
                after = _transition(step, state, seeds)
                if (
                    after is not _REJECT
                    and (prior is _REJECT or _transition(step, prior, seeds) != after)
                    and self._enables(k, after, limit)
                    and not self._is_subsumed(k, after)
                ):
                    return k, after, _OPTIONAL
            node = nxt[node]
        self.frontier = max(self.frontier, limit)
        return None

    def _open_deadline(self) -> float:
        """The earliest end among optional steps that can still be placed (inf if none).

        A read invoked after it is not forced: placing the read first would close that
        optional step, which the reordering argument of phase 1 does not allow for.
        """
        first = bisect.bisect_left(self._ending_times, self._latest_invoke)
        for k in self._ending[first:]:
            if not self._optional >> k & 1:
                return self._steps[k].complete
        return _INF

    def _prior_state(self) -> _State:
        """The state before the last step if that step was optional, else `_REJECT`."""
        if self._stack and self._steps[self._stack[-1][0]].optional:
            return self._stack[-1][1]
        return _REJECT

    def _first_return_time(self) -> float:
        node = self._next[0]
        while node % 2 == 0:
            node = self._next[node]
        return self._steps[(node - 3) >> 1].complete

    def _enables(self, k: int, after: _State, limit: float) -> bool:
        """Whether some other candidate behaves differently once optional step `k` has
        moved the state from the current one to `after`."""
        steps, nxt, state, seeds = self._steps, self._next, self._state, self._seeds
        node = nxt[0]
        while node % 2 == 0:
            step = steps[(node - 2) >> 1]
            then = _transition(step, after, seeds)
            if then is not _REJECT and then != _transition(step, state, seeds):
                return True
            node = nxt[node]
        node = nxt[self._optional_head]
        while node < self._optional_head and steps[(node - 2) >> 1].invoke <= limit:
            step = steps[(node - 2) >> 1]
            if not step.is_blind and (node - 2) >> 1 != k:
                then = _transition(step, after, seeds)
                if then is not _REJECT and then != _transition(step, state, seeds):
                    return True
            node = nxt[node]
        return False

    def _is_subsumed(self, k: int, after: _State) -> bool:
        """Whether placing step `k` reaches a configuration covered by an explored one.

        Covered: same mandatory set and state, and a subset of its optional steps placed.
        A configuration that is not covered is recorded as explored.
        """
        bit = 1 << k
        mandatory, optional = self._mandatory, self._optional
        if self._steps[k].optional:
            optional |= bit
        else:
            mandatory |= bit
        masks = self._seen.get((mandatory, after))
        if masks is None:
            self._seen[(mandatory, after)] = [optional]
            return False
        if any(mask & optional == mask for mask in masks):
            return True
        masks.append(optional)
        return False

    def _place(self, k: int, after: _State, phase: int) -> int:
        """Place step `k` (lift it out of its list); returns 1 if it was mandatory."""
        self._stack.append((k, self._state, phase))
        self._latest_invokes.append(self._latest_invoke)
        self._latest_invoke = max(self._latest_invoke, self._steps[k].invoke)
        self._state = after
        call = 2 * k + 2
        self._unlink(call)
        if self._steps[k].optional:
            self._optional |= 1 << k
            return 0
        self._unlink(call + 1)
        self._mandatory |= 1 << k
        return 1

    def _undo(self) -> tuple[tuple[int, int] | None, int]:
        """Take back placed steps; returns where to resume scanning and how many mandatory
        steps went back.

        A forced step's failure is its configuration's failure, so undoing one goes on
        to undo the step before it. Resuming from None means the root has failed too.
        """
        restored = 0
        while self._stack:
            k, self._state, phase = self._stack.pop()
            self._latest_invoke = self._latest_invokes.pop()
            call = 2 * k + 2
            if self._steps[k].optional:
                self._optional ^= 1 << k
            else:
                self._relink(call + 1)
                self._mandatory ^= 1 << k
                restored += 1
            self._relink(call)
            if phase != _FORCED:
                return (self._next[call], phase), restored
        return None, restored

    def _unlink(self, node: int) -> None:
        before, after = self._prev[node], self._next[node]
        self._next[before] = after
        self._prev[after] = before

    def _relink(self, node: int) -> None:
        # The node kept its own links; undoing in reverse order of unlinking restores the list.
        self._next[self._prev[node]] = node
        self._prev[self._next[node]] = node


def _twins(steps: list[_Step], optional_order: list[int]) -> list[int]:
    """For each step, the optional step invoked just before it with the same effect and
    end (its twin, placed first; see `_Search`), or -1."""
    twin = [-1] * len(steps)
    last_of_effect: dict[tuple[int, _State, bytes | None, float], int] = {}
    for k in optional_order:
        effect = (steps[k].code, steps[k].value, steps[k].expected, steps[k].complete)
        twin[k] = last_of_effect.get(effect, -1)
        last_of_effect[effect] = k
    return twin


# --- the window ------------------------------------------------------------------------


def _fails(ops: list[Op], start: int, end: int, budget: _Budget, pause_after: float) -> bool:
    """Whether run `start..end` of `ops` fails the relaxed check; undecided counts as no."""
    steps, init, seeds = _window_problem(ops, start, end)
    found = _Search(steps, init, seeds, budget).run(pause_after)
    return found is not None and found.ok is False


def _gallop(
    ops: list[Op],
    frontier: float,
    budget: _Budget,
    pause_after: float = math.inf,
    max_width: float = math.inf,
) -> tuple[int, int] | None:
    """A failing run ending at the last op invoked by `frontier`, or None if none is found.

    `frontier` is where a search of the whole key got stuck. Widths 1, 2, 4, ... are
    tried up to `max_width` (or the start of the list), each search for at most
    `pause_after` steps.
    """
    invokes = [op.invoke for op in ops]
    end = min(max(bisect.bisect_right(invokes, frontier) - 1, 0), len(ops) - 1)
    width = 1
    while True:
        start = max(end - width + 1, 0)
        if _fails(ops, start, end, budget, pause_after):
            return start, end
        if start == 0 or width >= max_width:
            return None
        width *= 2


def _shrink(ops: list[Op], start: int, end: int, budget: _Budget) -> tuple[int, int]:
    """Shrink failing run `start..end` to an inclusion-minimal failing one.

    Binary search for the smallest failing end, then for the largest failing start.
    Runs nest and a run fails whenever one inside it does, so both searches are sound;
    an undecided run (budget gone) counts as passing, so the result always fails.
    """
    low, high = start, end  # Invariant: start..high fails.
    while low < high:
        middle = (low + high) // 2
        if _fails(ops, start, middle, budget, math.inf):
            high = middle
        else:
            low = middle + 1
    end = high
    low, high = start, end  # Invariant: low..end fails.
    while low < high:
        middle = (low + high + 1) // 2
        if _fails(ops, middle, end, budget, math.inf):
            low = middle
        else:
            high = middle - 1
    return low, end


def _format_op(op: Op) -> str:
    """One op on one line, for `CheckResult.describe`."""
    complete = "inf" if op.complete is None else f"{op.complete:g}"
    parts = [f"#{op.id} p{op.process} {op.kind}"]
    if op.kind is OpKind.CAS:
        parts.append(f"{op.expected!r}->{op.value!r}")
    elif op.value is not None:
        parts.append(repr(op.value))
    parts.append(f"[{op.invoke:g}, {complete}] {op.outcome}")
    if op.result is not None or op.kind is OpKind.GET:
        parts.append(f"result={op.result!r}")
    if op.result_found is not None:
        parts.append(f"found={op.result_found}")
    if op.error is not None:
        parts.append(f"error={op.error}")
    return " ".join(parts)
