"""The KV contract (``nsnet.testing.kv_contract``) on ``MemoryKV``, plus what only the fake
offers (its clock, ``down()``), which other units' tests rely on."""

from __future__ import annotations

import asyncio

import pytest

from nsnet.errors import Unavailable
from nsnet.store.kv import prefix_end
from nsnet.testing.fake_kv import MemoryKV
from nsnet.testing.kv_contract import CHECKS, Harness, collect


def harness(kv: MemoryKV) -> Harness:
    async def let_expire(lease: int, ttl: int) -> None:
        kv.advance(ttl)

    async def compact(revision: int) -> None:
        kv.compact(revision)

    return Harness(kv=kv, prefix="/t/", let_expire=let_expire, compact=compact)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_contract(name: str) -> None:
    asyncio.run(CHECKS[name](harness(MemoryKV())))


def test_contract_checks_share_one_store() -> None:
    """The checks clean up nothing, so running all of them on one store (as the etcd test
    does) must work too: none may assume an empty store or a starting revision."""

    async def body() -> None:
        kv = MemoryKV()
        await kv.put("/elsewhere", b"noise")
        for name in sorted(CHECKS):
            await CHECKS[name](Harness(kv, f"/{name}/", harness(kv).let_expire,
                                       harness(kv).compact))

    asyncio.run(body())


def test_lease_lives_while_kept_alive_and_expires_after() -> None:
    async def body() -> None:
        kv = MemoryKV()
        lease = await kv.grant(10)
        await kv.put("/nodes/a", b"a", lease=lease)
        for _ in range(5):
            kv.advance(6)
            assert await kv.keepalive_once(lease) == 10
        assert await kv.get("/nodes/a") is not None
        rev = kv.revision
        kv.advance(10)
        assert await kv.get("/nodes/a") is None
        assert kv.revision == rev + 1 and kv.leases == []

    asyncio.run(body())


def test_down_fails_calls_and_open_watches() -> None:
    async def body() -> None:
        kv = MemoryKV()
        watch = kv.watch("/", kv.revision + 1)
        await kv.put("/a", b"1")
        assert [e.kv.key for e in await collect(watch, 1)] == ["/a"]
        kv.down()
        with pytest.raises(Unavailable):
            await anext(watch)
        with pytest.raises(Unavailable):
            await kv.put("/b", b"1")
        kv.up()
        found, _ = await kv.get_prefix("/")
        assert [x.key for x in found] == ["/a"]

    asyncio.run(body())


def test_watch_from_now_sees_only_later_writes() -> None:
    """Revision 0 means "from when the watch starts" (its first iteration, as with etcd,
    where that is when the create request reaches the server)."""

    async def body() -> None:
        kv = MemoryKV()
        await kv.put("/a", b"old")
        watch = kv.watch("/", 0)
        first = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0)
        await kv.put("/a", b"new")
        assert [e.kv.value for e in await first] == [b"new"]
        await kv.close()
        with pytest.raises(StopAsyncIteration):
            await anext(watch)

    asyncio.run(body())


@pytest.mark.parametrize(
    ("prefix", "end"),
    [("/nsnet/v1/", b"/nsnet/v10"), ("a", b"b"), ("a\xff", b"a\xc3\xc0"), ("", b"\0")],
)
def test_prefix_end(prefix: str, end: bytes) -> None:
    assert prefix_end(prefix) == end
