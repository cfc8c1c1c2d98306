"""How a benchmark runs from the command line: in a scratch directory kept only when it
fails (or when asked), with its report printed as a table or as JSON."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def say(line: str) -> None:
    """A progress line, on stderr (stdout carries the report)."""
    print(line, file=sys.stderr, flush=True)


def run_in_workdir(
    name: str,
    keep: Path | None,
    work: Callable[[Path], dict[str, Any]],
    table: Callable[[dict[str, Any]], list[str]],
    *,
    as_json: bool,
    failures: tuple[type[BaseException], ...],
) -> int:
    """Run `work` in `keep` or a fresh temporary directory and print its report; returns
    the exit code (1 when `work` raised one of `failures`: the files are kept then)."""
    directory = keep or Path(tempfile.mkdtemp(prefix=f"zraft-{name}-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        report = work(directory)
    except failures as exc:
        print(f"{name}: failed: {exc}; files kept in {directory}", file=sys.stderr)
        return 1
    if keep is None:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(report) if as_json else "\n".join(table(report)))
    return 0
