"""One lock contender as a process of its own (so that the lock workload can SIGSTOP it):
it acquires the lock, writes `lockwl/last` a few times inside its critical section, and
logs every step as a JSON line (a test tool, run by `tests.lock_workload`).

    python tests/lock_holder.py --config C --name L --holder 3 --mode guarded --log F

`--mode guarded` writes through the lock's guard (`held.put`: refused once the lock is
lost); `--mode unguarded` writes plainly, trusting that it holds (the unsafe way, shown to
break when a holder pauses past its TTL).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zraft.client import Client, ClientError  # noqa: E402
from zraft.client.recipes import LockLost, LockTimeout  # noqa: E402

KEY = "lockwl/last"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lock_holder")
    parser.add_argument("--config", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--holder", type=int, required=True)
    parser.add_argument("--mode", choices=("guarded", "unguarded"), default="guarded")
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--writes", type=int, default=4)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    out = args.log.open("a", buffering=1)

    def log(event: str, **fields: object) -> None:
        out.write(
            json.dumps({"event": event, "holder": args.holder, "t": time.monotonic(), **fields})
            + "\n"
        )

    with Client.from_config(args.config, timeout=5) as client:
        while True:
            try:
                with client.lock(args.name, ttl=args.ttl, timeout=10) as held:
                    token = held.fencing_token
                    log("acquired", token=token)
                    for number in range(args.writes):
                        value = f"{token}:{args.holder}:{number}"
                        log("invoke", token=token, value=value)
                        if args.mode == "guarded":
                            reply = held.put(KEY, value)
                        else:
                            reply = client.put(KEY, value)
                        revision = reply.header.revision if reply.header else None
                        log("write", token=token, value=value, ok=reply.ok, revision=revision)
                        time.sleep(0.05)  # inside the critical section: where pauses land
                log("released", token=token)
            except LockLost as exc:
                log("lost", why=str(exc))
            except LockTimeout:
                log("timeout")
            except ClientError as exc:  # no node answered in time (faults): try again
                log("error", why=str(exc).splitlines()[0])
                time.sleep(0.1)


if __name__ == "__main__":
    raise SystemExit(main())
