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

Optional `[cluster]` keys and their defaults: `_CLUSTER_DEFAULTS`. Every integer is > 0,
except `snapshot_trailing` and `auto_compaction_retention` (0: none), which may be 0.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time imported where used: a client never needs the core's types
    from zraft.core.types import Membership, NodeId, RaftConfig

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# tcp://HOST:PORT where HOST is a name, an IPv4 address or a bracketed IPv6 address. A
# wildcard host ("*") is refused: peers and clients connect to these same endpoints. This
# is zraft's one endpoint rule: the client library (`zraft.client.check_endpoint`) uses it
# too, so a client never sends an endpoint that a node would then refuse.
_ENDPOINT_RE = re.compile(
    r"tcp://(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})"
)

_CLUSTER_REQUIRED = ("name", "heartbeat_ms", "election_timeout_ms")
_CLUSTER_DEFAULTS: dict[str, Any] = {
    "request_timeout_ms": 5000,
    "log_dir": "logs",
    "tick_ms": 10,
    "max_key_bytes": 4096,
    "max_value_bytes": 1 << 20,
    "snapshot_entries": 10_000,
    "snapshot_bytes": 64 << 20,
    "snapshot_retain": 2,
    "snapshot_trailing": 1000,
    "wal_segment_bytes": 64 << 20,
    "max_txn_ops": 128,
    "auto_compaction_retention": 10_000,
    "quota_bytes": 2 << 30,
}
_MAY_BE_ZERO = frozenset({"snapshot_trailing", "auto_compaction_retention"})
COMPACTION_MODES = ("revision", "periodic")
"""Values of `[cluster] auto_compaction_mode`: keep the last `auto_compaction_retention`
revisions, or the revisions of the last `auto_compaction_retention` seconds."""
_NODE_KEYS = ("id", "peer", "client", "data_dir")
_NODE_KEY_OPTIONS = ("public_key", "public_key_file", "secret_key_file", "extra_public_keys")
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
    return _Parser(path).parse(data)


