"""The promises every ``KV`` keeps, as checks that run against any implementation.

``tests/unit/test_kv_contract.py`` runs them on ``MemoryKV`` and
``tests/integration/test_etcd_kv.py`` on ``EtcdKV`` over a real etcd, so the fake that global
IPAM and membership are unit-tested on cannot drift from what etcd does. Each check takes a
``Harness``: the store, plus what only the test can do to it (let a lease run out, compact the
history), since a fake does that with its clock and a real etcd with real time.

The checks never assume a starting revision or an empty store beyond their own prefix, so the
same etcd can serve several of them in a row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from nsnet.errors import Conflict, NotFound
from nsnet.store.kv import KV, Compacted, WatchEvent

__all__ = ["CHECKS", "Harness", "close_watch", "collect"]


@dataclass
class Harness:
    kv: KV
    prefix: str
    let_expire: Callable[[int, int], Awaitable[None]]  # (lease, ttl): until the lease is gone
    compact: Callable[[int], Awaitable[None]]


async def collect(
    watch: AsyncIterator[list[WatchEvent]], n: int, timeout: float = 5.0
) -> list[WatchEvent]:
    """The next ``n`` events of ``watch`` however the store batches them; fails after
    ``timeout`` seconds so a lost event is a failure, not a hang."""
    got: list[WatchEvent] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.extend(await anext(watch))
    return got


async def close_watch(watch: AsyncIterator[list[WatchEvent]]) -> None:
    """End a watch early (an async generator's ``aclose``), releasing its stream."""
    aclose = getattr(watch, "aclose", None)
    if aclose is not None:
        await aclose()


async def _expect(exc: type[BaseException], what: Awaitable[object]) -> BaseException:
    try:
        await what
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}")


async def check_put_get_revisions(h: Harness) -> None:
    kv, p = h.kv, h.prefix
    assert await kv.get(p + "a") is None
    r1 = await kv.put(p + "a", b"1")
    r2 = await kv.put(p + "b", b"2")
    r3 = await kv.put(p + "a", b"3")
    assert r1 < r2 < r3
    a = await kv.get(p + "a")
    assert a is not None and (a.value, a.create_revision, a.mod_revision) == (b"3", r1, r3)
    found, rev = await kv.get_prefix(p)
    assert [(x.key, x.value) for x in found] == [(p + "a", b"3"), (p + "b", b"2")]
    assert rev >= r3
    assert (await kv.get_prefix(p + "zz"))[0] == []


async def check_compare_and_swap(h: Harness) -> None:
    kv, k = h.kv, h.prefix + "cas"
    r1 = await kv.put(k, b"v1", expect_mod_revision=0)
    await _expect(Conflict, kv.put(k, b"again", expect_mod_revision=0))
    r2 = await kv.put(k, b"v2", expect_mod_revision=r1)
    await _expect(Conflict, kv.put(k, b"stale", expect_mod_revision=r1))
    await _expect(Conflict, kv.put(h.prefix + "nothere", b"x", expect_mod_revision=r1))
    await _expect(Conflict, kv.delete(k, expect_mod_revision=r1))
    held = await kv.get(k)
    assert held is not None and (held.value, held.mod_revision) == (b"v2", r2)
    assert await kv.get(h.prefix + "nothere") is None
    assert await kv.delete(k, expect_mod_revision=r2) is True
    assert await kv.delete(k) is False  # idempotent
    assert await kv.get(k) is None


