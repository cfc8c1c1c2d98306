"""`zraft-client endpoint health|status`: every node of the config (or `--endpoint`), each
asked on its own, as `etcdctl endpoint health|status` shows them.

`health` judges each node's `status` view with the rule its `GET /health` uses
(`zraft.wire.health`): a leader known, applying within bounds, no alarm. It prints
`ENDPOINT is healthy: took = 1.2ms` or `ENDPOINT is unhealthy: REASONS`, and exits 1 when
any node is unhealthy or did not answer (3 when none answered). `status` prints one row
per node: its id, version, store size, whether it leads or learns, term, commit and
applied indexes and its alarms or why it did not answer (`-w table` aligned with a header,
`-w json` one object).
"""

from __future__ import annotations

import argparse
from typing import Any

from zraft.cli import render
from zraft.cli.handlers import STATUS_TIMEOUT_S, CommandContext
from zraft.cli.usage import EXIT_AUTH, EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE
from zraft.client.probe import probe_status
from zraft.client.reply import StatusProbe
from zraft.wire.health import health_problems

COLUMNS = (
    "endpoint",
    "id",
    "version",
    "store size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "errors",
)


def endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """`endpoint health|status`."""
    parser.add_argument("action", choices=("health", "status"), metavar="health|status")


def endpoint(ctx: CommandContext, args: argparse.Namespace) -> int:
    """Probe every node; print its health or its status."""
    target = ctx.target
    probes = probe_status(
        target.endpoints, timeout=target.timeout or STATUS_TIMEOUT_S, curve=target.curve
    )
    if all(p.problem and p.problem.startswith("refused") for p in probes):
        detail = "; ".join(f"{p.endpoint}: {p.problem}" for p in probes)
        ctx.auth_failed(f"endpoint: authentication failed at every node ({detail})")
        return EXIT_AUTH
    if args.action == "health":
        return _health(ctx, probes)
    rows = [_status_row(p) for p in probes]
    if ctx.write_out == "json":
        ctx.out_json({"ok": any(p.reachable for p in probes), "endpoints": rows})
    elif ctx.write_out == "table":
        cells = [[_shown(row[c]) for c in COLUMNS] for row in rows]
        for line in render.aligned([[c.upper() for c in COLUMNS], *cells]):
            ctx.out(line)
    else:
        for row in rows:
            ctx.out(", ".join(_shown(row[c]) for c in COLUMNS))
    return EXIT_OK if any(p.reachable for p in probes) else EXIT_UNAVAILABLE


def _health(ctx: CommandContext, probes: list[StatusProbe]) -> int:
    results = []
    for probe in probes:
        status = probe.reply.status if probe.reply is not None else None
        if status is None:
            problems = [probe.problem or "no status in the reply"]
        else:
            problems = health_problems(status)
        results.append(
            {
                "endpoint": probe.endpoint,
                "health": not problems,
                "took_ms": round(probe.took_s * 1000, 1) if probe.reachable else None,
                "error": "; ".join(problems) or None,
            }
        )
    if ctx.write_out == "json":
        ctx.out_json(results)
    for result in results if ctx.write_out != "json" else ():
        if result["health"]:
            ctx.out(f"{result['endpoint']} is healthy: took = {result['took_ms']}ms")
        else:
            ctx.fail(f"{result['endpoint']} is unhealthy: {result['error']}")
    if not any(p.reachable for p in probes):
        return EXIT_UNAVAILABLE
    return EXIT_OK if all(r["health"] for r in results) else EXIT_FAILED


def _status_row(probe: StatusProbe) -> dict[str, Any]:
    status = (probe.reply.status if probe.reply is not None else None) or {}
    alarms = ", ".join(f"alarm:{a}" for a in status.get("alarms", ()))
    return {
        "endpoint": probe.endpoint,
        "id": status.get("id"),
        "version": status.get("version"),
        "store size": render.human_bytes(status["store_bytes"])
        if "store_bytes" in status
        else None,
        "is leader": status.get("role") == "leader" if status else None,
        "is learner": status.get("id") in status.get("learners", ()) if status else None,
        "raft term": status.get("term"),
        "raft index": status.get("commit_index"),
        "raft applied index": status.get("applied_index"),
        "errors": probe.problem or alarms or None,
    }


def _shown(value: Any) -> str:
    """A cell as etcdctl prints it: booleans in lower case, `-` for nothing."""
    return str(value).lower() if isinstance(value, bool) else render.text_cell(value)
