"""A linearizability checker for histories of a key-value store (one register per key).

`check(history)` answers: is there a total order of the operations that respects real
time (an operation that completed before another was invoked comes first) and in which
every operation returns what it returned when replayed against a plain dictionary?

This module is the checker's API (`check`, `CheckResult`, `KeyResult`) and decides each
key: it runs the search, watches its progress, and turns a failure into a minimal
window. It must not hold the model, the search or the window logic itself; they live in
three modules, each with its own theory of operation:

- `zraft.testing.register_model`: what each operation contributes (mandatory, optional
  or dropped), the register's transitions, and the simplifications of a problem;
- `zraft.testing.order_search`: the Wing & Gong search with Lowe's memoization, its
  reductions, its complexity and its budget;
- `zraft.testing.failing_window`: the relaxed check of a run of ops, and how a failing
  window is found and shrunk.

Only this module's names are the API; import them from here.

Theory of operation
-------------------

**P-compositionality.** Operations on different keys never interact, so a history is
linearizable exactly when each key's sub-history is (Herlihy & Wing, locality). Each key
is checked on its own with a sequential model of one register: a value, or absent. Its
relevant ops (`register_model.is_relevant`), sorted by invocation time, then id, are the
key's problem.

**Deciding a key.** The search of the whole key runs in slices of `_PROBE_EVERY` steps.
While the longest linearizable prefix it reached keeps growing, nothing looks wrong. When
it stops growing, the search is most often a failing one exhausting every order of the
ops before the point of failure, so the checker probes for a small failing window near
the point where it is stuck (`failing_window.gallop`, each probe with a growing step
limit): a failing window proves the key fails, which usually settles the matter at once.
A search that ends on its own with "not linearizable" is galloped from its frontier too.
Either way the window is then shrunk to an inclusion-minimal one with a fresh budget.
A budget (steps and seconds) turns a search that would take too long into the answer
"unknown" (`ok=None`).

**The window.** When a key is not linearizable, `CheckResult.window` is a short run of
that key's operations that already cannot be ordered, under a relaxed check that proves
the whole history fails (see `zraft.testing.failing_window`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zraft.testing.failing_window import gallop, shrink
from zraft.testing.failing_window import window_problem as _window_problem
from zraft.testing.history import Op, OpKind
from zraft.testing.order_search import Budget as _Budget
from zraft.testing.order_search import Search as _Search
from zraft.testing.register_model import is_relevant as _is_relevant

__all__ = ["DEFAULT_TIMEOUT_S", "CheckResult", "KeyResult", "check"]

DEFAULT_TIMEOUT_S = 60.0
"""Default wall-clock budget of the main search, in seconds (the window search gets as much)."""

# The main search looks for a failing window when it made no progress in this many steps;
# the probe's own step limit starts here and doubles after each probe.
_PROBE_EVERY = 10_000


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
        window: when not `ok`, the minimal failing window (`zraft.testing.failing_window`).
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
            `ok` is False; `zraft.testing.failing_window` gives its exact meaning.
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
        bounds = gallop(ops, search.frontier, budget, probe_size, probe_size // 16)
        if bounds is not None:
            return _failure(ops, search.explored, search.deepest, bounds, window_budget())
        probe_size *= 2
    if found.ok is False:
        fallback = window_budget()
        bounds = gallop(ops, found.frontier, fallback) or (0, len(ops) - 1)
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
    start, end = shrink(ops, *bounds, budget)
    return KeyResult(
        ok=False,
        ops=len(ops),
        explored=explored,
        deepest=deepest,
        linearization=None,
        window=tuple(ops[start : end + 1]),
    )


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
