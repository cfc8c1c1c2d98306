"""Fixtures for tests that run real `bin/zraft-node` processes (marker `integration`).

`make_cluster(n, **options)` builds a `ProcessCluster` in the test's `tmp_path`. Whatever
happens in the test, the finalizer resumes paused nodes, stops every process the cluster
ever started (SIGTERM, bounded wait, SIGKILL, by PID) and closes the client sockets. When
the test failed, each node's last events and stderr tail are printed first, so they show
up in pytest's report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import ClusterFactory, ProcessCluster

INTEGRATION_DIR = Path(__file__).resolve().parent
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()  # phase -> report, per test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in this folder `integration` (deselect with `-m "not integration"`)."""
    del config
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures can tell a failed test."""
    del call
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ClusterFactory]:
    """A factory of process clusters, each in its own folder under `tmp_path`."""
    made: list[ProcessCluster] = []

    def make(n: int = 3, **options: Any) -> ProcessCluster:
        cluster = ProcessCluster(tmp_path / f"cluster{len(made)}", n, **options)
        made.append(cluster)
        return cluster

    yield make
    reports = request.node.stash.get(_REPORTS, {})
    failed = any(report.failed for report in reports.values())
    for cluster in made:
        try:
            if failed:
                print(f"=== {cluster.directory} at teardown\n{cluster.describe()}")
        finally:
            cluster.close()
