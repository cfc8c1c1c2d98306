"""`zraft-client backup FILE [NODE]` and `zraft-client backup-status FILE`.

`backup` asks one node (NODE, else the leader, else the first that answers) for a fresh
snapshot (`snapshot`: answered once the file is durable; with nothing applied since the
newest one, that one) and streams that file with `snapshot_read`, 1 MiB a request, into
`FILE.partial`; it verifies what it received (CRC, structure, the state restoring into a
store), writes the trailer with its SHA-256 and renames the file into place
(`zraft.storage.backup`). Clients may write meanwhile: the backup is the state at the
snapshot's index. If the node replaces that snapshot file before the copy is done (two
newer snapshots), the copy starts again with a fresh one, up to `ATTEMPTS` times. On any
failure the partial file is removed: a file under the final name is always complete.

`backup-status` verifies a backup and prints what it holds (no cluster is needed).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zraft.cli.handlers import STATUS_TIMEOUT_S, CommandContext, node_client
from zraft.cli.render import human_bytes
from zraft.cli.usage import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, UsageError, exit_code
from zraft.client.probe import probe_status
from zraft.client.reply import ClientTimeout, Reply
from zraft.client.sync import Client

if TYPE_CHECKING:
    from zraft.storage.backup import BackupWriter

# The node's and the storage's modules are imported in the handlers: loading them costs a
# one-shot `zraft-client get` tens of milliseconds it does not need.

ATTEMPTS = 3
"""Fresh snapshots a backup tries before it gives up (each replaced before copied)."""

READ_RETRIES = 3
"""Times one chunk is asked for again after no reply (reads are idempotent)."""


class _Restart(Exception):
    """The node no longer has the snapshot being copied."""


def backup_arguments(parser: argparse.ArgumentParser) -> None:
    """`backup FILE [NODE]`."""
    parser.add_argument("file", type=Path, metavar="FILE", help="the backup file to write")
    parser.add_argument("node", nargs="?", metavar="NODE", help="a node id (default: leader)")


def status_arguments(parser: argparse.ArgumentParser) -> None:
    """`backup-status FILE`."""
    parser.add_argument("file", type=Path, metavar="FILE")


def backup(ctx: CommandContext, args: argparse.Namespace) -> int:
    """Stream a fresh snapshot of one node into FILE (see the module doc)."""
    from zraft.storage.backup import BackupError, BackupWriter

    target = ctx.target
    endpoint = _source(ctx, args.node)
    if endpoint is None:
        ctx.fail("error: unavailable: no node answered; is the cluster running?")
        return EXIT_UNAVAILABLE
    try:
        writer = BackupWriter(args.file)
    except BackupError as exc:
        raise UsageError(f"error: {exc}") from None
    names = {ep: i for i, ep in target.nodes if i is not None}
    try:
        with node_client(target, endpoint) as client:
            for _ in range(ATTEMPTS):
                try:
                    info = _copy(client, endpoint, writer)
                    break
                except _Restart:
                    writer.restart()
            else:
                message = f"the snapshot changed {ATTEMPTS} times mid-copy"
                raise BackupError(args.file, message)
            contents = _verify(writer)
            info.update(contents, node=names.get(endpoint, endpoint), created=time.time())
            info["cluster"] = target.cluster_name
            writer.finish(info)
    except _Failed as failed:
        writer.abort()
        ctx.fail(f"error: {failed.reply.error_code}: backup: {failed.reply.error_message}")
        return exit_code(failed.reply)
    except ClientTimeout as exc:
        writer.abort()
        ctx.fail(f"error: client_timeout: backup: {exc}")
        return EXIT_UNAVAILABLE
    except (BackupError, OSError) as exc:
        writer.abort()
        ctx.fail(f"error: backup failed, nothing written: {exc}")
        return EXIT_FAILED
    except BaseException:
        writer.abort()
        raise
    if ctx.write_out == "json":
        ctx.out_json({"ok": True, "file": str(args.file), "sha256": writer.sha256, **info})
        return EXIT_OK
    ctx.out(
        f"backup of {info['node']} at index {info['index']} (term {info['term']}, revision "
        f"{info['revision']}, {info['keys']} keys): {human_bytes(writer.snapshot_bytes)} "
        f"in {args.file}, sha256 {writer.sha256[:16]}..."
    )
    return EXIT_OK


class _Failed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.error_message)
        self.reply = reply


def _source(ctx: CommandContext, node: str | None) -> str | None:
    """The endpoint to back up from: NODE's, else the leader's, else the first reachable."""
    target = ctx.target
    if node is not None:
        endpoints = {i: ep for i, ep in target.nodes if i is not None}
        if node not in endpoints:
            known = ", ".join(sorted(endpoints)) or "none"
            raise UsageError(f"backup: unknown node {node!r} (known: {known})")
        return endpoints[node]
    probes = probe_status(target.endpoints, timeout=STATUS_TIMEOUT_S, curve=target.curve)
    answered = [p for p in probes if p.reply is not None and p.reply.status]
    leaders = [p for p in answered if p.reply and (p.reply.status or {}).get("role") == "leader"]
    chosen = (leaders or answered or [None])[0]
    return chosen.endpoint if chosen is not None else None


def _copy(client: Client, endpoint: str, writer: BackupWriter) -> dict[str, Any]:
    """Take a snapshot on the node and copy its file into `writer`.

    Raises:
        _Restart: the node replaced that snapshot before the copy was done.
        _Failed: the node refused.
    """
    taken = client.snapshot(endpoint)
    if not taken.ok:
        raise _Failed(taken)
    index = taken.raw["snapshot"]["index"]
    offset, size = 0, None
    while size is None or offset < size:
        reply = _read(client, endpoint, index, offset)
        if reply.error_code == "conflict":
            raise _Restart
        if not reply.ok:
            raise _Failed(reply)
        described, data = reply.raw["snapshot"], reply.raw["data"]
        size = described["size_bytes"]
        if described["index"] != index or described["offset"] != offset or not data:
            raise _Restart  # not the file asked for (cannot happen with a sound node)
        writer.write(data)
        offset += len(data)
    return {"index": index, "term": described["term"]}


def _read(client: Client, endpoint: str, index: int, offset: int) -> Reply:
    for attempt in range(READ_RETRIES + 1):
        try:
            return client.snapshot_read(endpoint, offset, snapshot_index=index)
        except ClientTimeout:
            if attempt == READ_RETRIES:
                raise
    raise AssertionError("unreachable")


def _verify(writer: BackupWriter) -> dict[str, Any]:
    """What the copied snapshot holds, after checking it in full."""
    from zraft.node.backup import snapshot_contents
    from zraft.storage.backup import BackupError
    from zraft.storage.base import CorruptSnapshotError

    try:
        contents = snapshot_contents(writer.path, writer.read_back())
    except (CorruptSnapshotError, ValueError) as exc:
        raise BackupError(writer.path, f"the copied snapshot does not verify: {exc}") from None
    return {"revision": contents["revision"], "keys": contents["keys"]}


def backup_status(ctx: CommandContext, args: argparse.Namespace) -> int:
    """Verify a backup file and print what it holds."""
    from zraft.node.backup import describe_backup
    from zraft.storage.backup import BackupError

    try:
        info = describe_backup(args.file)
    except BackupError as exc:
        ctx.fail(f"error: {exc}")
        return EXIT_FAILED
    if ctx.write_out == "json":
        ctx.out_json({"ok": True, "file": str(args.file), **info})
        return EXIT_OK
    created = datetime.datetime.fromtimestamp(info["created"], datetime.UTC)
    rows = [
        (
            "file",
            f"{args.file} ({human_bytes(info['file_bytes'])}; checksum and contents verified)",
        ),
        ("cluster", info["cluster"] or "-"),
        ("node", info["node"]),
        ("index", info["index"]),
        ("term", info["term"]),
        ("revision", info["revision"]),
        ("keys", info["keys"]),
        ("created", created.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("sha256", info["sha256"]),
        ("format", f"backup version {info['version']}, store model {info['model']}"),
    ]
    for name, value in rows:
        ctx.out(f"{name + ':':10}{value}")
    return EXIT_OK
