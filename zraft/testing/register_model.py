"""The sequential model the linearizability checker replays: one register per key.

It owns what an operation means to the checker: which ops can constrain the order at all
(`is_relevant`), each op turned into a `Step` the search places (`mandatory_step`,
`optional_step`), the register's transitions (`transition`: the state after a step, or
`REJECT`), and `simplify`, which shrinks a problem without changing its answer. It must
not search or order anything (`zraft.testing.order_search` does) and keeps no state: every
function is pure. It is the checker's internals, not an API: callers use
`zraft.testing.linearizability.check`.

What each operation contributes
-------------------------------

- `ok` ops are mandatory: they must appear in the order, and what they returned must
  match the model there (`get` the value; `put`/`delete`/`cas` the optional
  `result_found`; `cas` needs the expected value).
- `info` writes are optional: they may take effect at any point after their invocation,
  or never. `info` gets observed nothing and are dropped.
- `fail` ops never took effect and are dropped, except a cas that lost the comparison:
  it is a mandatory read that saw a value different from `expected`, and equal to the
  value returned in the reply when one was recorded.

The register's state is a value, absent (None), or, at the start of a failing-window
check, "any one of the seeds" (`_ANY`; see `zraft.testing.failing_window`). Written values
that nothing compares against collapse into one (`simplify`), so orders of concurrent
writes nobody reads merge into one state.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from zraft.testing.history import Op, OpKind, Outcome

_INF = math.inf

# Transition codes of the sequential register model.
_PUT, _DELETE, _CAS, _GET, _CAS_FAILED = range(5)


class Marker:
    """A sentinel that can never equal a register value."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


_ANY = Marker("ANY")
"""Model state "some seed value, not yet pinned down" (the start of a window)."""

REJECT = Marker("REJECT")
"""Transition result: the model cannot apply the op in this state."""

_UNKNOWN = Marker("UNKNOWN")
"""Observed value of a failed cas whose reply did not record the current value."""

_OPAQUE = Marker("OPAQUE")
"""Stands for every written value that no operation compares against (see `simplify`)."""

State = bytes | None | Marker


@dataclass(frozen=True, slots=True)
class Step:
    """One op as the search sees it.

    `value` is what a put or cas writes, or what a get or failed cas observed (possibly
    `_UNKNOWN`); `found` is the recorded presence check, None when there is none.
    """

    index: int  # position in the key's op list
    is_read: bool  # a get or a failed cas: never changes the state
    is_blind: bool  # a put or delete: the state after it does not depend on the state before
    code: int
    value: State
    expected: bytes | None
    found: bool | None
    optional: bool
    invoke: float
    complete: float  # for an optional step, the latest time it may take effect


def is_relevant(op: Op) -> bool:
    """Whether `op` can constrain the order: see "what each operation contributes"."""
    if op.outcome is Outcome.FAIL:
        return op.is_observing_cas_failure
    return not (op.kind is OpKind.GET and op.outcome is Outcome.INFO)


def is_write(op: Op) -> bool:
    """Whether `op` may have changed the register (an ok or indeterminate write)."""
    return op.kind is not OpKind.GET and op.outcome is not Outcome.FAIL


def completion(op: Op) -> float:
    """When `op` completed; +inf for an indeterminate op (it may take effect at any later time)."""
    return _INF if op.complete is None else op.complete


def written(op: Op) -> bytes | None:
    """The register value after write `op` took effect."""
    return None if op.kind is OpKind.DELETE else op.value


def optional_step(op: Op, index: int) -> Step:
    """`op` as a write that may take effect at any point of its interval, or never.

    The interval of an indeterminate op has no end.
    """
    code = {OpKind.PUT: _PUT, OpKind.DELETE: _DELETE, OpKind.CAS: _CAS}[op.kind]
    return Step(
        index=index,
        is_read=code in (_GET, _CAS_FAILED),
        is_blind=code in (_PUT, _DELETE),
        code=code,
        value=written(op),
        expected=op.expected,
        found=None,
        optional=True,
        invoke=op.invoke,
        complete=completion(op),
    )


