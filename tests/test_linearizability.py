"""The linearizability checker and the history recorder (zraft.testing, issue 7).

Hand-written histories pin the verdicts and the failing windows; a brute-force checker
cross-checks small random histories; a simulated linearizable register gives a large
history that must pass quickly and must fail once one read is corrupted.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Sequence
from typing import Any

import pytest

from zraft.testing.history import HistoryRecorder, Op, OpKind, Outcome, from_jsonl, to_jsonl

# `check` is the API; the underscored names are internals, for the window-relaxation tests.
from zraft.testing.linearizability import _Budget, _is_relevant, _Search, _window_problem, check

# --- building histories by hand ---------------------------------------------------------


def _b(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def op(
    op_id: int,
    kind: str,
    invoke: float,
    complete: float | None,
    *,
    key: str = "k",
    value: str | None = None,
    expected: str | None = None,
    result: str | None = None,
    found: bool | None = None,
    outcome: str | None = None,
    error: str | None = None,
    process: int | None = None,
) -> Op:
    """An op with short arguments: text values, `complete=None` meaning indeterminate."""
    if outcome is None:
        outcome = "info" if complete is None else "ok"
    return Op(
        process=op_id if process is None else process,
        kind=OpKind(kind),
        key=key,
        value=_b(value),
        expected=_b(expected),
        invoke=invoke,
        complete=complete,
        outcome=Outcome(outcome),
        result=_b(result),
        result_found=found,
        id=op_id,
        error=error,
    )


LINEARIZABLE: dict[str, list[Op]] = {
    "empty": [],
    "sequential put get delete get": [
        op(0, "put", 0, 1, value="v1", found=False),
        op(1, "get", 2, 3, result="v1"),
        op(2, "delete", 4, 5, found=True),
        op(3, "get", 6, 7, result=None),
        op(4, "delete", 8, 9, found=False),
    ],
    "get overlapping a put sees the old value": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "put", 2, 5, value="v2"),
        op(2, "get", 3, 4, result="v1"),
    ],
    "get overlapping a put sees the new value": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "put", 2, 5, value="v2"),
        op(2, "get", 3, 4, result="v2"),
    ],
    "two gets inside one put: old then new": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "put", 2, 9, value="v2"),
        op(2, "get", 3, 4, result="v1"),
        op(3, "get", 5, 6, result="v2"),
    ],
    "concurrent puts seen in either order": [
        op(0, "put", 0, 5, value="a"),
        op(1, "put", 0, 5, value="b"),
        op(2, "get", 1, 2, result="b"),
        op(3, "get", 6, 7, result="a"),
    ],
    "indeterminate put seen later": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "put", 2, None, value="v2"),
        op(2, "get", 3, 4, result="v1"),
        op(3, "get", 50, 51, result="v2"),
    ],
    "indeterminate put never seen": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "put", 2, None, value="v2"),
        op(2, "get", 3, 4, result="v1"),
        op(3, "get", 5, 6, result="v1"),
    ],
    "indeterminate delete took effect": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "delete", 2, None),
        op(2, "get", 3, 4, result=None),
    ],
    "failed put and indeterminate get are ignored": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "put", 2, 3, value="v2", outcome="fail", error="bad_request"),
        op(2, "get", 2, None, result=None),
        op(3, "get", 4, 5, result="v1"),
    ],
    "cas success then get": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "cas", 2, 3, expected="v1", value="x", found=True),
        op(2, "get", 4, 5, result="x"),
    ],
    "cas create-if-absent": [
        op(0, "cas", 0, 1, expected=None, value="x", found=False),
        op(1, "get", 2, 3, result="x"),
    ],
    "failed cas observing the current value": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "cas", 2, 3, expected="v0", value="x", outcome="fail", result="v1", found=True),
        op(2, "get", 4, 5, result="v1"),
    ],
    "failed cas without the current value recorded": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "cas", 2, 3, expected="v0", value="x", outcome="fail", error="cas_failed"),
    ],
    "failed cas on an absent key": [
        op(0, "cas", 0, 1, expected="v0", value="x", outcome="fail", result=None, found=False),
    ],
    "cas rejected as bad_request observes nothing": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "cas", 2, 3, expected="v1", value="x", outcome="fail", error="bad_request"),
        op(2, "get", 4, 5, result="v1"),
    ],
    "indeterminate cas that took effect": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "cas", 2, None, expected="v1", value="x"),
        op(2, "get", 9, 10, result="x"),
    ],
    "failed cas concurrent with the write it raced": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "cas", 2, 5, expected="v1", value="x"),
        op(2, "cas", 3, 4, expected="v1", value="y", outcome="fail", result="x", found=True),
    ],
    "touching intervals count as concurrent": [
        op(0, "put", 0, 1, value="v1"),
        op(1, "put", 1, 2, value="v2"),
        op(2, "get", 2, 3, result="v1"),
    ],
    "keys are independent": [
        op(0, "put", 0, 1, key="a", value="1"),
        op(1, "put", 2, 3, key="b", value="1"),
        op(2, "get", 4, 5, key="a", result="1"),
        op(3, "get", 4, 5, key="b", result="1"),
    ],
}


@pytest.mark.parametrize("name", LINEARIZABLE)
def test_linearizable_histories_pass(name: str) -> None:
    """Each hand-written valid history is accepted, with a complete linearization."""
    history = LINEARIZABLE[name]
    result = check(history)
    assert result.ok is True, result.describe()
    assert result.key is None and result.window == ()
    for key, detail in result.per_key.items():
        assert detail.linearization is not None
        mandatory = {o.id for o in history if o.key == key and o.outcome is not Outcome.INFO}
        mandatory -= {o.id for o in history if o.outcome is Outcome.FAIL and o.kind != "cas"}
        mandatory -= {o.id for o in history if o.error == "bad_request"}
        assert mandatory <= set(detail.linearization)


# name -> (history, ids the window must contain)
NOT_LINEARIZABLE: dict[str, tuple[list[Op], set[int]]] = {
    "stale read": (
        [
            op(0, "put", 0, 1, value="v1"),
            op(1, "put", 2, 3, value="v2"),
            op(2, "get", 4, 5, result="v1"),
        ],
        {1, 2},
    ),
    "lost write": (
        [
            op(0, "put", 0, 1, value="v1"),
            op(1, "get", 2, 3, result=None),
        ],
        {0, 1},
    ),
    "write seen then unseen": (
        [
            op(0, "put", 0, 1, value="v1"),
            op(1, "put", 2, 10, value="v2"),
            op(2, "get", 3, 4, result="v2"),
            op(3, "get", 5, 6, result="v1"),
        ],
        {2, 3},
    ),
    "cas succeeded twice": (
        [
            op(0, "put", 0, 1, value="v1"),
            op(1, "cas", 2, 4, expected="v1", value="x"),
            op(2, "cas", 3, 5, expected="v1", value="x"),
        ],
        {1, 2},
    ),
    "read of a never-written value": (
        [
            op(0, "put", 0, 1, value="v1"),
            op(1, "get", 2, 3, result="zz"),
        ],
        {1},
    ),
    "delete then a later get still sees the value": (
        [
            op(0, "put", 0, 1, value="v"),
            op(1, "delete", 2, 3),
            op(2, "get", 4, 5, result="v"),
        ],
        {1, 2},
    ),
    "failed cas whose expected value was current": (
        [
            op(0, "put", 0, 1, value="v1"),
            op(1, "cas", 2, 3, expected="v1", value="x", outcome="fail", error="cas_failed"),
        ],
        {1},
    ),
    "failed cas returning a value the key never held": (
        [
            op(0, "put", 0, 1, value="v1"),
            op(1, "cas", 2, 3, expected="v0", value="x", outcome="fail", result="v9", found=True),
        ],
        {1},
    ),
    "put reports the key present on an empty store": (
        [op(0, "put", 0, 1, value="v1", found=True)],
        {0},
    ),
    "indeterminate put read before it was invoked": (
        [
            op(0, "get", 0, 1, result="v1"),
            op(1, "put", 2, None, value="v1"),
        ],
        {0},
    ),
    "stale read after a long valid prefix": (
        [op(i, "put", 2 * i, 2 * i + 1, value=f"v{i}") for i in range(200)]
        + [op(200, "get", 400, 401, result="v198")],
        {199, 200},
    ),
    "only the broken key is named": (
        [
            op(0, "put", 0, 1, key="a", value="1"),
            op(1, "put", 0, 1, key="b", value="1"),
            op(2, "get", 2, 3, key="a", result="1"),
            op(3, "get", 2, 3, key="b", result="2"),
        ],
        {3},
    ),
}


@pytest.mark.parametrize("name", NOT_LINEARIZABLE)
def test_violations_are_flagged_with_a_small_window(name: str) -> None:
    """Each violation is caught; the key is named; the window holds the culprits."""
    history, culprits = NOT_LINEARIZABLE[name]
    result = check(history)
    assert result.ok is False, result.describe()
    key = history[min(culprits)].key
    assert result.key == key
    window_ids = {o.id for o in result.window}
    assert culprits <= window_ids, result.describe()
    assert len(result.window) <= 4, result.describe()
    assert all(o.key == key for o in result.window)
    assert result.per_key[key].ok is False
    assert key in result.describe()


# --- brute force cross-check -------------------------------------------------------------


def _model_accepts(order: Sequence[Op]) -> bool:
    """Replay `order` on one register; ok ops must return what they returned."""
    state: bytes | None = None
    for o in order:
        if o.outcome is Outcome.FAIL:  # only observing cas failures reach here
            if state == o.expected or (o.result_found is not None and o.result != state):
                return False
            continue
        info = o.outcome is Outcome.INFO
        if o.result_found is not None and o.result_found != (state is not None):
            return False
        if o.kind == "get":
            if state != o.result:
                return False
        elif o.kind == "put":
            state = o.value
        elif o.kind == "delete":
            state = None
        elif state == o.expected:
            state = o.value
        elif not info:
            return False
    return True


def _brute_force(history: Sequence[Op]) -> bool:
    """Try every subset of the indeterminate writes and every real-time-respecting order."""
    relevant = [
        o
        for o in history
        if (o.outcome is Outcome.OK)
        or (o.outcome is Outcome.INFO and o.kind != "get")
        or (o.outcome is Outcome.FAIL and o.kind == "cas")
    ]
    mandatory = [o for o in relevant if o.outcome is not Outcome.INFO]
    optional = [o for o in relevant if o.outcome is Outcome.INFO]

    def end(o: Op) -> float:
        return float("inf") if o.complete is None else o.complete

    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations(mandatory + list(chosen)):
                in_real_time = all(
                    not end(later) < earlier.invoke
                    for i, earlier in enumerate(order)
                    for later in order[i + 1 :]
                )
                if in_real_time and _model_accepts(order):
                    return True
    return False


def _random_small_history(rng: random.Random) -> list[Op]:
    values = [None, "a", "b"]
    ops = []
    for op_id in range(rng.randint(1, 6)):
        invoke = rng.randint(0, 8)
        complete = None if rng.random() < 0.15 else invoke + rng.randint(0, 4)
        kind = rng.choice(["put", "get", "get", "delete", "cas"])
        outcome = "info" if complete is None else "ok"
        kwargs: dict[str, Any] = {}
        if kind in ("put", "cas"):
            kwargs["value"] = rng.choice(values[1:])
        if kind == "cas":
            kwargs["expected"] = rng.choice(values)
            if outcome == "ok" and rng.random() < 0.4:
                outcome = "fail"
                kwargs["result"] = rng.choice(values)
                kwargs["found"] = kwargs["result"] is not None
        if kind == "get" and outcome == "ok":
            kwargs["result"] = rng.choice(values)
        if kind in ("put", "delete") and outcome == "ok" and rng.random() < 0.3:
            kwargs["found"] = rng.random() < 0.5
        ops.append(op(op_id, kind, invoke, complete, outcome=outcome, **kwargs))
    return ops


def test_agrees_with_brute_force_on_small_random_histories() -> None:
    """400 random histories of up to 6 ops: same verdict as trying every order."""
    rng = random.Random(7)
    verdicts = set()
    for _ in range(400):
        history = _random_small_history(rng)
        expected = _brute_force(history)
        result = check(history)
        assert result.ok is expected, (history, result.describe())
        if not expected:
            assert result.window and len(result.window) <= len(history)
        verdicts.add(expected)
    assert verdicts == {True, False}  # the generator produced both kinds


# --- a large history from a simulated linearizable store ---------------------------------


def _simulate(
    seed: int,
    count: int,
    processes: int,
    keys: Sequence[str],
    info_rate: float = 0.03,
    record_found: bool = False,
) -> list[Op]:
    """`count` ops by `processes` clients on a linearizable register per key.

    Each op gets an interval and a hidden linearization point inside it; results come
    from replaying the points in order. A share `info_rate` is indeterminate: the effect
    happens or not, and the client is replaced by a fresh process id (as in Jepsen).
    With `record_found`, ok writes also record whether the key was present.
    """
    rng = random.Random(seed)
    free_at = [rng.random() for _ in range(processes)]
    names = list(range(processes))
    planned = []
    for n in range(count):
        slot = min(range(processes), key=free_at.__getitem__)
        invoke = free_at[slot]
        complete = invoke + rng.expovariate(1.0)
        free_at[slot] = complete + rng.expovariate(5.0)
        kind = rng.choices(["get", "put", "cas", "delete"], weights=[4, 3, 2, 1])[0]
        info = rng.random() < info_rate
        planned.append(
            {
                "n": n,
                "process": names[slot],
                "kind": kind,
                "key": rng.choice(keys),
                "invoke": invoke,
                "complete": complete,
                "point": rng.uniform(invoke, complete),
                "info": info,
                "applied": not info or rng.random() < 0.5,
            }
        )
        if info:
            names[slot] += processes
    return _replay(planned, rng, record_found)


def _replay(planned: list[dict[str, Any]], rng: random.Random, record_found: bool) -> list[Op]:
    state: dict[str, bytes | None] = {}
    ops = []
    for p in sorted(planned, key=lambda p: p["point"]):
        current = state.get(p["key"])
        value = f"{p['key']}-{p['n']}".encode() if p["kind"] in ("put", "cas") else None
        expected = current if rng.random() < 0.6 else rng.choice([None, b"nope"])
        fields: dict[str, Any] = {"result": None, "found": None, "error": None}
        outcome = "info" if p["info"] else "ok"
        if p["kind"] == "get":
            fields["result"] = None if p["info"] else current
        elif p["kind"] == "cas" and current != expected:
            if not p["info"]:
                outcome = "fail"
                fields.update(result=current, found=current is not None, error="cas_failed")
        elif p["applied"]:
            state[p["key"]] = value
            if record_found and not p["info"]:
                fields["found"] = current is not None
        ops.append(
            Op(
                process=p["process"],
                kind=OpKind(p["kind"]),
                key=p["key"],
                value=value,
                expected=expected if p["kind"] == "cas" else None,
                invoke=p["invoke"],
                complete=None if p["info"] else p["complete"],
                outcome=Outcome(outcome),
                result=fields["result"],
                result_found=fields["found"],
                id=p["n"],
                error=fields["error"],
            )
        )
    return sorted(ops, key=lambda o: o.id)


def _corrupt_one_read(history: list[Op]) -> tuple[list[Op], Op]:
    """Make a mid-history get return a value that two completed writes ago was current.

    Values are unique, so the stale value cannot have been written again in between.
    """
    by_id = {o.id: o for o in history}
    ok_writes = [o for o in history if o.outcome is Outcome.OK and o.kind != "get"]
    for read in history[len(history) // 2 :]:
        if read.kind != "get" or read.outcome is not Outcome.OK:
            continue
        before = [w for w in ok_writes if w.key == read.key and w.complete < read.invoke]
        newer = max(before, key=lambda w: w.complete, default=None)
        if newer is None:
            continue
        older = [w for w in before if w.kind == "put" and w.complete < newer.invoke]
        stale = max(older, key=lambda w: w.complete, default=None)
        if stale is not None and stale.value != read.result:
            by_id[read.id] = dataclasses.replace(read, result=stale.value)
            return [by_id[o.id] for o in history], by_id[read.id]
    raise AssertionError("no read to corrupt")


# name -> simulation arguments: the brief's shape, and one closer to zraft under faults
# (one hot key, presence recorded on every write, many timeouts).
SHAPES: dict[str, dict[str, Any]] = {
    "8 clients, 3 keys": {"keys": ["a", "b", "c"]},
    "8 clients, 1 key, found, 10% info": {"keys": ["a"], "info_rate": 0.1, "record_found": True},
}


@pytest.fixture(scope="module", params=list(SHAPES))
def large_history(request: pytest.FixtureRequest) -> list[Op]:
    return _simulate(seed=2024, count=2000, processes=8, **SHAPES[request.param])


@pytest.fixture(scope="module")
def big_history() -> list[Op]:
    return _simulate(seed=2024, count=2000, processes=8, keys=["a", "b", "c"])


# Search steps allowed for the 2000-op histories: 25 per operation. They need 1-6 (2,443
# and 10,422 configurations explored when this was written); an exponential search would
# need far more.
SEARCH_BUDGET = 50_000


def test_a_large_valid_history_passes_quickly(large_history: list[Op]) -> None:
    """2000 ops by 8 clients, real overlaps and indeterminate ops: ok, and fast."""
    overlapping = sum(
        1
        for x, y in itertools.pairwise(large_history)
        if x.complete is None or y.invoke < x.complete
    )
    assert overlapping > 1000
    assert sum(o.outcome is Outcome.INFO for o in large_history) >= 20
    started = time.monotonic()
    # The bound is on search steps, not seconds (the machine's speed must not decide):
    # memoization keeps this near linear; ok=None would mean the budget ran out.
    result = check(large_history, max_steps=SEARCH_BUDGET)
    elapsed = time.monotonic() - started
    print(f"valid history of {len(large_history)} ops: {elapsed:.3f} s, {result.explored} configs")
    assert result.ok is True, result.describe()


def test_one_corrupted_read_in_a_large_history_is_flagged(large_history: list[Op]) -> None:
    """The same history with one stale read: flagged, on the right key, with that read."""
    corrupted, read = _corrupt_one_read(large_history)
    started = time.monotonic()
    result = check(corrupted, max_steps=SEARCH_BUDGET)
    elapsed = time.monotonic() - started
    print(f"corrupted history: {elapsed:.3f} s, window of {len(result.window)}")
    assert result.ok is False, result.describe()  # decided within the budget
    assert result.key == read.key
    assert read.id in {o.id for o in result.window}, result.describe()
    assert len(result.window) <= 12, result.describe()


def _fails(ops: list[Op], start: int, end: int) -> bool:
    """The relaxed check of run start..end (pokes the checker's internals)."""
    steps, init, seeds = _window_problem(ops, start, end)
    found = _Search(steps, init, seeds, _Budget(None, None, time.monotonic)).run()
    return found is not None and found.ok is False


def test_the_window_is_minimal_and_fails_on_its_own(big_history: list[Op]) -> None:
    """Internals: the reported window fails the relaxed check; dropping an end passes."""
    corrupted, _ = _corrupt_one_read(big_history)
    result = check(corrupted)
    assert result.key is not None
    ops = sorted(
        (o for o in corrupted if o.key == result.key and _is_relevant(o)),
        key=lambda o: (o.invoke, o.id),
    )
    ids = [o.id for o in ops]
    start, end = ids.index(result.window[0].id), ids.index(result.window[-1].id)
    assert [o.id for o in result.window] == ids[start : end + 1]
    assert _fails(ops, start, end)
    assert not _fails(ops, start + 1, end) and not _fails(ops, start, end - 1)


def test_no_window_of_a_valid_history_fails() -> None:
    """Internals: the window relaxation is sound, and failure is monotone in the run.

    In small simulated histories (many indeterminate ops, presence recorded), every run of
    a linearizable key passes; in corrupted ones, a run that contains a failing run fails.
    """
    rng = random.Random(11)
    verdicts = set()
    for _ in range(60):
        history = _simulate(
            seed=rng.randrange(10**6),
            count=rng.randint(5, 14),
            processes=rng.randint(2, 5),
            keys=["a"],
            info_rate=0.2,
            record_found=rng.random() < 0.5,
        )
        if rng.random() < 0.5:
            history = _corrupt_some_read(history, rng)
        ops = sorted((o for o in history if _is_relevant(o)), key=lambda o: (o.invoke, o.id))
        runs = [(i, j) for i in range(len(ops)) for j in range(i, len(ops))]
        failing = {run for run in runs if _fails(ops, *run)}
        verdict = check(history).ok
        verdicts.add(verdict)
        if verdict:
            assert not failing
        for i, j in failing:
            assert all((a, b) in failing for a, b in runs if a <= i and j <= b)
    assert verdicts == {True, False}


def _corrupt_some_read(history: list[Op], rng: random.Random) -> list[Op]:
    """Replace the result of one random ok get by a random written value (or absent)."""
    reads = [k for k, o in enumerate(history) if o.kind == "get" and o.outcome is Outcome.OK]
    if not reads:
        return history
    k = rng.choice(reads)
    values = [o.value for o in history if o.value is not None] + [None]
    changed = list(history)
    changed[k] = dataclasses.replace(history[k], result=rng.choice(values))
    return changed


def test_a_budget_turns_a_long_search_into_unknown(big_history: list[Op]) -> None:
    """Out of steps before deciding: ok is None, and the undecided key is named."""
    result = check(big_history, max_steps=100)
    assert result.ok is None
    assert result.key is not None and result.window == ()
    ticks = itertools.count()  # each key's search reads the clock when it starts
    result = check(big_history, timeout=1.5, clock=lambda: float(next(ticks)))
    assert result.ok is None
    assert [detail.ok for detail in result.per_key.values()] == [True, None, None]


# --- the recorder and the file format ----------------------------------------------------


def test_recorder_builds_a_checkable_history() -> None:
    """Invocations stay pending (info) until completed; the result checks as expected."""
    ticks = itertools.count()
    recorder = HistoryRecorder(clock=lambda: float(next(ticks)))
    put = recorder.invoke(1, "put", "k", value=b"v1")
    get = recorder.invoke(2, "get", "k")
    lost = recorder.invoke(3, "put", "k", value=b"v2")
    assert recorder.pending() == [put, get, lost]
    assert recorder.history()[0].outcome is Outcome.INFO
    recorder.complete(put, "ok", found=False)
    done = recorder.complete(get, Outcome.OK, result=b"v1")
    recorder.complete(lost, "info")
    assert done.invoke == 1.0 and done.complete == 4.0
    assert recorder.pending() == []
    history = recorder.history()
    assert [o.id for o in history] == [put, get, lost]
    assert history[2].complete is None
    assert check(history).ok is True
    with pytest.raises(KeyError):
        recorder.complete(put, "ok")


def test_jsonl_round_trip() -> None:
    """Every field survives, including bytes that are not UTF-8 and indeterminate ops."""
    history = [
        op(0, "put", 0.5, 1.25, value="text", found=False),
        Op(
            process=2,
            kind=OpKind.CAS,
            key="k",
            value=b"\xff\x00",
            expected=b"\xfe",
            invoke=2.0,
            complete=3.0,
            outcome=Outcome.FAIL,
            result=b"text",
            result_found=True,
            id=1,
            error="cas_failed",
        ),
        op(2, "delete", 4, None),
    ]
    text = to_jsonl(history)
    assert len(text.splitlines()) == 3
    assert from_jsonl(text + "\n") == history
    with pytest.raises(ValueError):
        from_jsonl('{"id": 1}')


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "get", "value": b"x"},
        {"value": None},
        {"expected": b"x"},
        {"complete": None},
        {"outcome": "info"},
        {"complete": -1.0},
        {"error": "bad_request"},
        {"result": b"x"},
        {"kind": "bogus"},
    ],
)
def test_malformed_ops_are_rejected(changes: dict[str, Any]) -> None:
    """Field combinations no reply can produce raise ValueError."""
    with pytest.raises(ValueError):
        dataclasses.replace(op(0, "put", 0, 1, value="v"), **changes)


def test_duplicate_ids_are_rejected() -> None:
    """Ids identify ops in windows and linearizations, so they must be unique."""
    with pytest.raises(ValueError):
        check([op(0, "get", 0, 1), op(0, "get", 2, 3)])
