"""Validating a cluster configuration's TOML document into `zraft.config` values.

`zraft.config.load` reads the file and hands the document here; the rules it keeps (a
closed schema, path resolution, milliseconds to ticks) are described in `zraft.config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zraft.config import (
    CLIENT_ROLES,
    COMPACTION_MODES,
    SECURITY_MODES,
    Z85_KEY_RE,
    ClientKeyConfig,
    ClusterConfig,
    ConfigError,
    KeyRef,
    NodeConfig,
    base_dir_for,
    http_listen_address,
    is_endpoint,
)

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CLUSTER_REQUIRED = ("name", "heartbeat_ms", "election_timeout_ms")
CLUSTER_DEFAULTS: dict[str, Any] = {
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
MAY_BE_ZERO = frozenset({"snapshot_trailing", "auto_compaction_retention"})
NODE_KEYS = ("id", "peer", "client", "data_dir")
NODE_KEY_OPTIONS = (
    "public_key",
    "public_key_file",
    "secret_key_file",
    "extra_public_keys",
    "metrics",
)


def parse_document(path: Path, data: dict[str, Any]) -> ClusterConfig:
    """Validate the parsed TOML `data` of the file at `path`.

    Raises:
        ConfigError: a rule of the schema is broken (the message names file and key).
    """
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
            CLUSTER_REQUIRED,
            (*CLUSTER_DEFAULTS, "security", "auto_compaction_mode"),
        )
        values = {**CLUSTER_DEFAULTS, **cluster}
        security = self.choice(cluster, "cluster.security", SECURITY_MODES, "curve")
        compaction = self.choice(
            cluster, "cluster.auto_compaction_mode", COMPACTION_MODES, "revision"
        )

        name = self.string(values, "cluster.name")
        ints = {
            key: self.positive_int(values, f"cluster.{key}", zero_ok=key in MAY_BE_ZERO)
            for key in CLUSTER_DEFAULTS
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
                ("metrics", http_listen_address(node.metrics).lower() if node.metrics else None),
                ("data_dir", node.data_dir),
            ):
                if value is None:
                    continue
                group = "endpoint" if field in ("peer", "client", "metrics") else field
                key = f"node[{i}].{field}"
                if (group, value) in seen:
                    raise self.fail(
                        key, f"duplicate {group} {value!s}, also at {seen[group, value]}"
                    )
                seen[group, value] = key
        return nodes

    def node(self, table: dict[str, Any], prefix: str, *, secured: bool) -> NodeConfig:
        """Validate one `[[node]]` table (its keys are required when `secured`)."""
        self.check_keys(table, prefix + ".", NODE_KEYS, NODE_KEY_OPTIONS)
        node_id = self.string(table, f"{prefix}.id")
        if not ID_RE.fullmatch(node_id):
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
        metrics = None
        if "metrics" in table:
            metrics = self.string(table, f"{prefix}.metrics")
            try:
                http_listen_address(metrics)
            except ValueError as exc:
                raise self.fail(f"{prefix}.metrics", str(exc)) from None
        return NodeConfig(
            id=node_id,
            peer=peer,
            client=client,
            data_dir=data_dir,
            public_key=public_key,
            secret_key_file=secret,
            extra_public_keys=extra,
            metrics=metrics,
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
