"""`bin/zraft-demo` as a person meets it, through a real terminal (a pty): Ctrl-C at the
prompt only clears the line; the cluster keeps serving; `quit` stops every node."""

from __future__ import annotations

import os
import pty
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.procs import pid_running, write_cluster_config
from tests.terminal import read_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty behaviour is Linux's")
@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "zraft-node").exists(), reason="needs .venv")
def test_ctrl_c_at_the_demo_prompt_keeps_the_cluster(tmp_path: Path) -> None:
    path = write_cluster_config(tmp_path, 3)
    env = {**os.environ, "ZRAFT_CONFIG": str(path), "TERM": "dumb"}
    env["ZRAFT_HISTORY"] = str(tmp_path / "history")
    out = ROOT / "logs" / "cluster.out"
    pid, fd = pty.fork()  # a new session whose controlling terminal is the pty
    if pid == 0:
        os.execve("/bin/bash", ["bash", str(ROOT / "bin" / "zraft-demo")], env)
    seen = bytearray()
    nodes: list[int] = []
    try:
        read_until(fd, b"zraft> ", seen, 60)
        nodes = [int(p) for p in re.findall(r"\(pid (\d+)\)", out.read_text())]
        assert len(nodes) == 3, out.read_text()
        os.write(fd, b"put a 1\r")
        read_until(fd, b"OK\r\n", seen, 10)
        # Ctrl-C at the prompt, not while the REPL is still between commands.
        read_until(fd, b"zraft> ", seen, 5, start=seen.rindex(b"OK\r\n"))
        os.write(fd, b"\x03")  # Ctrl-C: SIGINT to the terminal's foreground group
        read_until(fd, b"^C", seen, 5)
        # Type once the REPL has handled the interrupt and prompts again: the terminal
        # echoes ^C at once, and a line typed before the handler runs is dropped with it.
        read_until(fd, b"zraft> ", seen, 5, start=seen.rindex(b"^C"))
        # The cluster keeps serving over a window longer than a stopping supervisor needs
        # (it polls every 0.2 s and SIGTERMs the nodes): every read answers at once.
        window_end = time.monotonic() + 2.0
        while time.monotonic() < window_end:
            os.write(fd, b"get a\r")  # a stopped cluster answers `client_timeout` instead
            read_until(fd, b"1\r\n", seen, 5)
        assert all(pid_running(p) for p in nodes), "Ctrl-C reached the nodes"
        assert "cluster stopped" not in out.read_text()
        os.write(fd, b"quit\r")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_running(p) for p in nodes):
            time.sleep(0.05)
        assert not any(pid_running(p) for p in nodes), "quit left nodes running"
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for node in nodes:  # cleanup by PID, whatever happened above
            if pid_running(node):
                os.kill(node, signal.SIGKILL)
        os.close(fd)
