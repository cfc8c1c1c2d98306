"""A one-shot `zraft-client` loads only what a key-value command needs: not the node, the
store, the storage or the Raft core (a client never runs them), nor the libraries of
commands it does not run. Each costs a `zraft-client get` milliseconds of start-up
(`python -m zraft.bench.oneshot` measures the whole call)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NOT_FOR_A_GET = (
    "zraft.node",
    "zraft.state",
    "zraft.storage",
    "zraft.core",
    "zraft.bench",
    "hashlib",
    "secrets",
    "subprocess",
    "asyncio",
    "prometheus_client",
    "h11",
)


def test_the_client_entry_module_loads_nothing_a_get_does_not_need() -> None:
    code = "import sys, zraft.cli.client; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    unwanted = [m for m in loaded if m.startswith(NOT_FOR_A_GET)]
    assert not unwanted, f"imported at start: {unwanted}"


def test_commands_that_send_nothing_need_no_cluster(tmp_path: Path) -> None:
    """`help` and `backup-status` run anywhere; a command that talks to nodes still asks
    for a config (none is found in an empty directory)."""
    client = [sys.executable, str(Path(__file__).resolve().parents[1] / "bin" / "zraft-client")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZRAFT_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*client, *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

    helped = run("help")
    assert helped.returncode == 0 and "backup-status FILE" in helped.stdout
    missing = run("backup-status", "missing.zbk")
    assert missing.returncode == 1 and "missing.zbk: cannot read" in missing.stderr
    needs = run("get", "k")
    assert needs.returncode == 2 and "give --config FILE" in needs.stderr


def test_commands_that_send_nothing_read_no_config_or_key(tmp_path: Path) -> None:
    """Even where a config exists whose key file does not (a fresh checkout)."""
    (tmp_path / "conf").mkdir()
    config = Path(__file__).resolve().parents[1] / "conf" / "local.toml"
    (tmp_path / "conf" / "local.toml").write_text(config.read_text())
    client = [sys.executable, str(Path(__file__).resolve().parents[1] / "bin" / "zraft-client")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZRAFT_")}
    done = subprocess.run(
        [*client, "backup-status", "missing.zbk"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "missing.zbk: cannot read" in done.stderr