def mandatory_step(op: Op, index: int) -> Step:
    """`op` as it must be placed: `info` writes optional, everything else mandatory."""
    if op.outcome is Outcome.INFO:
        return optional_step(op, index)
    assert op.complete is not None  # guaranteed by Op for ok and fail outcomes
    if op.kind is OpKind.GET:
        code, value = _GET, op.result
    elif op.outcome is Outcome.FAIL:
        code = _CAS_FAILED
        value = op.result if op.result_found is not None or op.result is not None else _UNKNOWN
    else:
        code = {OpKind.PUT: _PUT, OpKind.DELETE: _DELETE, OpKind.CAS: _CAS}[op.kind]
        value = written(op)
    found = op.result_found if code in (_PUT, _DELETE, _CAS) else None
    return Step(
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


def simplify(
    steps: list[Step], seeds: set[bytes | None]
) -> tuple[list[Step], State, frozenset[State]]:
    """Shrink a problem without changing its answer; returns steps, initial state, seeds.

    - **Opaque values.** A written value that no step compares against (no get or failed
      cas returned it, no cas expects it) can only be told apart from other such values
      by nobody: every transition treats them alike (present, and unequal to anything
      compared). They all become one `_OPAQUE` value, so orders of concurrent writes that
      differ only in such values reach the same state and are explored once.
    - **Unnoticeable optional writes.** An optional write no step could ever tell from
      the state before it (its value is not compared against, and no presence check or
      failed cas without a recorded value could notice it) never enables anything (see
      `order_search.Search`, phase 3) and is left out; this drops most lost indeterminate puts.
    """
    compared: set[State] = set()
    notices_any = notices_present = notices_absent = False
    for step in steps:
        if step.code in (_GET, _CAS_FAILED):
            compared.add(step.value)
            notices_any = notices_any or step.value is _UNKNOWN
        if step.code in (_CAS, _CAS_FAILED):
            compared.add(step.expected)
        notices_present = notices_present or step.found is True
        notices_absent = notices_absent or step.found is False

    def canonical(value: State) -> State:
        return value if value is None or value in compared else _OPAQUE

    def is_noticeable(step: Step) -> bool:
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
    init: State = None if seeds == {None} else _ANY
    return kept, init, frozenset(canonical(seed) for seed in seeds)


def transition(step: Step, state: State, seeds: frozenset[State]) -> State:
    """The register state after `step`, or `REJECT` if `step` cannot happen in `state`."""
    if state is _ANY:
        return _transition_from_any(step, seeds)
    code = step.code
    if code == _GET:
        return state if state == step.value else REJECT
    if code == _CAS_FAILED:
        if state == step.expected:
            return REJECT  # the comparison would have succeeded
        return state if step.value is _UNKNOWN or step.value == state else REJECT
    if step.found is not None and step.found != (state is not None):
        return REJECT
    if code == _CAS and state != step.expected:
        return REJECT  # an ok or optional cas only writes when the comparison holds
    return step.value


def _transition_from_any(step: Step, seeds: frozenset[State]) -> State:
    """`transition` when the state is any one of `seeds`: the first observation pins it.

    A failed cas whose current value was not recorded leaves the state `_ANY`, which
    still admits `expected`: a relaxation, allowed because `_ANY` only starts windows.
    """
    code = step.code
    if code == _GET:
        return step.value if step.value in seeds else REJECT
    if code == _CAS_FAILED:
        if step.value is _UNKNOWN:
            return _ANY if any(seed != step.expected for seed in seeds) else REJECT
        ok = step.value in seeds and step.value != step.expected
        return step.value if ok else REJECT
    if code == _CAS:
        present = step.expected is not None
        ok = step.expected in seeds and step.found in (None, present)
        return step.value if ok else REJECT
    if step.found is not None and not any((seed is not None) == step.found for seed in seeds):
        return REJECT
    return step.value
