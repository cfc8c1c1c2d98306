"""Driving a program through a real terminal (a pty), as a person would (a test helper)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Sequence


def read_until(
    fd: int, marker: bytes, seen: bytearray, timeout: float = 5.0, start: int | None = None
) -> None:
    """Read the pty into `seen` until `marker` appears after `start` (default: what was
    seen before this call), bounded."""
    deadline = time.monotonic() + timeout
    start = len(seen) if start is None else start
    while marker not in seen[start:]:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} within {timeout} s in {bytes(seen[start:])!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break


def type_session(
    command: Sequence[str],
    env: dict[str, str],
    steps: Sequence[tuple[bytes, bytes]],
    *,
    prompt: bytes = b"zraft> ",
    timeout: float = 30.0,
) -> int:
    """Run `command` on a pty; wait for `prompt`, then for each `(keys, answer)` type the
    keys and wait for the answer; end with Ctrl-D and return the exit code. Keys are typed
    only at a prompt: input sent while readline is not reading meets a cooked-mode
    terminal, where a Ctrl-D is lost. The process is killed if it outlives the test."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = bytearray()
    try:
        read_until(master, prompt, seen)
        for keys, answer in steps:
            os.write(master, keys)
            read_until(master, answer, seen)
        os.write(master, b"\x04")  # Ctrl-D
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        os.close(master)
