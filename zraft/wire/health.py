"""Whether a node is healthy, judged from its `status` view: one rule for the node's
`GET /health` and for `zraft-client endpoint health`, so both always agree.

A node is healthy when it knows a leader, has applied what it knows committed (within
`MAX_APPLY_LAG` entries: etcd's bound between its applied and committed indexes) and has
no alarm raised (a raised `nospace` refuses writes that grow the store). What is wrong
is said in words, one reason each, for a person reading a probe's body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_APPLY_LAG = 5000
"""Entries a healthy node's applied index may trail its commit index by."""


def health_problems(status: Mapping[str, Any]) -> list[str]:
    """What keeps the node with this `status` view from being healthy (empty: healthy)."""
    problems = []
    if not status.get("leader"):
        problems.append("no leader: this node cannot serve linearizable requests")
    commit = int(status.get("commit_index") or 0)
    applied = int(status.get("applied_index") or 0)
    if commit - applied > MAX_APPLY_LAG:
        problems.append(
            f"applying lags: applied index {applied} is {commit - applied} entries behind "
            f"the commit index {commit} (at most {MAX_APPLY_LAG})"
        )
    alarms = [str(a) for a in status.get("alarms") or ()]
    if alarms:
        problems.append(f"alarm raised: {', '.join(alarms)} (see `zraft-client alarm list`)")
    return problems
