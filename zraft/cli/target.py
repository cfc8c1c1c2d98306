"""Where `zraft-client` sends its commands: the nodes named by --config or --endpoint.

It owns resolving the global options (`--config`, `--key`, `--endpoint`, `--timeout`) into
the endpoints, node ids, client keys and timeouts a session uses.

It must not send a request or print: a bad option raises (`UsageError`, `ConfigError`,
`SecurityError`) and the entry point (`zraft.cli.client.main`) reports it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from zraft.cli.usage import UsageError
from zraft.client import DEFAULT_TIMEOUT_S, check_endpoint
from zraft.config import load
from zraft.net.security import ClientCurve, client_curve, endpoint_curve

ENV_CONFIG = "ZRAFT_CONFIG"
"""Environment variable naming the cluster config to use when `--config` is not given."""

LOCAL_CONFIG = Path("conf") / "local.toml"
"""The config used last, when neither `--config`, `--endpoint` nor `$ZRAFT_CONFIG` is
given and it exists (relative to the current directory: a checkout's root)."""


def default_config() -> Path | None:
    """The config to use without `--config`: `$ZRAFT_CONFIG`, else `conf/local.toml` here."""
    named = os.environ.get(ENV_CONFIG)
    if named:
        return Path(named)
    return LOCAL_CONFIG if LOCAL_CONFIG.is_file() else None


@dataclass(frozen=True, slots=True)
class Target:
    """Where commands go: `(node id or None, client endpoint)` pairs and the timeouts."""

    nodes: tuple[tuple[str | None, str], ...]
    timeout: float | None  # --timeout, or None for the defaults
    request_timeout: float  # the default for requests
    curve: ClientCurve | None = None  # the client's keys when the cluster runs CURVE
    cluster_name: str = ""  # the config's `[cluster] name` (empty with --endpoint alone)

    @property
    def endpoints(self) -> list[str]:
        """The client endpoints, in config order."""
        return [endpoint for _, endpoint in self.nodes]

    @property
    def node_ids(self) -> list[str | None]:
        """The node ids (None where unknown), in config order."""
        return [node_id for node_id, _ in self.nodes]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Target:
        """Resolve --config and --endpoint (which, given both, narrows to one node).

        Raises:
            ConfigError: the config file is unreadable or invalid.
            SecurityError: the cluster runs CURVE and the client key is missing or bad.
            UsageError: neither option given, or a malformed endpoint.
        """
        if args.config is None and args.endpoint is None:
            args.config = default_config()
        if args.config is None and args.endpoint is None:
            raise UsageError(
                "zraft-client: give --config FILE or --endpoint tcp://HOST:PORT (or set "
                f"${ENV_CONFIG}, or run where {LOCAL_CONFIG} is)"
            )
        server_key = getattr(args, "server_key", None)
        if server_key is not None and (args.endpoint is None or args.config is not None):
            raise UsageError(
                "zraft-client: --server-key goes with --endpoint and without --config "
                "(a config names every node's key itself)"
            )
        if args.key is not None and args.config is None and server_key is None:
            raise UsageError(
                "zraft-client: --key needs --config (it names the nodes' keys), or "
                "--endpoint with --server-key"
            )
        request_timeout = DEFAULT_TIMEOUT_S
        nodes: tuple[tuple[str | None, str], ...] = ()
        curve = None
        name = ""
        if args.config is not None:
            cluster = load(args.config)
            name = cluster.name
            nodes = tuple((node.id, node.client) for node in cluster.nodes)
            request_timeout = cluster.request_timeout_ms / 1000 + 1.0
            curve = client_curve(cluster, args.key)
        if args.endpoint is not None:
            try:
                check_endpoint(args.endpoint)
            except ValueError as exc:
                raise UsageError(f"zraft-client: --endpoint: {exc}") from None
            known = {endpoint: node_id for node_id, endpoint in nodes}
            nodes = ((known.get(args.endpoint), args.endpoint),)
            if server_key is not None:
                curve = endpoint_curve(args.endpoint, server_key, args.key)
        return cls(nodes, args.timeout, request_timeout, curve, name)
