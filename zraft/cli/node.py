"""`zraft-node`: run one node in the foreground, or every node of a config as children."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

from zraft import __version__
from zraft.cli import keygen, restore
from zraft.config import (
    ClusterConfig,
    ConfigError,
    NodeConfig,
    http_listen_address,
    is_endpoint,
    load,
)
from zraft.net.security import SecurityError
from zraft.net.transport import TransportError
from zraft.node import Node
from zraft.storage import StorageError

CHILD_STOP_TIMEOUT_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    """The command line of `zraft-node` (`zraft-node keygen ...` is `zraft.cli.keygen`)."""
    parser = argparse.ArgumentParser(
        prog="zraft-node",
        description="Run a zraft node (one per host), or a whole local cluster with --all. "
        "`zraft-node keygen --help` writes CURVE keys; `zraft-node restore --help` builds a "
        "new cluster from a backup.",
    )
    parser.add_argument("--config", required=True, type=Path, help="cluster TOML file")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", help="the id of the node to run, as named in the config")
    who.add_argument(
        "--all", action="store_true", help="run every node of the config as child processes"
    )
    parser.add_argument(
        "--join",
        action="store_true",
        help="start outside the initial membership: wait (without campaigning) until a "
        "leader adds this node (zraft-client add-learner ID PEER CLIENT)",
    )
    parser.add_argument(
        "--peer", help="with --join: this node's peer endpoint, if the file lacks it"
    )
    parser.add_argument(
        "--client", help="with --join: this node's client endpoint, if the file lacks it"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="with --join: this node's data dir, if the file lacks it"
    )
    parser.add_argument(
        "--secret-key-file",
        type=Path,
        help="with --join and CURVE: this node's secret key file (zraft-node keygen)",
    )
    parser.add_argument(
        "--metrics",
        metavar="URL",
        help="with --join and endpoints: serve /metrics and /health at http://HOST:PORT",
    )
    parser.add_argument("--log-dir", type=Path, help="write <node>.jsonl here (default: config)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"], help="event level"
    )
    parser.add_argument(
        "--trace-writes",
        type=Path,
        metavar="FILE",
        help="note when each write passed each stage; JSON lines written to FILE at the "
        "stop (benchmarks: python -m zraft.bench.breakdown)",
    )
    parser.add_argument(
        "--test-fault-file",
        type=Path,
        metavar="PATH",
        help="TESTS ONLY: cut this node off from the peers listed in PATH "
        '(JSON {"block": ["n2"]}), re-read when it changes',
    )
    parser.add_argument("--version", action="version", version=f"zraft {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 clean stop, 1 fatal error, 2 bad usage)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keygen"]:
        return keygen.main(argv[1:])
    if argv[:1] == ["restore"]:
        return restore.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        cluster = load(args.config)
        if cluster.security == "none":
            print(
                f'zraft-node: warning: {args.config}: security = "none": no encryption and '
                "no authentication; anyone who reaches the ports can read, write and vote",
                file=sys.stderr,
            )
        if args.log_dir is not None:
            cluster = dataclasses.replace(cluster, log_dir=args.log_dir.resolve())
        if args.trace_writes is not None:
            try:  # a path that cannot be written fails the start, not the stop
                args.trace_writes.open("w").close()
            except OSError as exc:
                print(f"zraft-node: --trace-writes: {exc}", file=sys.stderr)
                return 2
        if args.all:
            if args.test_fault_file is not None or args.trace_writes is not None:
                flag = "--test-fault-file" if args.test_fault_file else "--trace-writes"
                print(f"zraft-node: {flag} needs --id", file=sys.stderr)
                return 2
            return run_all(args, cluster)
        node = Node(
            cluster,
            args.id,
            log_level=args.log_level,
            fault_file=args.test_fault_file,
            join=args.join,
            me=joining_node(args, cluster),
            trace_path=args.trace_writes.resolve() if args.trace_writes else None,
        )
    except (ConfigError, SecurityError) as exc:
        print(f"zraft-node: {exc}", file=sys.stderr)
        return 2
    except (StorageError, TransportError) as exc:
        print(f"zraft-node: cannot start {args.id}: {exc}", file=sys.stderr)
        return 1
    return node.run()


def joining_node(args: argparse.Namespace, cluster: ClusterConfig) -> NodeConfig | None:
    """This node's endpoints from --peer/--client/--data-dir (None: take them from the file).

    Raises:
        ConfigError: the flags are incomplete, invalid, or used without --join.
    """
    flags = (args.peer, args.client, args.data_dir)
    if all(f is None for f in flags):
        if args.secret_key_file is not None or args.metrics is not None:
            flag = "--metrics" if args.metrics is not None else "--secret-key-file"
            raise ConfigError(cluster.path, None, f"{flag} needs --join and endpoints")
        return None
    if not args.join:
        raise ConfigError(cluster.path, None, "--peer/--client/--data-dir need --join")
    if any(f is None for f in flags):
        raise ConfigError(
            cluster.path, None, "--join with endpoints needs --peer, --client and --data-dir"
        )
    for flag, value in (("--peer", args.peer), ("--client", args.client)):
        if not is_endpoint(value):
            raise ConfigError(
                cluster.path, None, f"{flag}: expected tcp://HOST:PORT, got {value!r}"
            )
    if args.id in cluster.node_ids:
        raise ConfigError(cluster.path, None, f"{args.id} is in the file: drop the endpoint flags")
    if cluster.security == "curve" and args.secret_key_file is None:
        raise ConfigError(
            cluster.path, None, "CURVE is on: --join with endpoints needs --secret-key-file"
        )
    if args.metrics is not None:
        try:
            http_listen_address(args.metrics)
        except ValueError as exc:
            raise ConfigError(cluster.path, None, f"--metrics: {exc}") from None
    key_file = args.secret_key_file.resolve() if args.secret_key_file else None
    return NodeConfig(
        args.id,
        args.peer,
        args.client,
        args.data_dir.resolve(),
        secret_key_file=key_file,
        metrics=args.metrics,
    )


def run_all(args: argparse.Namespace, cluster: ClusterConfig) -> int:
    """Start one child process per node; stop them all on Ctrl-C or SIGTERM.

    A node that dies (a crash, or a `kill -9` to try failover) is reported with the
    command that restarts it, and the others keep running: the cluster is a cluster, not
    one program. The supervisor ends when every node has exited, or on a signal; it
    exits 1 if any node exited on its own, else 0.
    """
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    script = Path(__file__).resolve().parents[2] / "bin" / "zraft-node"
    children: dict[str, subprocess.Popen[bytes]] = {}
    for node in cluster.nodes:
        command = [sys.executable, str(script), "--config", str(args.config), "--id", node.id]
        command += ["--log-dir", str(cluster.log_dir), "--log-level", args.log_level]
        # Children ignore Ctrl-C from the terminal; the parent stops them with SIGTERM.
        children[node.id] = subprocess.Popen(command, start_new_session=True)
        print(f"started {node.id} (pid {children[node.id].pid}) client {node.client}", flush=True)
    print(f"events: {cluster.log_dir}/<node>.jsonl; Ctrl-C stops the cluster", flush=True)
    exit_code = 0
    gone: set[str] = set()
    while not stopping and len(gone) < len(children):
        for node_id, child in children.items():
            if node_id not in gone and child.poll() is not None:
                gone.add(node_id)
                exit_code = 1
                print(
                    f"{node_id} exited with code {child.returncode}; the others keep running. "
                    f"Restart it with: zraft-node --config {args.config} --id {node_id}",
                    file=sys.stderr,
                    flush=True,
                )
        time.sleep(0.2)  # the supervisor, not a node: a plain wait loop is fine here
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    print("cluster stopped")
    return exit_code
