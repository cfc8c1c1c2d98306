"""Layer 4: `zraft.config` loads the shipped files and refuses bad ones with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zraft import config
from zraft.client import check_endpoint
from zraft.config import ConfigError
from zraft.core.types import Membership, RaftConfig
from zraft.node import admin

REPO = Path(__file__).resolve().parent.parent

VALID = """\
[cluster]
name = "t"
heartbeat_ms = 50
election_timeout_ms = [300, 600]
request_timeout_ms = 5000
log_dir = "logs"

[[node]]
id = "n1"
peer = "tcp://127.0.0.1:7101"
client = "tcp://127.0.0.1:7201"
data_dir = "data/n1"
public_key = "MJ%f8u37?XeYo^A9Ux8DHkcr=E-O!y9#U?D1<Z-*"
secret_key_file = "keys/n1.key"

[[node]]
id = "n2"
peer = "tcp://127.0.0.1:7102"
client = "tcp://127.0.0.1:7202"
data_dir = "data/n2"
public_key_file = "keys/n2.pub"
secret_key_file = "keys/n2.key"
"""
# Z85 public keys (only their form is checked here)
K1, K3 = "MJ%f8u37?XeYo^A9Ux8DHkcr=E-O!y9#U?D1<Z-*", "Z:J[%>M}Q)Jb3>k}8%d9cfUb$u{(dit{$)<XxQT7"
CLUSTER, NODES = VALID[: VALID.index("[[node]]")], VALID[VALID.index("[[node]]") :]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh directory, symlinks resolved (loaded configs hold resolved paths)."""
    return tmp_path.resolve()


