"""Disk fault injection for process tests: the `failio.so` LD_PRELOAD shim (test helper).

`failio.c` (next to this file) wraps fsync, fdatasync and write. A node started with
`FailIO.env(shim)` in its environment behaves normally until one of its trigger files
exists; from then on, for its files whose path contains `match`, `arm("fsync")` makes
fsync/fdatasync fail with EIO, `arm("write")` makes write and pwrite fail with ENOSPC, and
`arm("short")` makes every (p)write return a legal short count (half the bytes). Removing
the trigger files (`heal`) ends the fault:

    shim = build_shim(cache_dir)             # pytest.skip()s when gcc is missing
    faults = FailIO(tmp_path / "n2", match=str(data_dir / "wal-"))
    env = faults.env(shim)                   # pass to the node process
    faults.arm("fsync")                      # the node's next WAL fsync fails with EIO
    faults.heal()

Every injected failure is reported on the process's stderr as one line starting with
`INJECTED_MARKER`, so a test can tell an injected failure from a real one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import pytest

SOURCE = Path(__file__).resolve().parent / "failio.c"
INJECTED_MARKER = "failio: injected"
COMPILE_TIMEOUT_S = 60.0

Kind = Literal["fsync", "write", "short"]


def build_shim(directory: Path) -> Path:
    """Compile `failio.c` into `directory` (once per source version) and return the .so.

    The file name carries a hash of the source, so an edited shim is rebuilt and a cached
    one is reused. Skips the calling test (pytest.skip) when gcc is not installed or cannot
    build a shared library on this machine (for example without libc headers).
    """
    source = SOURCE.read_bytes()
    target = directory / f"failio-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if target.exists():
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot build the failio LD_PRELOAD shim")
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    command = [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(partial), str(SOURCE), "-ldl"]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"gcc could not be run to build the failio shim: {exc}")
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.skip(
            f"gcc could not build the failio shim (missing libc headers?):\n{result.stderr}"
        )
    partial.replace(target)  # atomic: a parallel run never loads a half-written library
    return target


class FailIO:
    """The trigger files of one process using the shim, and the environment that names them.

    Args:
        directory: where the trigger files live (created if missing).
        match: only files whose path contains this substring are affected.
    """

    def __init__(self, directory: Path, match: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.match = match
        self.triggers: dict[Kind, Path] = {
            "fsync": directory / "failio-fsync.trigger",
            "write": directory / "failio-write.trigger",
            "short": directory / "failio-short.trigger",
        }

    def env(self, shim: Path) -> dict[str, str]:
        """Environment variables that load `shim` and point it at this object's triggers."""
        preload = " ".join(p for p in (str(shim), os.environ.get("LD_PRELOAD", "")) if p)
        return {
            "LD_PRELOAD": preload,
            "FAILIO_MATCH": self.match,
            "FAILIO_FSYNC_TRIGGER": str(self.triggers["fsync"]),
            "FAILIO_WRITE_TRIGGER": str(self.triggers["write"]),
            "FAILIO_SHORT_TRIGGER": str(self.triggers["short"]),
        }

    def arm(self, kind: Kind) -> None:
        """Start failing `kind` calls: fsync/fdatasync with EIO, write with ENOSPC, or
        (`short`) every write with a legal short count of half the bytes asked."""
        self.triggers[kind].touch()

    def heal(self) -> None:
        """Stop failing anything."""
        for trigger in self.triggers.values():
            trigger.unlink(missing_ok=True)