class _Parser:
    """Validates the parsed TOML of one file; every error names `self.path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = base_dir_for(path)

    def fail(self, key: str | None, message: str) -> ConfigError:
        """The error to raise for `key`."""
        return ConfigError(self.path, key, message)

    def parse(self, data: dict[str, Any]) -> ClusterConfig:
        """Turn the whole document into a `ClusterConfig`."""
        self.check_keys(data, "", required=("cluster",), optional=("node", "client_key", "client"))
        cluster = data["cluster"]
        if not isinstance(cluster, dict):
            raise self.fail("cluster", f"expected a table [cluster], got {_describe(cluster)}")
        self.check_keys(
            cluster,
            "cluster.",
            _CLUSTER_REQUIRED,
            (*_CLUSTER_DEFAULTS, "security", "auto_compaction_mode"),
        )
        values = {**_CLUSTER_DEFAULTS, **cluster}
        security = self.choice(cluster, "cluster.security", SECURITY_MODES, "curve")
        compaction = self.choice(
            cluster, "cluster.auto_compaction_mode", COMPACTION_MODES, "revision"
        )

        name = self.string(values, "cluster.name")
        ints = {
            key: self.positive_int(values, f"cluster.{key}", zero_ok=key in _MAY_BE_ZERO)
            for key in _CLUSTER_DEFAULTS
            if key != "log_dir"
        }
        heartbeat_ms = self.positive_int(values, "cluster.heartbeat_ms")
        election = self.election_range(values["election_timeout_ms"], heartbeat_ms)
        self.check_ticks(ints["tick_ms"], heartbeat_ms, election)
        log_dir = self.base / self.string(values, "cluster.log_dir")
        nodes = self.nodes(data.get("node", []), secured=security == "curve")
        return ClusterConfig(
            path=self.path.resolve(),
            base_dir=self.base,
            name=name,
            heartbeat_ms=heartbeat_ms,
            election_timeout_ms=election,
            log_dir=log_dir,
            nodes=nodes,
            **ints,
            security=security,
            auto_compaction_mode=compaction,
            client_keys=self.client_keys(data.get("client_key", [])),
            client_secret_key_file=self.client_table(data.get("client", {})),
        )

    def nodes(self, raw: Any, *, secured: bool) -> tuple[NodeConfig, ...]:
        """Validate the `[[node]]` tables, then their uniqueness across the cluster."""
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail("node", "expected [[node]] tables")
        if not raw:
            raise self.fail("node", "expected at least one [[node]] table")
        nodes = tuple(
            self.node(table, f"node[{i}]", secured=secured) for i, table in enumerate(raw)
        )
        seen: dict[Any, str] = {}
        for i, node in enumerate(nodes):
            # An endpoint is either node's peer or client: all of them must be distinct.
            for field, value in (
                ("id", node.id),
                ("peer", node.peer.lower()),  # host names are case-insensitive
                ("client", node.client.lower()),
                ("data_dir", node.data_dir),
            ):
                group = "endpoint" if field in ("peer", "client") else field
                key = f"node[{i}].{field}"
                if (group, value) in seen:
                    raise self.fail(
                        key, f"duplicate {group} {value!s}, also at {seen[group, value]}"
                    )
                seen[group, value] = key
        return nodes

    def node(self, table: dict[str, Any], prefix: str, *, secured: bool) -> NodeConfig:
        """Validate one `[[node]]` table (its keys are required when `secured`)."""
        self.check_keys(table, prefix + ".", _NODE_KEYS, _NODE_KEY_OPTIONS)
        node_id = self.string(table, f"{prefix}.id")
        if not _ID_RE.fullmatch(node_id):
            raise self.fail(
                f"{prefix}.id",
                "expected 1-64 characters of A-Z a-z 0-9 _ . -, a letter or digit first, "
                f"got {node_id!r}",
            )
        peer = self.endpoint(table, f"{prefix}.peer")
        client = self.endpoint(table, f"{prefix}.client")
        data_dir = self.base / self.string(table, f"{prefix}.data_dir")
        public_key = self.key_ref(table, prefix, required=secured)
        secret = None
        if "secret_key_file" in table:
            secret = self.base / self.string(table, f"{prefix}.secret_key_file")
        elif secured:
            raise self.fail(
                f"{prefix}.secret_key_file",
                'missing required key (security = "curve"): the path of this node\'s '
                "secret key file, e.g. keys/" + node_id + ".key",
            )
        extra = self.key_list(table, f"{prefix}.extra_public_keys")
        return NodeConfig(
            id=node_id,
            peer=peer,
            client=client,
            data_dir=data_dir,
            public_key=public_key,
            secret_key_file=secret,
            extra_public_keys=extra,
        )

    def key_ref(self, table: dict[str, Any], prefix: str, *, required: bool) -> KeyRef | None:
        """`public_key` (inline Z85) or `public_key_file` (a path), exactly one of them."""
        if "public_key" in table and "public_key_file" in table:
            raise self.fail(
                f"{prefix}.public_key", "give either public_key or public_key_file, not both"
            )
        if "public_key" in table:
            key = f"{prefix}.public_key"
            return KeyRef(text=self.z85(table["public_key"], key), where=key)
        if "public_key_file" in table:
            key = f"{prefix}.public_key_file"
            return KeyRef(file=self.base / self.string(table, key), where=key)
        if required:
            raise self.fail(
                f"{prefix}.public_key",
                'missing required key (security = "curve"): public_key = "<40 Z85 '
                'characters>" or public_key_file = "keys/NAME.pub"',
            )
        return None

    def z85(self, value: Any, key: str) -> str:
        """A 40-character Z85 public key."""
        if not isinstance(value, str) or not Z85_KEY_RE.fullmatch(value):
            shown = f"{len(value)} characters" if isinstance(value, str) else _describe(value)
            raise self.fail(key, f"expected a Z85 public key (40 characters), got {shown}")
        return value

    def key_list(self, table: dict[str, Any], key: str) -> tuple[str, ...]:
        """An optional array of Z85 public keys."""
        value = table.get(key.rpartition(".")[2], [])
        if not isinstance(value, list):
            raise self.fail(key, f"expected an array of Z85 public keys, got {_describe(value)}")
        return tuple(self.z85(item, f"{key}[{i}]") for i, item in enumerate(value))

    def client_keys(self, raw: Any) -> tuple[ClientKeyConfig, ...]:
        """Validate the `[[client_key]]` tables."""
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail("client_key", "expected [[client_key]] tables")
        out = []
        for i, table in enumerate(raw):
            prefix = f"client_key[{i}]"
            optional = ("public_key", "public_key_file", "name")
            self.check_keys(table, prefix + ".", ("role",), optional)
            ref = self.key_ref(table, prefix, required=True)
            assert ref is not None
            role = self.choice(table, f"{prefix}.role", CLIENT_ROLES, None)
            name = self.string(table, f"{prefix}.name") if "name" in table else None
            out.append(ClientKeyConfig(public_key=ref, role=role, name=name))
        return tuple(out)

    def client_table(self, raw: Any) -> Path | None:
        """The `[client]` table: the secret key file zraft-client uses by default."""
        if not isinstance(raw, dict):
            raise self.fail("client", f"expected a table [client], got {_describe(raw)}")
        self.check_keys(raw, "client.", (), ("secret_key_file",))
        if "secret_key_file" not in raw:
            return None
        return self.base / self.string(raw, "client.secret_key_file")

    def choice(
        self, table: dict[str, Any], key: str, allowed: tuple[str, ...], default: str | None
    ) -> str:
        """One of `allowed` at `key` (`default` when absent and not None)."""
        name = key.rpartition(".")[2]
        if name not in table and default is not None:
            return default
        value = table[name]
        if value not in allowed:
            options = " or ".join(f'"{a}"' for a in allowed)
            raise self.fail(key, f"expected {options}, got {_describe(value)}")
        return str(value)

    def endpoint(self, table: dict[str, Any], key: str) -> str:
        """A `tcp://HOST:PORT` string with 1 <= PORT <= 65535."""
        value = self.string(table, key)
        if not is_endpoint(value):
            raise self.fail(key, f"expected tcp://HOST:PORT with PORT in 1..65535, got {value!r}")
        return value

    def election_range(self, value: Any, heartbeat_ms: int) -> tuple[int, int]:
        """`[min, max]` milliseconds with heartbeat_ms < min <= max."""
        key = "cluster.election_timeout_ms"
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(_is_int(v) and v > 0 for v in value)
        ):
            raise self.fail(key, f"expected [min, max], two positive integers, got {value!r}")
        low, high = value
        if low > high:
            raise self.fail(key, f"expected [min, max] with min <= max, got {value!r}")
        if heartbeat_ms >= low:
            # §5.6: broadcastTime << electionTimeout, or followers time out between beats.
            raise self.fail(
                key, f"expected a minimum above cluster.heartbeat_ms ({heartbeat_ms}), got {low}"
            )
        return low, high

    def check_ticks(self, tick_ms: int, heartbeat_ms: int, election: tuple[int, int]) -> None:
        """Durations the core counts in ticks must be whole numbers of ticks."""
        for key, value in (
            ("cluster.heartbeat_ms", heartbeat_ms),
            ("cluster.election_timeout_ms", election[0]),
            ("cluster.election_timeout_ms", election[1]),
        ):
            if value % tick_ms:
                raise self.fail(
                    key, f"expected a multiple of cluster.tick_ms ({tick_ms}), got {value}"
                )

    def check_keys(
        self,
        table: dict[str, Any],
        prefix: str,
        required: tuple[str, ...],
        optional: tuple[str, ...],
    ) -> None:
        """Refuse unknown keys and missing required ones."""
        allowed = (*required, *optional)
        for key in table:
            if key not in allowed:
                raise self.fail(prefix + key, f"unknown key; expected one of: {', '.join(allowed)}")
        for key in required:
            if key not in table:
                raise self.fail(prefix + key, "missing required key")

    def string(self, table: dict[str, Any], key: str) -> str:
        """The non-empty string at `key` (its last part names the entry in `table`)."""
        value = table[key.rpartition(".")[2]]
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {_describe(value)}")
        return value

    def positive_int(self, table: dict[str, Any], key: str, *, zero_ok: bool = False) -> int:
        """The integer > 0 (or >= 0 with `zero_ok`) at `key` (booleans refused)."""
        value = table[key.rpartition(".")[2]]
        if not _is_int(value) or value < (0 if zero_ok else 1):
            wanted = "an integer >= 0" if zero_ok else "a positive integer"
            raise self.fail(key, f"expected {wanted}, got {_describe(value)}")
        return int(value)


def _is_int(value: Any) -> bool:
    """True for TOML integers; False for booleans, which Python counts as ints."""
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    """A value and its TOML type, for error messages."""
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    kind = kinds.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)
    return f"{kind} {value!r}"
