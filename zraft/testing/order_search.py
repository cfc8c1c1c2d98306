"""The search for a linearization of one key's ops (Wing & Gong, with Lowe's memoization).

It owns `Search` (one search over the steps of one problem, resumable, drawing on a
shared `Budget` of steps and seconds) and what a search reports (`Found`). It must not
decide which ops take part or build the steps (`zraft.testing.register_model`,
`zraft.testing.failing_window` do), nor look for a failing window itself
(`zraft.testing.linearizability` probes with `gallop` when a search stops making
progress). It is the checker's internals, not an API.

Theory of operation
-------------------

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

**Reductions** that keep the search near one pass on valid histories (`Search` and
`zraft.testing.register_model.simplify` give the arguments): a read that fits the current
state is placed at once and nothing else is tried there (concurrent reads are never
permuted); optional writes are tried last, only when they enable a candidate, and
interchangeable ones in a fixed order; written values that nothing compares against
collapse into one (orders of concurrent writes nobody reads merge); optional writes
nobody could notice are dropped.

**Complexity.** Checking linearizability is NP-complete in general (Gibbons & Korach),
and the search is exponential in the worst case. With memoization it visits at most one
configuration per (downward-closed set of placed ops, state): for c concurrent clients
per key, O(n * 2^c * states) configurations, each costing O(c) list steps and O(n / 64)
bitmask work. A valid history with a few clients takes little more than one pass. A
non-linearizable one makes the search exhaust every order of the ops before the point of
failure; so when the search stops making progress, the checker probes for a small
failing window near the point where it is stuck (`frontier`), which usually settles the
matter at once. A budget (steps and seconds) turns a search that would take too long
into the answer "unknown" (`ok=None`).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from zraft.testing.register_model import REJECT, Marker, State, Step, transition

_INF = math.inf

# Clock reads cost more than a search step: look at the deadline every this many steps.
_CLOCK_EVERY = 4096


class Budget:
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
class Found:
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

_EXHAUSTED = Marker("EXHAUSTED")
"""Scan result: no mandatory op left to try here; go on with the optional ones."""


class Search:
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
        steps: list[Step],
        init: State,
        seeds: frozenset[State],
        budget: Budget,
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
        self._stack: list[tuple[int, State, int]] = []
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
        self._seen: dict[tuple[int, State], list[int]] = {}
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

    def run(self, pause_after: float = math.inf) -> Found | None:
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
        return Found(
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

    def _scan(self, node: int, phase: int) -> tuple[int, State, int] | None:
        """The next step to place, scanning from `node` in `phase`: (position, state
        after, phase). None means a dead end: every candidate was tried, or a forced
        read is already covered by an explored configuration.
        """
        if phase != _OPTIONAL:
            found = self._scan_mandatory(node, phase)
            if not isinstance(found, Marker):
                return found
            node = self._next[self._optional_head]
        return self._scan_optional(node)

    def _scan_mandatory(self, node: int, phase: int) -> tuple[int, State, int] | Marker | None:
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
            after = transition(step, state, seeds)
            is_forced = step.is_read and after == state and step.invoke <= deadline
            if after is not REJECT and is_forced == (phase == _FORCED):
                is_enabled = prior is REJECT or transition(step, prior, seeds) != after
                if is_enabled and not self._is_subsumed(k, after):
                    return k, after, phase
                if phase == _FORCED:
                    return None
            node = nxt[node]

    def _scan_optional(self, node: int) -> tuple[int, State, int] | None:
        steps, nxt, state, seeds = self._steps, self._next, self._state, self._seeds
        limit = self._first_return_time()
        prior = self._prior_state()
        while node < self._optional_head and steps[(node - 2) >> 1].invoke <= limit:
            k = (node - 2) >> 1
            step = steps[k]
            twin = self._twin[k]
            is_open = step.complete >= self._latest_invoke
            if is_open and (twin < 0 or self._optional >> twin & 1):
                after = transition(step, state, seeds)
                if (
                    after is not REJECT
                    and (prior is REJECT or transition(step, prior, seeds) != after)
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

    def _prior_state(self) -> State:
        """The state before the last step if that step was optional, else `REJECT`."""
        if self._stack and self._steps[self._stack[-1][0]].optional:
            return self._stack[-1][1]
        return REJECT

    def _first_return_time(self) -> float:
        node = self._next[0]
        while node % 2 == 0:
            node = self._next[node]
        return self._steps[(node - 3) >> 1].complete

    def _enables(self, k: int, after: State, limit: float) -> bool:
        """Whether some other candidate behaves differently once optional step `k` has
        moved the state from the current one to `after`."""
        steps, nxt, state, seeds = self._steps, self._next, self._state, self._seeds
        node = nxt[0]
        while node % 2 == 0:
            step = steps[(node - 2) >> 1]
            then = transition(step, after, seeds)
            if then is not REJECT and then != transition(step, state, seeds):
                return True
            node = nxt[node]
        node = nxt[self._optional_head]
        while node < self._optional_head and steps[(node - 2) >> 1].invoke <= limit:
            step = steps[(node - 2) >> 1]
            if not step.is_blind and (node - 2) >> 1 != k:
                then = transition(step, after, seeds)
                if then is not REJECT and then != transition(step, state, seeds):
                    return True
            node = nxt[node]
        return False

    def _is_subsumed(self, k: int, after: State) -> bool:
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

    def _place(self, k: int, after: State, phase: int) -> int:
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


def _twins(steps: list[Step], optional_order: list[int]) -> list[int]:
    """For each step, the optional step invoked just before it with the same effect and
    end (its twin, placed first; see `Search`), or -1."""
    twin = [-1] * len(steps)
    last_of_effect: dict[tuple[int, State, bytes | None, float], int] = {}
    for k in optional_order:
        effect = (steps[k].code, steps[k].value, steps[k].expected, steps[k].complete)
        twin[k] = last_of_effect.get(effect, -1)
        last_of_effect[effect] = k
    return twin
