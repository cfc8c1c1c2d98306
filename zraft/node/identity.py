"""A cluster's identity: 16 hex digits every member keeps in `<data_dir>/cluster_id` and
names on each of its peer links (`zraft.net.dealers.CLUSTER_PROPERTY`); a peer frame
arriving on a link that names another identity is refused (`bad_frame`, reason
`other_cluster`).

Where it comes from:

- a cluster started from its config derives it from the `[cluster] name` (all its nodes
  agree without talking, and a data directory of an earlier release, which has no file,
  gets the same one at its first start with this release);
- `zraft-node restore` writes a random one into every data directory it builds: the old
  cluster's nodes, whose identity is the old one, cannot talk to the new cluster even
  with the same config and keys;
- a node started with `--join` and an empty data directory has none until a member talks
  to it: it adopts the identity that member's link names, and keeps it.

A link that names no identity (a node of an earlier release, or a joiner that has not
learned it) is accepted, so a cluster can be upgraded one node at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from zraft.net.base import Transport
from zraft.storage import StorageError
from zraft.storage.fsio import sync_dir

FILE_NAME = "cluster_id"
_FORMAT = re.compile(r"[0-9a-f]{16}")


def derived(cluster_name: str) -> str:
    """The identity of a cluster started from its config: from its name."""
    return hashlib.sha256(f"zraft-cluster:{cluster_name}".encode()).hexdigest()[:16]


def read(data_dir: Path) -> str | None:
    """The identity kept in `data_dir`, or None when there is no file.

    Raises:
        StorageError: the file cannot be read or does not hold an identity.
    """
    path = data_dir / FILE_NAME
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"{path}: cannot read the cluster identity: {exc}") from exc
    if not _FORMAT.fullmatch(text):
        raise StorageError(f"{path}: expected 16 hex digits (the cluster identity), got {text!r}")
    return text


def write(data_dir: Path, cluster_id: str) -> None:
    """Keep `cluster_id` in `data_dir`, durably (a temp file renamed into place).

    Raises:
        ValueError: not 16 hex digits.
        StorageError: the file cannot be written.
    """
    if not _FORMAT.fullmatch(cluster_id):
        raise ValueError(f"a cluster identity is 16 hex digits, not {cluster_id!r}")
    path = data_dir / FILE_NAME
    temp = path.with_name(FILE_NAME + ".tmp")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with temp.open("w") as file:
            file.write(cluster_id + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        sync_dir(data_dir)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write the cluster identity: {exc}") from exc


def establish(data_dir: Path, cluster_name: str, *, joining: bool) -> str:
    """This node's identity at start: the one kept, else (unless it is a joiner, which
    learns it: "") the one derived from the cluster's name, which is then kept.

    Raises:
        StorageError: the file is unreadable or cannot be written.
    """
    kept = read(data_dir)
    if kept is not None or joining:
        return kept or ""
    cluster_id = derived(cluster_name)
    write(data_dir, cluster_id)
    return cluster_id


class Identity:
    """A node's cluster identity, as `establish` found it, adopted once learned (a joiner).

    Args:
        data_dir: where it is kept.
        cluster_id: the identity ("" until a joiner learns it).
    """

    def __init__(self, data_dir: Path, cluster_id: str) -> None:
        self.data_dir = data_dir
        self.cluster_id = cluster_id

    def learn(self, transport: Transport) -> None:
        """Adopt the identity a member's link named, if none is known yet (called once a
        tick: links opened before name none, which is accepted)."""
        if not self.cluster_id and transport.learned_cluster_id:
            write(self.data_dir, transport.learned_cluster_id)
            self.cluster_id = transport.learned_cluster_id
            transport.set_cluster_id(self.cluster_id)
