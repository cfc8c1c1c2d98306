"""The asyncio client (`zraft.aio.Client`) against real clusters: the store's ops and their
errors, many concurrent tasks on one client (writes exactly once each), and a failover of
the leader while a watch and a lease keepalive run in tasks of the same client."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.procs import ClusterFactory
from zraft import aio
from zraft.client import ClientError, txn
from zraft.client.recipes import LockLost, LockTimeout
from zraft.client.watch import Compacted, WatchEvent


def test_the_stores_ops_and_errors(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()

    async def main() -> None:
        async with aio.Client.from_config(cluster.config_path, timeout=10) as client:
            put = await client.put("a/1", "one", prev_kv=True)
            assert put.ok and put.header is not None and put.prev_kv is None
            assert (await client.get("a/1")).value == b"one"
            await client.put("a/2", "two")
            ranged = await client.get_prefix("a/")
            assert [kv.key for kv in ranged.kvs or ()] == [b"a/1", b"a/2"]
            done = await client.transaction(
                compare=[txn.value("a/1") == "one"],
                success=[txn.put_op("a/3", "three")],
                failure=[],
            )
            assert done.succeeded
            lost = await client.cas("a/1", "nope", "x")
            assert (lost.ok, lost.error_code, lost.value) == (False, "cas_failed", b"one")
            deleted = await client.delete_prefix("a/")
            assert deleted.deleted == 3 and deleted.header is not None
            assert (await client.status()).status is not None
            with pytest.raises(ValueError):
                await client.request("no_such_op")
            assert (await client.compact(deleted.header.revision)).ok
            with pytest.raises(Compacted):
                async for _ in client.watch("a/", prefix=True, start_revision=2):
                    pass
        with pytest.raises(ClientError):
            await client.get("a/1")  # closed

    asyncio.run(main())


def test_many_concurrent_tasks_write_exactly_once(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()

    async def main() -> None:
        async with aio.Client.from_config(cluster.config_path, timeout=10) as client:
            replies = await asyncio.gather(*(client.put(f"t/{n:03d}", str(n)) for n in range(300)))
            assert all(r.ok for r in replies)
            revisions = sorted(r.header.revision for r in replies if r.header)
            assert len(set(revisions)) == 300  # each applied once, at its own revision
            reads = await asyncio.gather(*(client.get(f"t/{n:03d}") for n in range(300)))
            assert [r.value for r in reads] == [str(n).encode() for n in range(300)]
            counted = await client.range("t/", prefix=True, count_only=True)
            assert counted.count == 300

    asyncio.run(main())


def test_failover_while_a_watch_and_a_keepalive_run(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()

    async def main() -> None:
        async with aio.Client.from_config(cluster.config_path, timeout=10) as client:
            lease = await client.lease(2, keepalive=True)
            assert (await client.put("svc/me", "up", lease=lease.id)).ok
            watch = client.watch("f/", prefix=True, wait_s=0.5)
            seen: list[WatchEvent] = []

            async def follow() -> None:
                async for event in watch:
                    seen.append(event)

            follower = asyncio.ensure_future(follow())
            while watch.next_revision is None:
                await asyncio.sleep(0.02)
            acked = []
            for n in range(60):
                if n == 20:
                    cluster.kill(cluster.wait_leader())  # the watch and the lease carry on
                reply = await client.put(f"f/{n}", str(n))
                acked.append((f"f/{n}".encode(), reply.header.revision))  # type: ignore[union-attr]
            deadline = asyncio.get_running_loop().time() + 15
            while [(e.key, e.revision) for e in seen] != acked:
                assert asyncio.get_running_loop().time() < deadline, (seen[-3:], acked[-3:])
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.5)  # more than the TTL after the kill
            assert not lease.lost.is_set(), lease.lost_reason
            assert (await client.get("svc/me")).found
            watch.cancel()
            await asyncio.wait_for(follower, 2)
            await lease.revoke()
            assert not (await client.get("svc/me")).found

    asyncio.run(main())


def test_async_locks_and_elections(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()

    async def main() -> None:
        async with aio.Client.from_config(cluster.config_path, timeout=10) as client:
            sections: list[tuple[float, float, int]] = []

            async def worker(n: int) -> None:
                for _ in range(3):
                    async with client.lock("jobs", ttl=5) as held:
                        entered = asyncio.get_running_loop().time()
                        value = (await client.get("jobs/count")).value or b"0"
                        await held.put("jobs/count", str(int(value) + 1))
                        await asyncio.sleep(0.01)
                        sections.append(
                            (entered, asyncio.get_running_loop().time(), held.fencing_token)
                        )

            await asyncio.gather(*(worker(n) for n in range(4)))
            ordered = sorted(sections)
            assert all(a[1] <= b[0] and a[2] < b[2] for a, b in itertools.pairwise(ordered))
            assert (await client.get("jobs/count")).value == b"12"
            # A timeout leaves the queue; a lost lease fences the holder off.
            first = await client.lock("one", ttl=5).acquire()
            with pytest.raises(LockTimeout):
                await client.lock("one", ttl=5, timeout=0.3).acquire()
            assert first.lease is not None
            await client.lease_revoke(first.lease.id)
            await asyncio.wait_for(first.lost.wait(), 10)
            with pytest.raises(LockLost):
                await first.put("one/x", "stale")
            await first.release()
            # An election.
            election = client.election("primary")
            assert await election.leader() is None
            async with election.campaign("me", ttl=5) as leading:
                assert (await election.leader()).value == b"me"  # type: ignore[union-attr]
                await leading.proclaim("me-2")
                assert (await election.leader()).value == b"me-2"  # type: ignore[union-attr]
            assert await election.leader() is None

    asyncio.run(main())
