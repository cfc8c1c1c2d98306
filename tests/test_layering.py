"""The layering rules of STYLE.md B1, checked mechanically on every run.

The core (and the kv state machine) must stay pure: no I/O, clocks, randomness, logging or
third-party imports, so it stays deterministic and testable. `transport` moves bytes and
must not know the wire format.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_DIR = ROOT / "zraft" / "core"
KV_PY = ROOT / "zraft" / "state" / "kv.py"
ALLOWED_PURE = {
    "dataclasses",
    "enum",
    "typing",
    "collections",
    "bisect",
    "itertools",
    "math",
    "zraft",
    "__future__",
}


def imports_of(path: Path) -> set[str]:
    """Every absolute module name imported by `path`."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


PURE_FILES = sorted(CORE_DIR.glob("*.py")) + ([KV_PY] if KV_PY.exists() else [])


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_is_pure(path: Path) -> None:
    """Core and kv import only I/O-free stdlib modules and other pure zraft modules."""
    names = imports_of(path)
    roots = {n.split(".")[0] for n in names}
    assert roots <= ALLOWED_PURE, f"{path} imports {sorted(roots - ALLOWED_PURE)}"
    zraft_names = {n for n in names if n.split(".")[0] == "zraft"}
    allowed = ("zraft.core", "zraft.state.kv")
    bad = {n for n in zraft_names if not n.startswith(allowed)}
    assert not bad, f"{path} imports impure zraft modules {sorted(bad)}"


def test_transport_does_not_know_the_wire_format() -> None:
    """transport.py moves bytes; only the node joins it to wire.py."""
    path = ROOT / "zraft" / "net" / "transport.py"
    if not path.exists():
        pytest.skip("transport.py not written yet")
    assert not any(n.startswith("zraft") for n in imports_of(path)), "transport imports zraft"


def test_the_check_catches_an_impure_import(tmp_path: Path) -> None:
    """The AST check itself has teeth: it sees `import time` and `from os import path`."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom os import path\nfrom zraft.core import raft\n")
    roots = {n.split(".")[0] for n in imports_of(bad)}
    assert roots - ALLOWED_PURE == {"time", "os"}
