"""The floors of the house (README "Design"), checked mechanically on every run.

L0  zraft.core (Raft), zraft.state.kv (the store): pure; no I/O, clocks, randomness,
    logging or third-party imports, so they stay deterministic and testable.
L1  zraft.wire (byte formats), zraft.state (the machine behind its codec), zraft.storage,
    zraft.net (sockets, keys, ZAP), zraft.config, zraft.diagnostics.
L2  zraft.node (the loop and its collaborators), zraft.client (the library).
L3  zraft.cli, zraft.bench, zraft.testing.

Imports point downward only; a few rules inside a floor keep each module to its job
(a transport moves bytes and must not know the wire format; the node never encodes a
state machine command; the client never imports the node).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZRAFT = ROOT / "zraft"
CORE_DIR = ZRAFT / "core"
PURE_STATE = (
    "kv",
    "mvcc",
    "kvtypes",
    "changelog",
    "events",
    "txn",
    "sessions",
    "execute",
    "leases",
    "leasing",
)
"""The modules of `zraft/state` that must stay pure (no I/O, no clock, no wire)."""
ALLOWED_PURE = {
    "dataclasses",
    "enum",
    "typing",
    "collections",
    "bisect",
    "itertools",
    "math",
    "array",  # a typed sequence of numbers in memory (the change log's revisions)
    "zraft",
    "__future__",
    "sortedcontainers",  # a pure, deterministic data structure (STYLE.md B1 allows it)
}


def imports_of(path: Path) -> set[str]:
    """Every absolute module name imported by `path`."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            package = ROOT.joinpath(*node.module.split("."))
            if node.module.startswith("zraft") and package.is_dir():
                # `from zraft.net import security` imports zraft.net.security
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
    return names


def zraft_imports(path: Path) -> set[str]:
    """The zraft modules `path` imports (`zraft` itself, for `__version__`, left out)."""
    return {n for n in imports_of(path) if n.startswith("zraft.") and n != "zraft.__version__"}


PURE_FILES = [
    *sorted(CORE_DIR.glob("*.py")),
    *(ZRAFT / "state" / f"{name}.py" for name in PURE_STATE),
]


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_is_pure(path: Path) -> None:
    """Core and kv import only I/O-free stdlib modules and other pure zraft modules."""
    names = imports_of(path)
    roots = {n.split(".")[0] for n in names}
    assert roots <= ALLOWED_PURE, f"{path} imports {sorted(roots - ALLOWED_PURE)}"
    pure = (
        "zraft.core",
        "zraft.state.kv",
        "zraft.state.mvcc",
        "zraft.state.txn",
        "zraft.state.sessions",
        "zraft.state.execute",
        "zraft.state.leases",
        "zraft.state.leasing",
        "zraft.state.changelog",
        "zraft.state.kvtypes",
        "zraft.state.events",
    )
    bad = {n for n in zraft_imports(path) if not n.startswith(pure)}
    assert not bad, f"{path} imports impure zraft modules {sorted(bad)}"


# package (or module) -> the zraft modules it may import (prefixes); its own always allowed
FLOORS: dict[str, tuple[str, ...]] = {
    "zraft.core": (),
    "zraft.state": ("zraft.core", "zraft.wire.client", "zraft.wire.entries", "zraft.wire.records"),
    "zraft.wire": ("zraft.core", "zraft.state.kv"),
    "zraft.storage": ("zraft.core",),
    "zraft.net": ("zraft.config",),
    "zraft.config": ("zraft.core",),
    "zraft.diagnostics": ("zraft.core",),
    "zraft.node": (
        "zraft.core",
        "zraft.state",
        "zraft.wire",
        "zraft.storage",
        "zraft.net",
        "zraft.config",
        "zraft.diagnostics",
    ),
    "zraft.client": ("zraft.wire", "zraft.net.security", "zraft.config"),
    "zraft.aio": ("zraft.client",),  # the asyncio client's public name
    "zraft.bench": (
        "zraft.client",
        "zraft.wire",
        "zraft.net.security",
        "zraft.config",
        "zraft.testing",
    ),
    # The store benchmark drives the state machine and the snapshot writer in process.
    "zraft.bench.store": ("zraft.core", "zraft.state", "zraft.storage", "zraft.wire"),
    "zraft.testing": ("zraft.client", "zraft.wire", "zraft.net.security", "zraft.config"),
    "zraft.cli": (
        "zraft.client",
        "zraft.bench",
        "zraft.node",
        "zraft.wire",
        "zraft.net",
        "zraft.storage",
        "zraft.config",
    ),
}


def module_name(path: Path) -> str:
    """`zraft/net/transport.py` -> `zraft.net.transport`."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> str:
    """The `FLOORS` key that governs `module` (the longest matching prefix)."""
    keys = [k for k in FLOORS if module == k or module.startswith(k + ".")]
    assert keys, f"{module} belongs to no floor: add it to FLOORS and the README"
    return max(keys, key=len)


ALL_MODULES = sorted(p for p in ZRAFT.rglob("*.py") if p != ZRAFT / "__init__.py")


@pytest.mark.parametrize("path", ALL_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    """Each module imports only its own floor's package and the floors below it."""
    module = module_name(path)
    floor = floor_of(module)
    allowed = (floor, *FLOORS[floor])
    bad = sorted(
        n for n in zraft_imports(path) if not any(n == a or n.startswith(a + ".") for a in allowed)
    )
    assert not bad, f"{module} (floor {floor}) imports {bad}"


def test_transport_does_not_know_the_wire_format() -> None:
    """The transports move bytes; only the node joins them to `zraft.wire`."""
    for name in ("base.py", "transport.py", "dealers.py", "clients.py", "inmem.py", "faults.py"):
        names = zraft_imports(ZRAFT / "net" / name)
        allowed = {"zraft.net.base", "zraft.net.dealers", "zraft.net.clients"}
        assert names <= allowed, f"net/{name} imports {sorted(names - allowed)}"


def test_the_node_does_not_encode_commands() -> None:
    """What a log command means is the state machine's (`zraft.state.machine`): no node
    module touches the command codec."""
    for path in sorted((ZRAFT / "node").glob("*.py")):
        assert "zraft.wire.entries" not in zraft_imports(path), f"node/{path.name} encodes commands"


def test_the_check_catches_an_impure_import(tmp_path: Path) -> None:
    """The AST check itself has teeth: it sees `import time` and `from os import path`,
    and a module of a lower floor importing a higher one."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom os import path\nfrom zraft.core import raft\n")
    roots = {n.split(".")[0] for n in imports_of(bad)}
    assert roots - ALLOWED_PURE == {"time", "os"}
    upward = tmp_path / "up.py"
    upward.write_text("from zraft import wire\nfrom zraft.node.loop import Node\n")
    names = zraft_imports(upward)
    assert names == {"zraft.wire", "zraft.node.loop"}
    allowed = ("zraft.wire", *FLOORS["zraft.wire"])
    assert [n for n in names if not n.startswith(allowed)] == ["zraft.node.loop"]
