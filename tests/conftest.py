"""Shared pytest fixtures and settings."""

from __future__ import annotations

import sys
from pathlib import Path

# Tests import helper modules (tests.sim, tests.logscan) from the repository root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
