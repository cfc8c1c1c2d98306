"""`zraft-node keygen`: write CURVE keypairs.

    zraft-node keygen --out keys/n1          # keys/n1.pub (share) + keys/n1.key (secret, 0600)
    zraft-node keygen --config conf/local.toml
        # every keypair the config names by file and that does not exist yet

The second form is what `bin/zraft-demo` runs on first start: each `public_key_file`
`P.pub` that is missing gets a new pair `P.pub` + `P.key` (for a node, its
`secret_key_file` must then be `P.key`). Existing keys are never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from zraft.config import ConfigError, KeyRef, load
from zraft.net.security import SecurityError, keygen


def build_parser() -> argparse.ArgumentParser:
    """The command line of `zraft-node keygen`."""
    parser = argparse.ArgumentParser(
        prog="zraft-node keygen",
        description="Write a CURVE keypair: PREFIX.pub (public) and PREFIX.key (secret, 0600).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", type=Path, metavar="PREFIX", help="write PREFIX.pub and PREFIX.key")
    what.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="write every missing keypair the config names by file (local clusters)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Entry point; returns 0, or 2 on a usage, config or key error."""
    args = build_parser().parse_args(argv)
    try:
        prefixes = [args.out] if args.out is not None else missing_prefixes(args.config)
        for prefix in prefixes:
            public, secret = keygen(prefix)
            print(f"wrote {public} (public) and {secret} (secret, mode 0600)")
    except (ConfigError, SecurityError) as exc:
        print(f"zraft-node keygen: {exc}", file=sys.stderr)
        return 2
    return 0


def missing_prefixes(config_path: Path) -> list[Path]:
    """The key prefixes a config names by file whose public key file does not exist yet.

    Raises:
        ConfigError: the config is invalid.
        SecurityError: a key cannot be generated consistently (a node's secret key file
            is not beside its public key file, or only one half of a pair exists).
    """
    cluster = load(config_path)
    wanted: list[tuple[KeyRef, Path | None]] = [
        (node.public_key, node.secret_key_file)
        for node in cluster.nodes
        if node.public_key is not None
    ]
    wanted += [(entry.public_key, None) for entry in cluster.client_keys]
    prefixes: list[Path] = []
    for ref, secret in wanted:
        if ref.file is None or ref.file.exists():
            continue
        if ref.file.suffix != ".pub":
            raise SecurityError(f"{ref.where}: {ref.file}: name a .pub file to generate it")
        prefix = ref.file.with_suffix("")
        expected_secret = prefix.with_name(prefix.name + ".key")
        if secret is not None and secret != expected_secret:
            raise SecurityError(
                f"{ref.where}: cannot generate {ref.file}: its secret key file must be "
                f"{expected_secret}, the config says {secret}"
            )
        if expected_secret.exists():
            raise SecurityError(f"{expected_secret} exists without {ref.file}; restore or move it")
        if prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes
