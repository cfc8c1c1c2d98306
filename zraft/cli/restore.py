"""`zraft-node restore`: build a new cluster's data directories from a backup.

    zraft-node restore --from FILE --config NEW.toml

Every node of NEW.toml gets the backup's state as its snapshot, with NEW.toml's members
and endpoints and a new cluster identity (`zraft.node.backup.restore_cluster`); then start
the nodes as usual (`zraft-node --config NEW.toml --id n1`, or `--all`). The data
directories must not exist or be empty. Nothing is written when the backup is unusable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from zraft.config import ConfigError, load
from zraft.net.security import SecurityError
from zraft.node.backup import describe_backup, restore_cluster
from zraft.storage import StorageError
from zraft.storage.backup import BackupError


def build_parser() -> argparse.ArgumentParser:
    """The command line of `zraft-node restore`."""
    parser = argparse.ArgumentParser(
        prog="zraft-node restore",
        description="Build the data directories of the nodes of a (new) cluster config "
        "from a backup made with `zraft-client backup`.",
    )
    parser.add_argument(
        "--from", dest="source", type=Path, required=True, metavar="FILE", help="the backup"
    )
    parser.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the new cluster's config"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Entry point: 0 restored, 1 the backup or a write failed, 2 usage or config errors."""
    args = build_parser().parse_args(argv)
    try:
        cluster = load(args.config)
        info = describe_backup(args.source)
        restored = restore_cluster(args.source, cluster)
    except (ConfigError, SecurityError, ValueError) as exc:
        print(f"zraft-node restore: {exc}", file=sys.stderr)
        return 2
    except (BackupError, StorageError) as exc:
        print(f"zraft-node restore: {exc}", file=sys.stderr)
        return 1
    nodes = ", ".join(cluster.node_ids)
    print(
        f"restored {args.source} (index {restored.index}, term {restored.term}, revision "
        f"{info['revision']}, {info['keys']} keys, backed up from {info['node']} of "
        f"{info['cluster'] or '?'}) into the data directories of {nodes}; new cluster "
        f"identity {restored.cluster_id}"
    )
    print(f"start the nodes: zraft-node --config {args.config} --id NODE (or --all)")
    return 0
