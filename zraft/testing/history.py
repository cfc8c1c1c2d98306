"""Operation histories of concurrent key-value clients: `Op`, `HistoryRecorder`, JSON lines.

A history is what the clients saw, not what the servers did: each `Op` is one request with
the time it was invoked, the time its reply arrived and what the reply said. The checker in
`zraft.testing.linearizability` decides whether some atomic order explains it.

Rules it keeps:

- **Outcomes.** `ok`: the operation took effect, and `result`/`result_found` hold what it
  returned. `fail`: it definitely did not take effect (a `cas_failed` or `bad_request`
  reply); `error` keeps the code. `info`: indeterminate (timeout, lost connection); it may
  have taken effect at any time after `invoke`, so `complete` is None, read "+infinity".
- **What a reply says.** `get` ok: `result` is the value read, None when the key is absent.
  `put`/`delete`/`cas` ok: `result_found` optionally says whether the key was present just
  before. `cas` fail with `cas_failed`: `result` is the current value it saw and
  `result_found` whether the key was present; leave both None if the reply was not kept.
- **Times** are seconds from one monotonic clock shared by every process of the history;
  `complete >= invoke`. Only the order of times matters, not their scale.
- **Ids** are unique within a history; the recorder hands them out in invocation order.
- **Validation.** `Op` rejects impossible field combinations with `ValueError`, so a
  history that loads is well formed. `Op` accepts plain strings for `kind` and `outcome`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class OpKind(StrEnum):
    """The key-value operations a history can hold."""

    PUT = "put"
    GET = "get"
    DELETE = "delete"
    CAS = "cas"


class Outcome(StrEnum):
    """How an operation ended, as far as its client knows."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


CAS_FAILED = "cas_failed"
"""The error code of a cas that compared and lost (the same string as `zraft.state.kv`)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation: what was asked, when, and what came back.

    Args:
        process: the client (logical process) that issued it.
        kind: `put`, `get`, `delete` or `cas`.
        key: the key it touched.
        value: the value written by `put` and `cas`; None for `get` and `delete`.
        expected: `cas` only: the value the key must hold, None meaning "must be absent".
        invoke: when the request was sent.
        complete: when the reply arrived; None exactly when `outcome` is `info`.
        outcome: `ok`, `fail` or `info` (see the module docstring).
        result: `get` ok: the value read (None: absent). `cas` fail: the current value
            returned (None: absent, or not recorded). Otherwise None.
        result_found: whether the key was present, when the reply said so; None otherwise.
        id: unique within the history.
        error: `fail` only: the error code, e.g. `cas_failed` or `bad_request`. A failed
            cas counts as an observation of the value unless `error` is some other code.

    Raises:
        ValueError: a field combination no real reply can produce (see the checks).
    """

    process: int
    kind: OpKind
    key: str
    value: bytes | None
    expected: bytes | None
    invoke: float
    complete: float | None
    outcome: Outcome
    result: bytes | None
    result_found: bool | None
    id: int
    error: str | None = None

    def __post_init__(self) -> None:
        # Coerce plain strings so that hand-written and loaded histories compare equal.
        object.__setattr__(self, "kind", OpKind(self.kind))
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        problem = _problem(self)
        if problem is not None:
            raise ValueError(f"op {self.id}: {problem}")

    @property
    def is_observing_cas_failure(self) -> bool:
        """Whether this is a cas that compared against the value and lost."""
        return (
            self.kind is OpKind.CAS
            and self.outcome is Outcome.FAIL
            and self.error in (None, CAS_FAILED)
        )


def _problem(op: Op) -> str | None:
    """Why `op` is malformed, or None."""
    writes_value = op.kind in (OpKind.PUT, OpKind.CAS)
    if writes_value != isinstance(op.value, bytes):
        return f"{op.kind} must {'' if writes_value else 'not '}carry a value"
    if op.kind is not OpKind.CAS and op.expected is not None:
        return "only cas has an expected value"
    if (op.complete is None) != (op.outcome is Outcome.INFO):
        return "complete must be None exactly when the outcome is info"
    if op.complete is not None and op.complete < op.invoke:
        return "complete is before invoke"
    if op.error is not None and op.outcome is not Outcome.FAIL:
        return "only a failed op carries an error code"
    returns_value = (op.kind is OpKind.GET and op.outcome is Outcome.OK) or (
        op.is_observing_cas_failure
    )
    if op.result is not None and not returns_value:
        return "only an ok get or a failed cas returns a value"
    if op.result_found is not None and op.outcome is Outcome.INFO:
        return "an indeterminate op returned nothing"
    if returns_value and op.result_found is False and op.result is not None:
        return "result_found is False but a value was returned"
    if returns_value and op.result_found is True and op.result is None:
        return "result_found is True but no value was returned"
    return None


