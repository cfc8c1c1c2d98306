"""The README's commands run as written, against a live cluster started as it says.

A temporary directory plays a fresh checkout: `conf/local.toml` is the repository's own
file with its ports (7101-7103, 7201-7203, 9101-9103) replaced by free ones (in the
commands too) and one more client key (`dash`, role `read`, which the README's role
example uses); `.venv/bin/zraft-node` and `zraft-client` run this checkout's `bin/`
scripts, and `.venv/bin` is first on PATH so the bare `zraft-client` of the examples is
the same program. The cluster is started with the
quick start's own commands (`zraft-node keygen --config conf/local.toml`, then `--all`).

Then every step of `tests/readme_recipes.py` that no skip names runs through `bash -c`
(python blocks through this interpreter) in that directory: the section "Keys, ranges,
transactions and revisions" first, on the fresh cluster, since its revisions assume one;
then the rest in README order. A step must exit as its shown output implies (0, or non-zero
for a refusal) and print what it shows (numbers and column widths aside); a python block
must exit 0 with nothing on stderr; a command that runs until Ctrl-C is interrupted once it
printed (the `tail -F | jq` recipe after a second) and must have printed only what the
README shows. Every failure is reported at the end, with its README line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from tests.procs import pid_running
from tests.readme_recipes import Step, followed_ok, steps, unmatched
from zraft.testing.cluster import free_ports, wait_for

ROOT = Path(__file__).resolve().parents[2]
FIRST_SECTION = "### Keys, ranges, transactions and revisions"
STEP_TIMEOUT_S = 30.0
LOCAL_PORTS = (7101, 7102, 7103, 7201, 7202, 7203, 9101, 9102, 9103)
PORTS: dict[int, int] = {}
"""conf/local.toml's port -> the free one this run uses (in the config and the commands)."""


def _as_run(command: str) -> str:
    """`command` with conf/local.toml's ports replaced by this run's."""
    return re.sub(
        r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{PORTS.get(int(m[1]), int(m[1]))}", command
    )


def _checkout(directory: Path) -> dict[str, str]:
    """Lay out the fake checkout; returns the environment the steps run with."""
    (directory / "conf").mkdir()
    config = (ROOT / "conf" / "local.toml").read_text()
    PORTS.clear()
    PORTS.update(zip(LOCAL_PORTS, free_ports(len(LOCAL_PORTS)), strict=True))
    for old, new in PORTS.items():
        config = config.replace(f':{old}"', f':{new}"')
    config += '\n[[client_key]]\nname = "dash"\npublic_key_file = "keys/dash.pub"\nrole = "read"\n'
    (directory / "conf" / "local.toml").write_text(config)
    bin_dir = directory / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("zraft-node", "zraft-client"):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "bin" / name}" "$@"\n')
        shim.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZRAFT_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _section_order(text: str, found: list[Step]) -> list[Step]:
    """FIRST_SECTION's steps, then the others in README order."""
    lines = text.split("\n")
    start = lines.index(FIRST_SECTION) + 1
    end = next(n for n in range(start, len(lines)) if lines[n].startswith("#"))
    inside = [s for s in found if start < s.line <= end + 1]
    return inside + [s for s in found if s not in inside]


def _run(step: Step, directory: Path, env: dict[str, str]) -> list[str]:
    """Run one step; the problems found (empty when it did what the README shows)."""
    if step.kind == "python":
        done = subprocess.run(
            [sys.executable, "-c", _as_run(step.command)],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )
        if done.returncode != 0 or done.stderr:
            return [f"exit {done.returncode}: {done.stderr.strip()[-800:]}"]
        return []
    if step.follow:
        return _follow(step, directory, env)
    done = subprocess.run(
        ["bash", "-c", _as_run(step.command)],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # interleaved, as a terminal shows them
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    printed = done.stdout.splitlines()
    problems = []
    if (done.returncode != 0) != step.expect_failure:
        problems.append(f"exit {done.returncode} (the README shows {step.expected})")
    if step.kind == "console":
        problems += unmatched(step.expected, printed)
    if problems:
        problems.append(f"it printed: {printed}")
    return problems


def _follow(step: Step, directory: Path, env: dict[str, str]) -> list[str]:
    """Run a command that runs until Ctrl-C, interrupt it once it printed, and check what
    it printed (the `tail -F` recipe may print nothing: it runs for a second)."""
    out = directory / "follow.out"
    err = directory / "follow.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-c", _as_run(step.command)],
            cwd=directory,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        if step.expected:
            wait_for(
                lambda: len(out.read_text().splitlines()) >= 2 or proc.poll() is not None,
                STEP_TIMEOUT_S,
                what="two lines",
            )
        else:
            time.sleep(1.0)  # a follower of files: let it read them; nothing is asserted on time
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    printed = out.read_text().splitlines()
    problems = followed_ok(step.expected, printed)
    if step.expected and not printed:
        problems.append("printed nothing")
    errors = err.read_text().strip()
    if errors and not (step.expected and errors == "^C"):
        problems.append(f"stderr: {errors[-800:]}")
    return problems


def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    env = _checkout(tmp_path)
    keygen = ".venv/bin/zraft-node keygen --config conf/local.toml"
    subprocess.run(["bash", "-c", keygen], cwd=tmp_path, env=env, check=True, capture_output=True)
    subprocess.run(
        ["bash", "-c", ".venv/bin/zraft-node keygen --out keys/stranger"],  # admitted by nobody
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    log = (tmp_path / "all.out").open("wb")
    supervisor = subprocess.Popen(
        ["bash", "-c", "exec .venv/bin/zraft-node --config conf/local.toml --all"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pids: list[int] = []
    failures: list[str] = []
    ran = 0
    without_tools = 0
    try:
        wait_for(
            lambda: len(re.findall(r"\(pid \d+\)", (tmp_path / "all.out").read_text())) == 3,
            30,
            what="three nodes started",
            describe=lambda: (tmp_path / "all.out").read_text(),
        )
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", (tmp_path / "all.out").read_text())]
        status = ".venv/bin/zraft-client --config conf/local.toml --timeout 1 status"

        def has_leader() -> bool:
            done = subprocess.run(
                ["bash", "-c", status], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            return any(line.split()[2:3] == ["leader"] for line in done.stdout.splitlines())

        wait_for(has_leader, 30, what="a leader")
        for step in _section_order(text, steps(text)):
            reason = step.skip_reason()
            for tool in ("jq", "curl"):
                if reason is None and f"{tool} " in step.command and not shutil.which(tool):
                    reason = f"{tool} is not installed"  # .ci/run installs it where it can
                    without_tools += 1
            if reason is not None:
                continue
            ran += 1
            problems = _run(step, tmp_path, env)
            failures += [f"README.md:{step.line}: {step.command!r}: {p}" for p in problems]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(15)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()
        log.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pid_running(pid) for pid in pids):
            time.sleep(0.05)
        for pid in pids:
            if pid_running(pid):
                os.kill(pid, signal.SIGKILL)
    if without_tools:
        warnings.warn(f"{without_tools} README steps not run: jq or curl is missing", stacklevel=1)
    assert ran >= 50, f"only {ran} README steps ran: did the parser or a skip rule break?"
    assert not failures, "\n".join(failures)