def write(directory: Path, text: str, name: str = "cluster.toml") -> Path:
    """Write a config file into `directory` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_local_toml_has_three_nodes_rooted_at_the_repository() -> None:
    cfg = config.load(REPO / "conf" / "local.toml")
    assert cfg.node_ids == ("n1", "n2", "n3")
    assert cfg.base_dir == REPO
    assert cfg.log_dir == REPO / "logs"
    assert cfg.node("n2") == config.NodeConfig(
        id="n2",
        peer="tcp://127.0.0.1:7102",
        client="tcp://127.0.0.1:7202",
        data_dir=REPO / "data" / "n2",
        public_key=config.KeyRef(file=REPO / "keys" / "n2.pub", where="node[1].public_key_file"),
        secret_key_file=REPO / "keys" / "n2.key",
        metrics="http://127.0.0.1:9102",
    )
    assert cfg.security == "curve"
    assert [(k.role, k.name) for k in cfg.client_keys] == [("admin", "demo")]
    assert cfg.client_secret_key_file == REPO / "keys" / "client.key"
    assert cfg.heartbeat_ms == 50
    assert cfg.election_timeout_ms == (300, 600)
    assert cfg.request_timeout_ms == 5000


def test_original_toml_has_four_nodes() -> None:
    cfg = config.load(REPO / "conf" / "original.toml")
    assert cfg.node_ids == ("n1", "n2", "n3", "n4")
    assert [n.peer for n in cfg.nodes] == [f"tcp://127.0.0.1:711{i}" for i in range(1, 5)]
    assert [n.client for n in cfg.nodes] == [f"tcp://127.0.0.1:721{i}" for i in range(1, 5)]


def test_defaults_apply_to_optional_keys(root: Path) -> None:
    text = VALID.replace('request_timeout_ms = 5000\nlog_dir = "logs"\n', "")
    cfg = config.load(write(root, text))
    assert cfg.request_timeout_ms == 5000
    assert cfg.log_dir == root / "logs"
    assert (cfg.tick_ms, cfg.max_key_bytes, cfg.max_value_bytes) == (10, 4096, 1 << 20)
    assert cfg.snapshot_entries == 10_000
    assert cfg.snapshot_bytes == 64 << 20
    assert (cfg.snapshot_retain, cfg.snapshot_trailing) == (2, 1000)
    assert cfg.wal_segment_bytes == 64 << 20


def test_optional_keys_can_be_set(root: Path) -> None:
    extra = (
        "tick_ms = 25\nmax_key_bytes = 100\nmax_value_bytes = 200\n"
        "snapshot_entries = 7\nsnapshot_bytes = 9\n"
        "snapshot_retain = 3\nsnapshot_trailing = 0\nwal_segment_bytes = 4096\n"
    )
    text = VALID.replace("heartbeat_ms = 50\n", "heartbeat_ms = 50\n" + extra)
    cfg = config.load(write(root, text))
    assert (cfg.tick_ms, cfg.max_key_bytes, cfg.max_value_bytes) == (25, 100, 200)
    assert (cfg.snapshot_entries, cfg.snapshot_bytes) == (7, 9)
    assert (cfg.snapshot_retain, cfg.snapshot_trailing, cfg.wal_segment_bytes) == (3, 0, 4096)


def test_accessors(root: Path) -> None:
    cfg = config.load(write(root, VALID))
    assert cfg.peer_ids("n1") == ("n2",)
    assert cfg.membership == Membership(voters=frozenset({"n1", "n2"}))
    assert cfg.log_path("n2") == root / "logs" / "n2.jsonl"


def test_unknown_node_id_names_the_file_and_the_known_ids(root: Path) -> None:
    path = write(root, VALID)
    cfg = config.load(path)
    for call in (cfg.node, cfg.peer_ids, cfg.raft_config, cfg.log_path):
        with pytest.raises(ConfigError) as info:
            call("n9")
        assert str(path) in str(info.value)
        assert "'n9'" in str(info.value)
        assert "known ids: n1, n2" in str(info.value)


# --- milliseconds to ticks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("tick_ms", "heartbeat_ms", "election", "expected"),
    [
        (10, 50, "[300, 600]", (5, 30, 60)),
        (1, 5, "[10, 10]", (5, 10, 10)),
        (25, 50, "[300, 600]", (2, 12, 24)),
        (50, 50, "[100, 150]", (1, 2, 3)),
    ],
)
def test_raft_config_converts_milliseconds_to_ticks(
    root: Path, tick_ms: int, heartbeat_ms: int, election: str, expected: tuple[int, ...]
) -> None:
    text = VALID.replace("heartbeat_ms = 50", f"heartbeat_ms = {heartbeat_ms}\ntick_ms = {tick_ms}")
    text = text.replace("[300, 600]", election)
    rc = config.load(write(root, text)).raft_config("n2")
    assert isinstance(rc, RaftConfig)
    assert rc.node_id == "n2"
    assert (rc.heartbeat_ticks, rc.election_ticks_min, rc.election_ticks_max) == expected


# --- path resolution --------------------------------------------------------------------


def test_relative_paths_resolve_against_the_parent_of_a_conf_directory(root: Path) -> None:
    cfg = config.load(write(root / "conf", VALID))
    assert cfg.base_dir == root
    assert cfg.log_dir == root / "logs"
    assert cfg.node("n1").data_dir == root / "data" / "n1"


def test_relative_paths_resolve_against_the_file_directory_elsewhere(root: Path) -> None:
    cfg = config.load(write(root / "cfgs", VALID))
    assert cfg.base_dir == root / "cfgs"
    assert cfg.node("n2").data_dir == root / "cfgs" / "data" / "n2"


def test_absolute_paths_are_kept(root: Path) -> None:
    text = VALID.replace('log_dir = "logs"', f'log_dir = "{root / "elsewhere"}"')
    cfg = config.load(write(root / "conf", text))
    assert cfg.log_dir == root / "elsewhere"


def test_the_rule_does_not_depend_on_the_working_directory(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(root / "conf", VALID)
    monkeypatch.chdir(root / "conf")
    cfg = config.load("cluster.toml")
    assert cfg.path == root / "conf" / "cluster.toml"
    assert cfg.log_dir == root / "logs"


# --- refused files ------------------------------------------------------------------------

BAD = [
    # (case id, (old, new) replacements on VALID, expected key, expected message fragment)
    ("unknown-cluster-key", [("name = ", "weight = 1\nname = ")], "cluster.weight",
     "unknown key; expected one of: name, heartbeat_ms"),
    ("unknown-node-key", [('data_dir = "data/n2"', 'data_dir = "data/n2"\nweight = 3')],
     "node[1].weight", "unknown key"),
    ("unknown-table", [("[cluster]", "[security]\nx = 1\n[cluster]")], "security",
     "unknown key; expected one of: cluster, node"),
    ("missing-cluster", [(CLUSTER, "")], "cluster", "missing required key"),
    ("missing-name", [('name = "t"\n', "")], "cluster.name", "missing required key"),
    ("missing-heartbeat", [("heartbeat_ms = 50\n", "")], "cluster.heartbeat_ms",
     "missing required key"),
    ("missing-peer", [('peer = "tcp://127.0.0.1:7102"\n', "")], "node[1].peer",
     "missing required key"),
    ("missing-data-dir", [('data_dir = "data/n1"\n', "")], "node[0].data_dir",
     "missing required key"),
    ("bool-is-not-int", [("heartbeat_ms = 50", "heartbeat_ms = true")], "cluster.heartbeat_ms",
     "expected a positive integer, got boolean True"),
    ("float-is-not-int", [("request_timeout_ms = 5000", "request_timeout_ms = 5.0")],
     "cluster.request_timeout_ms", "expected a positive integer, got float 5.0"),
    ("string-is-not-int", [("heartbeat_ms = 50", 'heartbeat_ms = "50"')],
     "cluster.heartbeat_ms", "expected a positive integer, got string '50'"),
    ("zero-duration", [("request_timeout_ms = 5000", "request_timeout_ms = 0")],
     "cluster.request_timeout_ms", "expected a positive integer"),
    ("negative-duration", [("heartbeat_ms = 50", "heartbeat_ms = -50")],
     "cluster.heartbeat_ms", "expected a positive integer"),
    ("zero-retain", [("heartbeat_ms = 50", "heartbeat_ms = 50\nsnapshot_retain = 0")],
     "cluster.snapshot_retain", "expected a positive integer"),
    ("negative-trailing", [("heartbeat_ms = 50", "heartbeat_ms = 50\nsnapshot_trailing = -1")],
     "cluster.snapshot_trailing", "expected an integer >= 0, got integer -1"),
    ("zero-tick", [("heartbeat_ms = 50", "heartbeat_ms = 50\ntick_ms = 0")], "cluster.tick_ms",
     "expected a positive integer"),
    ("id-not-string", [('id = "n1"', "id = 1")], "node[0].id",
     "expected a non-empty string, got integer 1"),
    ("empty-name", [('name = "t"', 'name = ""')], "cluster.name", "expected a non-empty string"),
    ("election-not-a-list", [("[300, 600]", "300")], "cluster.election_timeout_ms",
     "expected [min, max], two positive integers"),
    ("election-one-value", [("[300, 600]", "[300]")], "cluster.election_timeout_ms",
     "expected [min, max]"),
    ("election-bools", [("[300, 600]", "[true, 600]")], "cluster.election_timeout_ms",
     "expected [min, max], two positive integers"),
    ("election-reversed", [("[300, 600]", "[600, 300]")], "cluster.election_timeout_ms",
     "expected [min, max] with min <= max, got [600, 300]"),
    ("heartbeat-not-below-election", [("heartbeat_ms = 50", "heartbeat_ms = 300")],
     "cluster.election_timeout_ms", "expected a minimum above cluster.heartbeat_ms (300)"),
    ("not-a-multiple-of-the-tick", [("heartbeat_ms = 50", "heartbeat_ms = 55")],
     "cluster.heartbeat_ms", "expected a multiple of cluster.tick_ms (10), got 55"),
    ("election-not-a-multiple", [("[300, 600]", "[300, 605]")], "cluster.election_timeout_ms",
     "expected a multiple of cluster.tick_ms (10), got 605"),
    ("duplicate-id", [('id = "n2"', 'id = "n1"')], "node[1].id",
     "duplicate id n1, also at node[0].id"),
    ("duplicate-peer", [("7102", "7101")], "node[1].peer",
     "duplicate endpoint tcp://127.0.0.1:7101, also at node[0].peer"),
    ("peer-equals-a-client", [("tcp://127.0.0.1:7102", "tcp://127.0.0.1:7201")], "node[1].peer",
     "duplicate endpoint tcp://127.0.0.1:7201, also at node[0].client"),
    ("own-peer-equals-own-client", [("7201", "7101")], "node[0].client",
     "duplicate endpoint tcp://127.0.0.1:7101, also at node[0].peer"),
    ("duplicate-data-dir", [('"data/n2"', '"data/n1"')], "node[1].data_dir", "duplicate data_dir"),
    ("endpoint-not-tcp", [("tcp://127.0.0.1:7101", "ipc:///tmp/n1")], "node[0].peer",
     "expected tcp://HOST:PORT with PORT in 1..65535, got 'ipc:///tmp/n1'"),
    ("endpoint-no-port", [("tcp://127.0.0.1:7201", "tcp://127.0.0.1")], "node[0].client",
     "expected tcp://HOST:PORT"),
    ("endpoint-port-zero", [("tcp://127.0.0.1:7201", "tcp://127.0.0.1:0")], "node[0].client",
     "PORT in 1..65535"),
    ("endpoint-port-too-big", [("tcp://127.0.0.1:7201", "tcp://127.0.0.1:65536")],
     "node[0].client", "PORT in 1..65535"),
    ("endpoint-wildcard", [("tcp://127.0.0.1:7201", "tcp://*:7201")], "node[0].client",
     "expected tcp://HOST:PORT"),
    ("id-with-space", [('id = "n1"', 'id = "n 1"')], "node[0].id",
     "expected 1-64 characters of A-Z a-z 0-9 _ . -, a letter or digit first, got 'n 1'"),
    ("id-too-long", [('id = "n1"', f'id = "{"n" * 65}"')], "node[0].id", "1-64 characters"),
    ("no-nodes", [(NODES, "")], "node", "expected at least one [[node]] table"),
    ("empty-node-list", [(NODES, ""), ("[cluster]", "node = []\n[cluster]")], "node",
     "expected at least one [[node]] table"),
    ("node-not-tables", [(NODES, ""), ("[cluster]", "node = [1]\n[cluster]")], "node",
     "expected [[node]] tables"),
    ("cluster-not-a-table", [(CLUSTER, 'cluster = "x"\n')], "cluster",
     "expected a table [cluster], got string 'x'"),
    # security
    ("security-unknown-mode", [("name = ", 'security = "tls"\nname = ')], "cluster.security",
     'expected "curve" or "none", got string \'tls\''),
    ("node-key-missing", [(f'public_key = "{K1}"\n', "")], "node[0].public_key",
     'missing required key (security = "curve")'),
    ("node-secret-missing", [('secret_key_file = "keys/n2.key"\n', "")],
     "node[1].secret_key_file", "missing required key"),
    ("node-key-both-forms", [('public_key_file = "keys/n2.pub"', f'public_key_file = "x.pub"\n'
     f'public_key = "{K3}"')], "node[1].public_key", "either public_key or public_key_file"),
    ("node-key-not-z85", [(K1, "not-a-key")], "node[0].public_key",
     "expected a Z85 public key (40 characters), got 9 characters"),
    ("node-key-not-string", [(f'"{K1}"', "42")], "node[0].public_key",
     "expected a Z85 public key (40 characters), got integer 42"),
    ("extra-keys-not-a-list", [("data_dir = \"data/n1\"", f'data_dir = "data/n1"\n'
     f'extra_public_keys = "{K3}"')], "node[0].extra_public_keys", "expected an array"),
    ("extra-key-bad", [("data_dir = \"data/n1\"", 'data_dir = "data/n1"\n'
     'extra_public_keys = ["short"]')], "node[0].extra_public_keys[0]", "Z85 public key"),
    ("client-key-no-role", [(NODES, NODES + f'[[client_key]]\npublic_key = "{K3}"\n')],
     "client_key[0].role", "missing required key"),
    ("client-key-bad-role", [(NODES, NODES + f'[[client_key]]\npublic_key = "{K3}"\n'
     'role = "root"\n')], "client_key[0].role",
     'expected "read" or "write" or "admin", got string \'root\''),
    ("client-key-no-key", [(NODES, NODES + '[[client_key]]\nrole = "read"\n')],
     "client_key[0].public_key", "missing required key"),
    ("client-key-unknown-field", [(NODES, NODES + f'[[client_key]]\npublic_key = "{K3}"\n'
     'role = "read"\nsecret = "x"\n')], "client_key[0].secret", "unknown key"),
    ("client-table-unknown-key", [(NODES, NODES + '[client]\nkey = "x"\n')], "client.key",
     "unknown key; expected one of: secret_key_file"),
    # metrics
    ("metrics-not-http", [('data_dir = "data/n1"', 'data_dir = "data/n1"\n'
     'metrics = "tcp://127.0.0.1:9101"')], "node[0].metrics",
     "expected http://HOST:PORT with PORT in 1..65535, got 'tcp://127.0.0.1:9101'"),
    ("metrics-no-port", [('data_dir = "data/n1"', 'data_dir = "data/n1"\n'
     'metrics = "http://127.0.0.1"')], "node[0].metrics", "expected http://HOST:PORT"),
    ("metrics-a-path", [('data_dir = "data/n1"', 'data_dir = "data/n1"\n'
     'metrics = "http://127.0.0.1:9101/metrics"')], "node[0].metrics", "expected http://HOST:PORT"),
    ("metrics-not-a-string", [('data_dir = "data/n1"', 'data_dir = "data/n1"\nmetrics = 9101')],
     "node[0].metrics", "expected a non-empty string, got integer 9101"),
    ("metrics-on-a-peer-port", [('data_dir = "data/n2"', 'data_dir = "data/n2"\n'
     'metrics = "http://127.0.0.1:7101"')], "node[1].metrics",
     "duplicate endpoint tcp://127.0.0.1:7101, also at node[0].peer"),
    ("metrics-shared", [('data_dir = "data/n1"', 'data_dir = "data/n1"\nmetrics = "http://h:9"'),
     ('data_dir = "data/n2"', 'data_dir = "data/n2"\nmetrics = "http://H:9"')],
     "node[1].metrics", "duplicate endpoint tcp://h:9, also at node[0].metrics"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("replacements", "key", "fragment"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_config_is_refused_naming_file_key_and_expectation(
    root: Path, replacements: list[tuple[str, str]], key: str, fragment: str
) -> None:
    text = VALID
    for old, new in replacements:
        assert old in text, f"test case does not apply: {old!r}"
        text = text.replace(old, new, 1)
    path = write(root, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    error = info.value
    assert (error.path, error.key) == (path, key)
    assert fragment in error.message
    assert str(error).startswith(f"{path}: {key}: ")


def test_invalid_toml_names_the_file_and_the_line(root: Path) -> None:
    path = write(root, VALID.replace("heartbeat_ms = 50", "heartbeat_ms = = 50"))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key is None
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    assert "line 3" in str(info.value)


def test_missing_file_is_a_config_error(root: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(root / "nope.toml")
    assert str(info.value).startswith(f"{root / 'nope.toml'}: cannot read")


# --- security ----------------------------------------------------------------------------


def test_security_keys_are_parsed(root: Path) -> None:
    extra = f'data_dir = "data/n1"\nextra_public_keys = ["{K3}"]'
    text = VALID.replace('data_dir = "data/n1"', extra)
    text += f'[[client_key]]\npublic_key = "{K3}"\nrole = "read"\nname = "dash"\n'
    text += '[[client_key]]\npublic_key_file = "keys/ops.pub"\nrole = "admin"\n'
    text += '[client]\nsecret_key_file = "keys/ops.key"\n'
    cfg = config.load(write(root, text))
    n1, n2 = cfg.nodes
    assert cfg.security == "curve"
    assert n1.public_key == config.KeyRef(text=K1, where="node[0].public_key")
    assert n1.secret_key_file == root / "keys" / "n1.key"
    assert n1.extra_public_keys == (K3,)
    assert n2.public_key == config.KeyRef(
        file=root / "keys" / "n2.pub", where="node[1].public_key_file"
    )
    assert [(k.role, k.name) for k in cfg.client_keys] == [("read", "dash"), ("admin", None)]
    assert cfg.client_keys[1].public_key.file == root / "keys" / "ops.pub"
    assert cfg.client_secret_key_file == root / "keys" / "ops.key"


def test_security_none_needs_no_keys(root: Path) -> None:
    text = VALID.replace('name = "t"', 'name = "t"\nsecurity = "none"')
    for line in (
        f'public_key = "{K1}"\n',
        'public_key_file = "keys/n2.pub"\n',
        'secret_key_file = "keys/n1.key"\n',
        'secret_key_file = "keys/n2.key"\n',
    ):
        text = text.replace(line, "")
    cfg = config.load(write(root, text))
    assert cfg.security == "none"
    assert cfg.nodes[0].public_key is None and cfg.nodes[0].secret_key_file is None


# --- one endpoint rule for nodes and clients ---------------------------------------------

ENDPOINTS = [
    ("tcp://127.0.0.1:7201", True),
    ("tcp://localhost:1", True),
    ("tcp://node-1.example.com:65535", True),
    ("tcp://my_host:7201", True),
    ("tcp://[::1]:7201", True),
    ("tcp://[fe80::1]:80", True),
    ("tcp://10.0.0.4:07204", True),  # a leading zero is still port 7204
    ("tcp://127.0.0.1:0", False),  # port out of range
    ("tcp://127.0.0.1:65536", False),
    ("tcp://127.0.0.1:123456", False),
    ("tcp://127.0.0.1", False),  # no port
    ("tcp://:7201", False),  # no host
    ("tcp://*:7201", False),  # a wildcard: binds, but nobody can connect to it
    ("tcp://hôst:7201", False),  # the client once let these through, and nodes refused them
    ("tcp://a b:7201", False),
    ("tcp://host%eth0:7201", False),
    ("ipc:///tmp/n1", False),
    ("tcp://127.0.0.1:7201 ", False),
    ("localhost:7201", False),
    ("http://example.com", False),
    ("udp://127.0.0.1:7201", False),
    ("tcp://[::1:7201", False),
    ("", False),
]


@pytest.mark.parametrize(("endpoint", "good"), ENDPOINTS)
def test_config_and_client_agree_on_endpoints(endpoint: str, good: bool) -> None:
    """`config.is_endpoint` (nodes, config files) and `zraft.client.check_endpoint` are one
    rule: the client never sends `add_member` an endpoint that the node refuses."""
    assert config.is_endpoint(endpoint) is good
    assert admin.is_endpoint is config.is_endpoint  # what the node checks add_member with
    if good:
        assert check_endpoint(endpoint) == endpoint
    else:
        with pytest.raises(ValueError, match="bad endpoint"):
            check_endpoint(endpoint)


@pytest.mark.parametrize("value", [None, 7201, b"tcp://127.0.0.1:7201", ["tcp://h:1"]])
def test_only_a_str_is_an_endpoint(value: object) -> None:
    assert config.is_endpoint(value) is False
    with pytest.raises(ValueError, match="bad endpoint"):
        check_endpoint(value)  # type: ignore[arg-type]


def test_metrics_is_off_unless_given(root: Path) -> None:
    text = VALID.replace(
        'data_dir = "data/n1"', 'data_dir = "data/n1"\nmetrics = "http://[::1]:9101"'
    )
    nodes = config.load(write(root, text)).nodes
    assert [n.metrics for n in nodes] == ["http://[::1]:9101", None]
    assert config.http_listen_address(nodes[0].metrics) == "tcp://[::1]:9101"