class HistoryRecorder:
    """Collects invocations and completions into a history; one thread, no locking.

    An invoked operation stays pending (an `info` op) until `complete` is called, so
    `history()` taken at any time is a valid history: requests still in flight are
    indeterminate.

    Args:
        clock: the time source for `at=None`; monotonic seconds by default.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ops: dict[int, Op] = {}
        self._pending: set[int] = set()

    def invoke(
        self,
        process: int,
        kind: OpKind | str,
        key: str,
        *,
        value: bytes | None = None,
        expected: bytes | None = None,
        at: float | None = None,
    ) -> int:
        """Record that `process` sent a request; returns the new op's id.

        Raises:
            ValueError: the arguments do not fit `kind` (see `Op`).
        """
        op_id = len(self._ops)
        self._ops[op_id] = Op(
            process=process,
            kind=OpKind(kind),
            key=key,
            value=value,
            expected=expected,
            invoke=self._clock() if at is None else at,
            complete=None,
            outcome=Outcome.INFO,
            result=None,
            result_found=None,
            id=op_id,
        )
        self._pending.add(op_id)
        return op_id

    def complete(
        self,
        op_id: int,
        outcome: Outcome | str,
        *,
        result: bytes | None = None,
        found: bool | None = None,
        error: str | None = None,
        at: float | None = None,
    ) -> Op:
        """Record how op `op_id` ended and return the completed `Op`.

        For `info` (gave up without an answer) the op keeps `complete=None` and `at` is
        ignored: it may still take effect at any later time.

        Raises:
            KeyError: no pending op has this id (unknown, or already completed).
            ValueError: the result does not fit the op (see `Op`).
        """
        if op_id not in self._pending:
            raise KeyError(f"no pending op {op_id}")
        outcome = Outcome(outcome)
        done = dataclasses.replace(
            self._ops[op_id],
            complete=None if outcome is Outcome.INFO else (self._clock() if at is None else at),
            outcome=outcome,
            result=result,
            result_found=found,
            error=error,
        )
        self._ops[op_id] = done
        self._pending.discard(op_id)
        return done

    def pending(self) -> list[int]:
        """The ids of ops invoked and not yet completed, oldest first."""
        return sorted(self._pending)

    def history(self) -> list[Op]:
        """Every op so far in invocation order; pending ones appear as `info`."""
        return [self._ops[op_id] for op_id in sorted(self._ops)]


def to_jsonl(ops: Iterable[Op]) -> str:
    """Encode a history as JSON lines, one op per line, in the given order.

    Bytes become a JSON string when they are valid UTF-8 and `{"hex": "..."}` otherwise,
    so text values stay readable in the file.
    """
    lines = []
    for op in ops:
        record: dict[str, Any] = {}
        for field in dataclasses.fields(Op):
            raw = getattr(op, field.name)
            record[field.name] = _encode_bytes(raw) if isinstance(raw, bytes) else raw
        lines.append(json.dumps(record, sort_keys=True))
    return "".join(line + "\n" for line in lines)


def from_jsonl(text: str) -> list[Op]:
    """Decode a history written by `to_jsonl`; blank lines are skipped.

    Raises:
        ValueError: a line is not JSON, misses a field, or describes a malformed op.
    """
    ops = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            for name in ("value", "expected", "result"):
                record[name] = _decode_bytes(record[name])
            ops.append(Op(**record))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"line {number}: not an op: {exc}") from exc
    return ops


def _encode_bytes(raw: bytes) -> str | dict[str, str]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}


def _decode_bytes(encoded: str | dict[str, str] | None) -> bytes | None:
    if encoded is None:
        return None
    if isinstance(encoded, str):
        return encoded.encode("utf-8")
    return bytes.fromhex(encoded["hex"])
