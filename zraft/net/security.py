"""CURVE keys: generating, reading and checking them, and the roles of client keys.

zraft secures both of a node's endpoints with CurveZMQ (encryption plus key-based
authentication). This module holds everything about keys that is not socket glue:

- **Key files.** `keygen(prefix)` writes `PREFIX.pub` (the Z85 public key, one line,
  shareable) and `PREFIX.key` (the Z85 secret key, one line after a comment, created
  with mode 0600 and `O_EXCL`, so an existing key is never overwritten). The public key
  is derived from the secret key when a secret file is read, so the two cannot drift.
- **Reading.** `read_secret_key(path)` refuses a secret file that group or others may
  read (the ssh rule), a missing file, or one that is not a single Z85 key, each with a
  message naming the file and what to do. Secrets never appear in messages, reprs or
  logs; only `fingerprint(public_key)` does.
- **Roles.** A client key has a role (`read`, `write` or `admin`), read from the config
  here; which role an op needs is declared with the op (`zraft.wire.ops`).
- **Resolution.** `node_keys(cluster, node_id)` and `client_keys(cluster, ...)` turn the
  key references of a `ClusterConfig` (inline Z85 text or `.pub` files) into the raw
  material the node's sockets and ZAP handler, or a client, need.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.utils.z85

from zraft.config import ClusterConfig, KeyRef, NodeConfig

Z85_KEY_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
"""A 32-byte CURVE key in Z85 text: exactly 40 characters of the Z85 alphabet."""

ENV_CLIENT_KEY = "ZRAFT_CLIENT_KEY"
"""Environment variable naming the client's secret key file (below `--key`, above the config)."""

_SECRET_HEADER = "# zraft CURVE secret key (Z85). Keep it private: mode 0600, never share it.\n"


class SecurityError(ValueError):
    """A key or key file is missing, unreadable, malformed or unsafe.

    The message names the file (or config key) and says what to do. It never contains
    a secret key.
    """


