"""How long a one-shot `zraft-client` call takes, and where the time goes.

    python -m zraft.bench.oneshot [--runs 30] [--no-cache] [--json]

Starts a 3-node cluster (CURVE on, fsync on; free 127.0.0.1 ports, a temporary
directory), writes one key, and then times whole processes as a script would run them,
each `--runs` times (medians and 90th percentiles of wall time):

- `python -c pass`: the interpreter's own start, the floor of any Python command;
- `python -c "import zmq, msgpack"`: the libraries every call needs;
- `python -c "import zraft.cli.client"`: the client's entry module (what `--help` loads);
- `zraft-client --config F get KEY`: a linearizable read of one key, end to end;
- `zraft-client --config F put KEY VALUE`: a write, end to end (fsync on two nodes).

Each `zraft-client` run is `bin/zraft-client` under this interpreter, as the installed
script runs. Python caches compiled modules (`__pycache__`) as it does on a user's machine:
the benchmark clears `PYTHONDONTWRITEBYTECODE` for its children (this machine's shell sets
it, and then every start compiles zraft's modules again). `--no-cache` measures the worst
case: no compiled module is used at all, the standard library's included.

A benchmark that prints figures, never a pass/fail test; it starts and stops its own
processes by PID (`zraft.testing.cluster`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zraft
from zraft.testing.cluster import ProcessCluster

ROOT = Path(zraft.__file__).resolve().parent.parent
CLIENT = ROOT / "bin" / "zraft-client"


def time_process(command: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Run `command` `runs` times (one warm-up first); its wall time p50 and p90 in ms.

    Raises:
        RuntimeError: a run exited non-zero (its stderr is in the message).
    """
    samples = []
    for number in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False, env=env)
        elapsed = (time.perf_counter() - start) * 1000
        if done.returncode != 0:
            raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr.decode()}")
        if number:  # the first run warms the page cache and .pyc files
            samples.append(elapsed)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p90_ms": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
    }


def measure(directory: Path, runs: int, cache: bool = True) -> dict[str, dict[str, float]]:
    """Start a cluster in `directory`, time each command, stop the cluster."""
    python = sys.executable
    env = dict(os.environ)
    if cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:  # no compiled module is found (an empty cache tree) and none is written
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(directory / "no-pycache")
    cluster = ProcessCluster(directory, 3)
    try:
        cluster.start_all()
        cluster.wait_leader()
        client = [python, str(CLIENT), "--config", str(cluster.config_path)]
        time_process([*client, "put", "bench/key", "v"], 1, env)  # the key `get` reads
        return {
            "python -c pass": time_process([python, "-c", "pass"], runs, env),
            "import zmq, msgpack": time_process([python, "-c", "import zmq, msgpack"], runs, env),
            "import zraft.cli.client": time_process(
                [python, "-c", "import zraft.cli.client"], runs, env
            ),
            "zraft-client get": time_process([*client, "get", "bench/key"], runs, env),
            "zraft-client put": time_process([*client, "put", "bench/key", "w"], runs, env),
        }
    finally:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure and print a table (or JSON)."""
    parser = argparse.ArgumentParser(
        prog="python -m zraft.bench.oneshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=30, help="runs of each command (30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--no-cache", action="store_true", help="compile every module at every start"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    directory = Path(tempfile.mkdtemp(prefix="zraft-oneshot-"))
    try:
        figures = measure(directory, args.runs, cache=not args.no_cache)
    except (RuntimeError, AssertionError) as exc:
        print(f"oneshot: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(figures))
        return 0
    print("| command | p50 (ms) | p90 (ms) |")
    print("|---|---|---|")
    for name, figure in figures.items():
        print(f"| `{name}` | {figure['p50_ms']:.1f} | {figure['p90_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
