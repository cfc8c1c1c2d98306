"""Store benchmark: the multi-version store at a million keys, in one process.

    python -m zraft.bench.store [--keys 1000000] [--value-size 256] [--overwrite 0.1]
                                [--ranges 200] [--range-keys 1000] [--json]

Drives the state machine exactly as a node does (`KVMachine.command` and `apply` of
log entries; no sockets, no disk for the writes) and measures:

1. **load**: `--keys` puts of distinct 16-byte keys with `--value-size`-byte values, then
   `--overwrite` of them written again (history the store keeps until compacted):
   applies per second, and the memory the store holds per key (the growth of the
   process's resident set, and of the Python heap by `tracemalloc` when `--tracemalloc`
   is given: slower, exact) beside its accounted `size_bytes` (what the quota counts);
2. **range**: `--ranges` linearizable-path reads (`KVMachine.read` of `range`) of
   `--range-keys` consecutive keys at random places, p50/p99 in milliseconds, at the
   current revision and at the end of the first pass (a history lookup per overwritten
   key);
3. **snapshot**: the copy a node takes (`snapshot_view`), and a full snapshot file written
   with the node's writer (`zraft.storage.snapstore`): its size and time, then loaded and
   restored into a fresh machine (the time a restarting node spends).

It is a measuring tool: it prints figures and never fails on them.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from zraft.core.types import Entry, EntryKind, Membership, SnapshotMeta
from zraft.state.kv import SnapshotView
from zraft.state.machine import KVMachine
from zraft.storage.snapfile import load_snapshot
from zraft.storage.snapstore import SnapshotStore
from zraft.wire.client import Request


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def key_of(number: int) -> bytes:
    """The 16-byte key of `number`."""
    return b"key/%012d" % number


def load(machine: KVMachine, keys: int, value_size: int, overwrite: float) -> dict[str, Any]:
    """Apply the puts; returns the load figures."""
    rng = random.Random(1)
    value = bytes(rng.randrange(256) for _ in range(value_size))
    index = machine.applied_index
    gc.collect()
    rss_before = rss_bytes()
    began = time.perf_counter()
    writes = [key_of(n) for n in range(keys)]
    writes += [key_of(rng.randrange(keys)) for _ in range(int(keys * overwrite))]
    for key in writes:
        index += 1
        data = machine.command(Request("put", key=key, value=value))
        machine.apply(Entry(1, index, EntryKind.NORMAL, data))
    elapsed = time.perf_counter() - began
    gc.collect()
    grown = rss_bytes() - rss_before
    return {
        "keys": keys,
        "records": len(writes),
        "value_bytes": value_size,
        "applies_per_s": round(len(writes) / elapsed),
        "rss_per_key_bytes": round(grown / keys),
        "accounted_per_key_bytes": round(machine.store.size_bytes / keys),
    }


def ranges(machine: KVMachine, count: int, width: int, revision: int) -> dict[str, float]:
    """Time `count` range reads of `width` keys at `revision` (0: now)."""
    rng = random.Random(2)
    keys = len(machine.store)
    times = []
    for _ in range(count):
        start = rng.randrange(max(1, keys - width))
        request = Request(
            "range", key=key_of(start), range_end=key_of(start + width), revision=revision
        )
        began = time.perf_counter()
        reply = machine.read(request)
        times.append((time.perf_counter() - began) * 1000)
        assert reply["ok"] and reply["extra"]["count"] == width, reply
    return {"p50_ms": round(percentile(times, 0.5), 2), "p99_ms": round(percentile(times, 0.99), 2)}


def snapshot(machine: KVMachine) -> dict[str, Any]:
    """Write a full snapshot file with the node's writer, then restore it."""
    began = time.perf_counter()
    view = machine.snapshot_view()
    copy_ms = (time.perf_counter() - began) * 1000
    meta = SnapshotMeta(view.applied_index, 1, Membership(voters=frozenset({"n1"})))
    with tempfile.TemporaryDirectory() as directory:
        store = SnapshotStore(Path(directory))
        header = {**view.header, "applied_index": view.applied_index, "sessions": view.sessions}
        began = time.perf_counter()
        writer = store.begin(meta, header, view.data.items(), len(view.data))
        while not writer.step(1 << 20):
            pass
        info = writer.finish()
        write_s = time.perf_counter() - began
        began = time.perf_counter()
        loaded = load_snapshot(info.path)
        fresh = KVMachine()
        fields = loaded.header
        fresh.restore(
            SnapshotView(fields["applied_index"], loaded.pairs, fields["sessions"], dict(fields))
        )
        restore_s = time.perf_counter() - began
        assert fresh.store.revision == machine.store.revision
    return {
        "copy_ms": round(copy_ms, 1),
        "write_s": round(write_s, 2),
        "size_bytes": info.size_bytes,
        "load_and_restore_s": round(restore_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m zraft.bench.store", description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=256)
    parser.add_argument("--overwrite", type=float, default=0.1)
    parser.add_argument("--ranges", type=int, default=200)
    parser.add_argument("--range-keys", type=int, default=1000)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    machine = KVMachine(model="mvcc")
    machine.apply(Entry(1, 1, EntryKind.NORMAL, machine.upgrade_command()))
    if args.tracemalloc:
        tracemalloc.start()
    figures: dict[str, Any] = {"load": load(machine, args.keys, args.value_size, args.overwrite)}
    if args.tracemalloc:
        figures["load"]["heap_per_key_bytes"] = round(
            tracemalloc.get_traced_memory()[0] / args.keys
        )
        tracemalloc.stop()
    older = args.keys + 1  # the end of the first pass: every key, before the overwrites
    figures["range_now"] = ranges(machine, args.ranges, args.range_keys, 0)
    figures["range_old"] = ranges(machine, args.ranges, args.range_keys, older)
    figures["snapshot"] = snapshot(machine)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, values in figures.items():
            print(f"{name:10} " + "  ".join(f"{k}={v}" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
