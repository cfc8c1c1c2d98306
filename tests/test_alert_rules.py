"""conf/prometheus.yml and conf/zraft-alerts.yml are valid, and each alert fires when it
should and not before (tests/fixtures/zraft-alerts-test.yml, run by `promtool test rules`).

Needs promtool (Debian: `apt-get install prometheus`); without it these tests skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


@pytest.mark.parametrize(
    ("args", "cwd"),
    [
        (["check", "config", "conf/prometheus.yml"], ROOT),
        (["check", "rules", "conf/zraft-alerts.yml"], ROOT),
        (["test", "rules", "zraft-alerts-test.yml"], ROOT / "tests" / "fixtures"),
    ],
    ids=["config", "rules", "rule-tests"],
)
def test_promtool_accepts(args: list[str], cwd: Path) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
