"""Cluster configuration: load and validate a TOML file into frozen values (DESIGN.md §4).

```toml
[cluster]
name = "local"
heartbeat_ms = 50
election_timeout_ms = [300, 600]
request_timeout_ms = 5000          # optional, default 5000
log_dir = "logs"                   # optional, default "logs"
[[node]]
id = "n1"
peer = "tcp://127.0.0.1:7101"
client = "tcp://127.0.0.1:7201"
data_dir = "data/n1"
```

Optional `[cluster]` keys and their defaults: `zraft.config.parse.CLUSTER_DEFAULTS`. Every
integer is > 0, except `snapshot_trailing` and `auto_compaction_retention` (0: none).
`zraft.config.parse` validates the document; this module holds the values and `load`.

Security (`zraft.net.security` reads the key files; this module only checks the schema):

```toml
[cluster]
security = "curve"                  # the default; "none" turns CURVE off (a warning each start)
[[node]]
public_key_file = "keys/n1.pub"     # or public_key = "<40 Z85 chars>"; required under curve
secret_key_file = "keys/n1.key"     # required under curve; read only by node n1 itself
extra_public_keys = ["<Z85>"]       # optional: also admitted as n1 (key rotation)
[[client_key]]                      # one per admitted client key
public_key_file = "keys/client.pub" # or public_key = "<Z85>"
role = "admin"                      # read | write | admin
name = "ops"                        # optional, for logs
[client]
secret_key_file = "keys/client.key" # optional: the key zraft-client uses by default
```

Rules this module keeps:

- **Closed schema.** Unknown keys or tables, missing required keys, wrong types (a bool is
  not an int) and bad values are refused with a `ConfigError` naming the file, the key
  (`node[1].peer`, indexes count from 0) and what is expected. Nothing is silently ignored:
  a typo must not become a default.
- **Path resolution.** The config file's path is resolved (symlinks followed); its
  *base directory* is the parent of the file's directory if that directory is named
  `conf`, else the file's own directory. So `conf/local.toml` resolves `logs` and
  `data/n1` against the repository root, and a test's `tmp_path/cluster.toml` against
  `tmp_path`. Relative `log_dir` and `data_dir` are joined to the base directory; absolute
  ones are kept.
- **Milliseconds to ticks.** The core counts logical ticks (STYLE.md rule 5); the node
  fires one tick every `tick_ms` (default 10). `heartbeat_ms` and both election bounds
  must be whole multiples of `tick_ms`, and `raft_config()` divides them exactly; the
  heartbeat must be shorter than the minimum election timeout (§5.6).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time imported where used: a client never needs the core's types
    from zraft.core.types import Membership, NodeId, RaftConfig

# tcp://HOST:PORT where HOST is a name, an IPv4 address or a bracketed IPv6 address. A
# wildcard host ("*") is refused: peers and clients connect to these same endpoints. This
# is zraft's one endpoint rule: the client library (`zraft.client.check_endpoint`) uses it
# too, so a client never sends an endpoint that a node would then refuse.
_ENDPOINT_RE = re.compile(
    r"tcp://(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})"
)

COMPACTION_MODES = ("revision", "periodic")
"""Values of `[cluster] auto_compaction_mode`: keep the last `auto_compaction_retention`
revisions, or the revisions of the last `auto_compaction_retention` seconds."""
SECURITY_MODES = ("curve", "none")
"""Values of `[cluster] security`: CURVE on every socket (default), or plaintext."""
CLIENT_ROLES = ("read", "write", "admin")
"""Roles a `[[client_key]]` may have (`zraft.net.security.role_allows` says what each may do)."""
Z85_KEY_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
"""A 32-byte CURVE key in Z85 text: exactly 40 characters of the Z85 alphabet."""


def is_endpoint(value: object) -> bool:
    """Whether `value` is a `tcp://HOST:PORT` endpoint (1 <= PORT <= 65535) zraft accepts.

    The one rule for every endpoint: config files, `--join` flags, `add_member` requests
    (checked by the node) and the client library's endpoints. Anything but a str is not one.
    """
    match = _ENDPOINT_RE.fullmatch(value) if isinstance(value, str) else None
    return match is not None and 1 <= int(match["port"]) <= 65535


def http_listen_address(url: object) -> str:
    """The `tcp://HOST:PORT` to bind for an `http://HOST:PORT` URL (a node's `metrics`).

    Raises:
        ValueError: not an http URL with a host and a port in 1..65535 and nothing else.
    """
    from urllib.parse import urlsplit  # here: only a node with metrics needs it

    parts = urlsplit(url) if isinstance(url, str) else None
    try:
        port = parts.port if parts is not None else None
    except ValueError:
        port = None
    if (
        parts is None
        or parts.scheme != "http"
        or not parts.hostname
        or not port
        or parts.path not in ("", "/")
        or parts.query
        or parts.username
    ):
        raise ValueError(f"expected http://HOST:PORT with PORT in 1..65535, got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"tcp://{host}:{port}"


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid.

    Attributes:
        path: the configuration file.
        key: the offending key (`cluster.heartbeat_ms`, `node[2].peer`), or None for the
            whole file (unreadable, invalid TOML).
        message: what is expected, and what was found.
    """

    def __init__(self, path: Path | str, key: str | None, message: str) -> None:
        self.path = Path(path)
        self.key = key
        self.message = message
        where = f"{self.path}: {key}" if key else str(self.path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class KeyRef:
    """Where a public key comes from: inline Z85 `text`, or a `.pub` `file` (absolute).

    `where` is the config key that named it (`node[1].public_key_file`), for messages.
    `zraft.net.security.resolve` reads it.
    """

    text: str = ""
    file: Path | None = None
    where: str = ""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One `[[node]]` table: the node's id, its endpoints and its (absolute) data directory,
    and its keys (None / empty when the file does not configure them)."""

    id: NodeId
    peer: str
    client: str
    data_dir: Path
    public_key: KeyRef | None = None
    secret_key_file: Path | None = None
    extra_public_keys: tuple[str, ...] = ()
    metrics: str | None = None
    """`http://HOST:PORT` where the node serves `/metrics` and `/health` (None: off)."""


@dataclass(frozen=True, slots=True)
class ClientKeyConfig:
    """One `[[client_key]]` table: an admitted client public key, its role and a name."""

    public_key: KeyRef
    role: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A validated cluster configuration. Build it with `load`; paths are absolute.

    Invariants (checked by `load`): node ids, endpoints and data directories are unique;
    0 < heartbeat_ms < election_timeout_ms[0] <= election_timeout_ms[1]; the three are
    multiples of tick_ms.
    """

    path: Path
    base_dir: Path
    name: str
    heartbeat_ms: int
    election_timeout_ms: tuple[int, int]
    request_timeout_ms: int
    log_dir: Path
    nodes: tuple[NodeConfig, ...]
    tick_ms: int = 10
    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 64 << 20
    snapshot_retain: int = 2  # snapshot files kept; the WAL reaches back to the oldest
    snapshot_trailing: int = 1000  # log entries kept behind a snapshot for slow followers
    wal_segment_bytes: int = 64 << 20  # compaction deletes whole segments of this size
    max_txn_ops: int = 128  # operations per transaction branch
    auto_compaction_retention: int = 10_000  # revisions, or seconds if periodic; 0: off
    auto_compaction_mode: str = "revision"
    quota_bytes: int = 2 << 30  # the store's accounted size (keys, values, history)
    security: str = "curve"
    client_keys: tuple[ClientKeyConfig, ...] = ()
    client_secret_key_file: Path | None = None

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        """Every node's id, in file order."""
        return tuple(n.id for n in self.nodes)

    @property
    def membership(self) -> Membership:
        """The bootstrap membership: every node of the file is a voter."""
        from zraft.core.types import Membership

        return Membership(voters=frozenset(self.node_ids))

    def node(self, node_id: NodeId) -> NodeConfig:
        """The node called `node_id`.

        Raises:
            ConfigError: no node has that id (the message lists the known ids).
        """
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(self.node_ids)
        raise ConfigError(self.path, "node", f"no node with id {node_id!r}; known ids: {known}")

    def peer_ids(self, node_id: NodeId) -> tuple[NodeId, ...]:
        """The ids of every node except `node_id`, in file order.

        Raises:
            ConfigError: `node_id` is not in the file.
        """
        self.node(node_id)
        return tuple(i for i in self.node_ids if i != node_id)

    def log_path(self, node_id: NodeId) -> Path:
        """Where `node_id` writes its events: `<log_dir>/<id>.jsonl` (DESIGN.md §3)."""
        return self.log_dir / f"{self.node(node_id).id}.jsonl"

    def raft_config(self, node_id: NodeId) -> RaftConfig:
        """The core's tunables for `node_id`, with milliseconds converted to ticks.

        Raises:
            ConfigError: `node_id` is not in the file.
        """
        self.node(node_id)
        low_ms, high_ms = self.election_timeout_ms
        from zraft.core.types import RaftConfig

        # `load` guarantees exact division, so no rounding can shrink the gap between the
        # heartbeat and the election timeout.
        return RaftConfig(
            node_id=node_id,
            heartbeat_ticks=self.heartbeat_ms // self.tick_ms,
            election_ticks_min=low_ms // self.tick_ms,
            election_ticks_max=high_ms // self.tick_ms,
        )


def base_dir_for(config_path: Path) -> Path:
    """The directory relative paths in `config_path` resolve against (see the module doc)."""
    directory = config_path.resolve().parent
    return directory.parent if directory.name == "conf" else directory


def load(path: Path | str) -> ClusterConfig:
    """Read and validate a cluster configuration file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or breaks a rule of the schema;
            the message names the file, the key and what is expected.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"invalid TOML: {exc}") from exc
    from zraft.config.parse import parse_document  # here: it imports this package

    return parse_document(path, data)
