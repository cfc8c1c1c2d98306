"""The failing window: a short run of one key's ops that already cannot be ordered.

It owns the relaxed check of a run of ops (`window_problem`), finding a failing run near
the point where a search got stuck (`gallop`), and shrinking one to an inclusion-minimal
window (`shrink`). It must not decide a whole key on its own
(`zraft.testing.linearizability` calls it once a key is stuck or known to fail). It is
the checker's internals, not an API.

Theory of operation
-------------------

When a key is not linearizable, `CheckResult.window` is a short run of that key's
operations that already cannot be ordered. Precisely: the key's operations, minus the
dropped ones, sorted by invocation time (then id), are numbered 0..m-1; the window is a
run i..j of consecutive ones that fails a *relaxed* check in which

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
import math

from zraft.testing.history import Op
from zraft.testing.order_search import Budget, Search
from zraft.testing.register_model import (
    State,
    Step,
    completion,
    is_write,
    mandatory_step,
    optional_step,
    simplify,
    written,
)

_INF = math.inf


def window_problem(
    ops: list[Op], start: int, end: int
) -> tuple[list[Step], State, frozenset[State]]:
    """The relaxed check of run `start..end` (module docstring): steps, initial state, seeds.

    For the whole list the problem is exact: no extras, and the register starts absent.
    """
    members = ops[start : end + 1]
    span_start = members[0].invoke if members else _INF
    first_complete = min((completion(op) for op in members), default=_INF)
    last_complete = max((completion(op) for op in members), default=-_INF)
    steps = [mandatory_step(op, start + k) for k, op in enumerate(members)]
    seeds: set[bytes | None] = {None}
    for index, op in enumerate(ops):
        if start <= index <= end or not is_write(op):
            continue
        # Placed before the window's first op, whose point is <= every member's complete.
        if op.invoke <= first_complete:
            seeds.add(written(op))
        # Placed between two members: its interval meets [span_start, last_complete].
        if op.invoke <= last_complete and completion(op) >= span_start:
            steps.append(optional_step(op, index))
    return simplify(steps, seeds)


def _fails(ops: list[Op], start: int, end: int, budget: Budget, pause_after: float) -> bool:
    """Whether run `start..end` of `ops` fails the relaxed check; undecided counts as no."""
    steps, init, seeds = window_problem(ops, start, end)
    found = Search(steps, init, seeds, budget).run(pause_after)
    return found is not None and found.ok is False


def gallop(
    ops: list[Op],
    frontier: float,
    budget: Budget,
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


def shrink(ops: list[Op], start: int, end: int, budget: Budget) -> tuple[int, int]:
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