async def check_txn_all_or_nothing(h: Harness) -> None:
    kv, p = h.kv, h.prefix
    r0 = await kv.put(p + "old", b"x")
    _, before = await kv.get_prefix(p)
    # One compare fails: neither put nor delete happens, and no revision is spent.
    ok = await kv.txn([(p + "old", r0), (p + "new", r0)], [(p + "new", b"n", 0)], [p + "old"])
    assert ok is False
    found, after = await kv.get_prefix(p)
    assert [x.key for x in found] == [p + "old"] and after == before
    watch = kv.watch(p, after + 1)
    ok = await kv.txn([(p + "old", r0), (p + "new", 0)], [(p + "new", b"n", 0)], [p + "old"])
    assert ok is True
    events = await collect(watch, 2)
    await close_watch(watch)
    assert sorted((e.kind, e.kv.key) for e in events) == [("delete", p + "old"), ("put", p + "new")]
    assert len({e.kv.mod_revision for e in events}) == 1  # one revision for the whole txn
    new = await kv.get(p + "new")
    assert new is not None and new.mod_revision == events[0].kv.mod_revision
    assert await kv.get(p + "old") is None


async def check_leases(h: Harness) -> None:
    kv, p = h.kv, h.prefix
    lease = await kv.grant(30)
    await kv.put(p + "mine", b"1", lease=lease)
    await kv.put(p + "other", b"2")
    held = await kv.get(p + "mine")
    assert held is not None and held.lease == lease
    assert 0 < await kv.keepalive_once(lease) <= 30
    await kv.revoke(lease)
    assert await kv.get(p + "mine") is None
    assert await kv.get(p + "other") is not None
    await _expect(NotFound, kv.keepalive_once(lease))
    await _expect(NotFound, kv.put(p + "late", b"x", lease=lease))
    await _expect(NotFound, kv.txn([], [(p + "late", b"x", lease)], []))
    assert await kv.get(p + "late") is None
    await kv.revoke(lease)  # idempotent


async def check_lease_expiry(h: Harness) -> None:
    kv, p = h.kv, h.prefix
    lease = await kv.grant(1)
    kept = await kv.grant(60)
    await kv.put(p + "short", b"1", lease=lease)
    await kv.put(p + "long", b"1", lease=kept)
    await h.let_expire(lease, 1)
    assert await kv.get(p + "short") is None
    assert await kv.get(p + "long") is not None
    await _expect(NotFound, kv.keepalive_once(lease))
    await kv.revoke(kept)


async def check_watch_order_and_prefix(h: Harness) -> None:
    kv, p = h.kv, h.prefix
    await kv.put(p + "w/seed", b"0")
    _, rev = await kv.get_prefix(p + "w/")
    watch = kv.watch(p + "w/", rev + 1)
    expected: list[tuple[str, str, bytes]] = []
    for i in range(5):
        await kv.put(p + f"w/{i}", str(i).encode())
        await kv.put(p + "x/outside", b"not watched")
        expected.append(("put", p + f"w/{i}", str(i).encode()))
    await kv.delete(p + "w/seed")
    expected.append(("delete", p + "w/seed", b""))
    events = await collect(watch, len(expected))
    await close_watch(watch)
    assert [(e.kind, e.kv.key, e.kv.value) for e in events] == expected
    revisions = [e.kv.mod_revision for e in events]
    assert revisions == sorted(revisions) and revisions[0] > rev
    # The same history again, replayed from the start revision.
    replay = kv.watch(p + "w/", rev + 1)
    again = await collect(replay, len(expected))
    await close_watch(replay)
    assert again == events


async def check_compacted(h: Harness) -> None:
    kv, p = h.kv, h.prefix
    r1 = await kv.put(p + "c", b"1")
    r2 = await kv.put(p + "c", b"2")
    await kv.put(p + "c", b"3")
    await h.compact(r2 + 1)
    err = await _expect(Compacted, collect(kv.watch(p, r1), 1))
    assert isinstance(err, Compacted) and err.compact_revision == r2 + 1
    # What is left of history is still served.
    events = await collect(kv.watch(p, r2 + 1), 1)
    assert events[0].kv.value == b"3"


CHECKS: dict[str, Callable[[Harness], Awaitable[None]]] = {
    f.__name__.removeprefix("check_"): f
    for f in (
        check_put_get_revisions,
        check_compare_and_swap,
        check_txn_all_or_nothing,
        check_leases,
        check_lease_expiry,
        check_watch_order_and_prefix,
        check_compacted,
    )
}
