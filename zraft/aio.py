"""zraft for asyncio programs: `zraft.aio.Client` (`AsyncClient`), with its watches
(`AsyncWatch`) and leases (`AsyncLease`); see `zraft.client.aio`.

    from zraft import aio

    async with aio.Client.from_config("conf/local.toml") as client:
        await client.put("k", "v")
        async for event in client.watch("k"):
            ...

Kept apart from `zraft.client` so that a program that does not use asyncio does not pay
for importing pyzmq's asyncio support.
"""

from zraft.client.aio import AsyncClient
from zraft.client.aioleases import AsyncLease
from zraft.client.aiowatch import AsyncWatch

Client = AsyncClient
"""`zraft.aio.Client` is `AsyncClient`."""

__all__ = ["AsyncClient", "AsyncLease", "AsyncWatch", "Client"]