@dataclass(frozen=True, slots=True)
class Keypair:
    """A CURVE keypair in Z85 text (bytes, as pyzmq's socket options take them).

    The secret key is kept out of `repr`, so a keypair in a traceback or a log line
    shows only its public half.
    """

    public: bytes
    secret: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the public key (see `fingerprint`)."""
        return fingerprint(self.public)


def fingerprint(public_key: bytes | str) -> str:
    """A short, stable name for a public key in logs: 8 hex chars of its SHA-256.

    Accepts the Z85 text (40 chars) or the raw 32 bytes a ZAP request carries; both
    give the same fingerprint.
    """
    import hashlib  # here: loading OpenSSL costs a one-shot client call ~3 ms it never needs

    if isinstance(public_key, str):
        public_key = public_key.encode()
    if len(public_key) == 40:
        public_key = zmq.utils.z85.decode(public_key)
    return hashlib.sha256(public_key).hexdigest()[:8]


def is_z85_key(text: str) -> bool:
    """Whether `text` is a 40-character Z85 key."""
    return bool(Z85_KEY_RE.fullmatch(text))


# --- key files ------------------------------------------------------------------------


def keygen(prefix: Path | str) -> tuple[Path, Path]:
    """Write a new keypair: `PREFIX.pub` (public, mode 0644) and `PREFIX.key` (secret, 0600).

    The secret file is created with `O_EXCL` and mode 0600 in one call, so it is never
    readable by others, not even for a moment, and an existing key is never replaced.

    Returns:
        `(public_path, secret_path)`.

    Raises:
        SecurityError: either file already exists, or cannot be written.
    """
    prefix = Path(prefix)
    public_path = prefix.with_name(prefix.name + ".pub")
    secret_path = prefix.with_name(prefix.name + ".key")
    for path in (public_path, secret_path):
        if path.exists():
            raise SecurityError(f"{path}: already exists; refusing to overwrite a key")
    public, secret = zmq.curve_keypair()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_SECRET_HEADER + secret.decode() + "\n")
        public_path.write_text(public.decode() + "\n")
    except OSError as exc:
        raise SecurityError(f"{exc.filename or prefix}: cannot write key: {exc.strerror}") from exc
    return public_path, secret_path


def _key_text(path: Path, what: str) -> str:
    """The single Z85 key in a key file (comment lines starting with # are skipped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecurityError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    lines = [line.strip() for line in text.splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    if len(keys) != 1 or not is_z85_key(keys[0]):
        # Never echo the content: it may be a secret key with a typo.
        raise SecurityError(
            f"{path}: expected one {what} (40 Z85 characters) per file, as zraft-node keygen "
            "writes it"
        )
    return keys[0]


def read_public_key(path: Path | str) -> bytes:
    """Read a `.pub` file: its Z85 public key.

    Raises:
        SecurityError: unreadable or malformed (the message names the file).
    """
    return _key_text(Path(path), "public key").encode()


def read_secret_key(path: Path | str) -> Keypair:
    """Read a `.key` file and derive its public key.

    Raises:
        SecurityError: missing, unreadable, malformed, or readable by group or others
            (fix with `chmod 600 FILE`).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecurityError(f"{path}: cannot read secret key: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(
            f"{path}: secret key file is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    secret = _key_text(path, "secret key").encode()
    return Keypair(public=zmq.curve_public(secret), secret=secret)


def resolve(ref: KeyRef) -> bytes:
    """The Z85 public key a config `KeyRef` names (inline text, or read from its file).

    Raises:
        SecurityError: the file is unreadable or malformed (the message names the config
            key and the file).
    """
    if ref.file is None:
        return ref.text.encode()
    try:
        return read_public_key(ref.file)
    except SecurityError as exc:
        raise SecurityError(f"{ref.where}: {exc}") from None


# --- what a node and a client need ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One admitted client key: its role and a name for logs (the fingerprint if unnamed)."""

    role: str
    name: str


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """The CURVE material of one node.

    Attributes:
        own: this node's keypair (its server key, and its client key towards peers).
        peer_server_keys: peer id -> the public key its peer ROUTER serves with.
        peer_ids_by_key: raw 32-byte public key -> the member id it authenticates as
            (every node's `public_key` and `extra_public_keys`, this node's own included).
        clients_by_key: raw 32-byte public key -> the `ClientKey` it authenticates as.
    """

    own: Keypair
    peer_server_keys: Mapping[str, bytes]
    peer_ids_by_key: Mapping[bytes, str]
    clients_by_key: Mapping[bytes, ClientKey]


def _raw(z85_key: bytes) -> bytes:
    return zmq.utils.z85.decode(z85_key)


def raw_key(z85_key: bytes) -> bytes:
    """The 32 raw bytes of a Z85 public key (how ZAP reports a connecting key)."""
    return _raw(z85_key)


def public_key_text(node: NodeConfig) -> str:
    """A configured node's public key as Z85 text ("" if it has none configured).

    Raises:
        SecurityError: the key file is unreadable or malformed.
    """
    return resolve(node.public_key).decode() if node.public_key is not None else ""


def is_public_key(text: str) -> bool:
    """Whether `text` is a Z85 CURVE public key (40 characters, 32 bytes decoded)."""
    if len(text) != 40:
        return False
    try:
        return len(zmq.utils.z85.decode(text.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError, KeyError, IndexError):
        return False


def node_keys(cluster: ClusterConfig, node_id: str, me: NodeConfig | None = None) -> NodeKeys:
    """Read and cross-check the keys `node_id` needs to run with `security = "curve"`.

    `me` describes a node the file does not name (one started with `--join`): its public
    key is the one its secret key file derives.

    Raises:
        SecurityError: a key file is missing, unsafe or malformed; this node's secret key
            does not match its configured public key; or one public key is listed twice
            (two members, or a member and a client, must never share a key).
    """
    me = me if me is not None else cluster.node(node_id)
    if me.secret_key_file is None:
        raise SecurityError(f"{cluster.path}: node {node_id!r} has no secret key configured")
    own = read_secret_key(me.secret_key_file)
    configured = resolve(me.public_key) if me.public_key is not None else own.public
    if own.public != configured:
        raise SecurityError(
            f"{me.secret_key_file}: this secret key belongs to public key "
            f"{fingerprint(own.public)}, but the config names {fingerprint(configured)} "
            f"for node {node_id!r} ({me.public_key.where})"
        )
    owners: dict[bytes, str] = {}

    def claim(key: bytes, owner: str) -> None:
        raw = _raw(key)
        if raw in owners and owners[raw] != owner:
            raise SecurityError(
                f"{cluster.path}: public key {fingerprint(key)} is listed for both "
                f"{owners[raw]} and {owner}"
            )
        owners[raw] = owner

    server_keys: dict[str, bytes] = {}
    peer_ids: dict[bytes, str] = {}
    for node in cluster.nodes:
        assert node.public_key is not None  # config.load requires it under curve
        key = resolve(node.public_key)
        if node.id != node_id:
            server_keys[node.id] = key
        for extra in (key, *(e.encode() for e in node.extra_public_keys)):
            claim(extra, f"node {node.id}")
            peer_ids[_raw(extra)] = node.id
    if node_id not in cluster.node_ids:  # a joining node: its own key names it too
        claim(own.public, f"node {node_id}")
        peer_ids[_raw(own.public)] = node_id
    clients: dict[bytes, ClientKey] = {}
    for entry in cluster.client_keys:
        key = resolve(entry.public_key)
        name = entry.name or fingerprint(key)
        claim(key, f"client key {name}")
        clients[_raw(key)] = ClientKey(role=entry.role, name=name)
    return NodeKeys(own, server_keys, peer_ids, clients)


@dataclass(frozen=True, slots=True)
class ClientCurve:
    """What a client needs to reach CURVE-secured nodes.

    Attributes:
        own: the client's keypair.
        server_keys: client endpoint -> the public key of the node serving it.
    """

    own: Keypair
    server_keys: Mapping[str, bytes]

    def apply(self, sock: zmq.Socket[bytes], endpoint: str) -> None:
        """Make `sock` a CURVE client of the node at `endpoint` (before `connect`).

        Raises:
            SecurityError: no server key is known for `endpoint`.
        """
        server = self.server_keys.get(endpoint)
        if server is None:
            raise SecurityError(
                f"no server key known for {endpoint}: it is not a client endpoint of the "
                "cluster config"
            )
        sock.curve_serverkey = server
        sock.curve_publickey = self.own.public
        sock.curve_secretkey = self.own.secret


def client_key_file(cluster: ClusterConfig | None, flag: Path | str | None) -> Path | None:
    """Which client secret key file to use: `--key`, else `$ZRAFT_CLIENT_KEY`, else the
    config's `[client] secret_key_file`, else None."""
    if flag:
        return Path(flag)
    env = os.environ.get(ENV_CLIENT_KEY)
    if env:
        return Path(env)
    if cluster is not None and cluster.client_secret_key_file is not None:
        return cluster.client_secret_key_file
    return None


def client_curve(cluster: ClusterConfig, key_file: Path | str | None = None) -> ClientCurve | None:
    """The CURVE setup of a client of `cluster`; None when the cluster runs `security = "none"`.

    Args:
        key_file: the secret key file (`--key`); when None, `$ZRAFT_CLIENT_KEY` or the
            config's `[client] secret_key_file` (see `client_key_file`).

    Raises:
        SecurityError: the cluster is secured and no key file is given anywhere, or the
            key file is missing, unsafe or malformed.
    """
    if cluster.security == "none":
        return None
    path = client_key_file(cluster, key_file)
    if path is None:
        raise SecurityError(
            f'{cluster.path}: the cluster requires a client key (security = "curve"); give '
            f"--key FILE, set {ENV_CLIENT_KEY}=FILE, or set [client] secret_key_file"
        )
    own = read_secret_key(path)
    servers: dict[str, bytes] = {}
    for node in cluster.nodes:
        assert node.public_key is not None
        servers[node.client] = resolve(node.public_key)
    return ClientCurve(own, servers)


def endpoint_curve(endpoint: str, server_key: str, key_file: Path | str | None) -> ClientCurve:
    """The CURVE setup of a client of ONE node, without a cluster config: its client
    endpoint, its public key (Z85 text, or a `.pub` file) and the client's secret key file
    (`--key`, else `$ZRAFT_CLIENT_KEY`).

    Raises:
        SecurityError: no client key file is given anywhere, or a key is unreadable or
            malformed (the message names it).
    """
    path = client_key_file(None, key_file)
    if path is None:
        raise SecurityError(
            f"a client key is needed to reach {endpoint} with its server key: give --key "
            f"FILE or set {ENV_CLIENT_KEY}=FILE"
        )
    server = server_key.encode() if is_public_key(server_key) else read_public_key(server_key)
    return ClientCurve(read_secret_key(path), {endpoint: server})
