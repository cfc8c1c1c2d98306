"""The test-only fault control file (`zraft.net.faults.FaultFile`)."""

from __future__ import annotations

import os
from pathlib import Path

from zraft.net.faults import CHECK_EVERY_TICKS, FaultFile, FaultSetting

PEERS = frozenset({"n2", "n3"})


def poll_once(watch: FaultFile) -> FaultSetting | str | None:
    """Poll through one whole check period; return what the check said."""
    result: FaultSetting | str | None = None
    for _ in range(CHECK_EVERY_TICKS):
        outcome = watch.poll()
        if outcome is not None:
            result = outcome
    return result


def test_missing_file_means_no_fault_and_changes_are_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "n1.faults.json"
    watch = FaultFile(path, PEERS)
    assert poll_once(watch) == FaultSetting()
    path.write_text('{"block": ["n2"]}')
    assert poll_once(watch) == FaultSetting(frozenset({"n2"}))
    assert poll_once(watch) is None, "an unchanged file is not re-read"
    path.write_text('{"block": []}')
    os.utime(path, ns=(1, 1))  # a new stamp even within one mtime granule
    assert poll_once(watch) == FaultSetting()
    path.write_text('{"loss": 0.25}')
    assert poll_once(watch) == FaultSetting(frozenset(), 0.25)


def test_bad_files_are_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "n1.faults.json"
    watch = FaultFile(path, PEERS)
    path.write_text("{oops")
    assert isinstance(poll_once(watch), str)
    path.write_text('{"block": ["n9"]}')
    outcome = poll_once(watch)
    assert isinstance(outcome, str) and "n9" in outcome
    path.write_text('{"block": "n2"}')  # a string is iterable: still refused (n, 2 unknown)
    assert isinstance(poll_once(watch), str)
    for padding, bad_loss in enumerate(("1.5", "-0.1", "true", '"lots"')):
        # Padding changes the size, so the watcher sees a change within one mtime granule.
        path.write_text(f'{{"loss": {bad_loss}}}' + " " * padding)
        assert isinstance(poll_once(watch), str), bad_loss
