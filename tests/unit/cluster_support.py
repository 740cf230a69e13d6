"""Helpers shared by the cluster unit tests: interleaved store clients, async tests."""

from __future__ import annotations

import asyncio
import functools
import heapq
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, ParamSpec

from nsnet.store.kv import KeyValue, WatchEvent
from nsnet.testing.fake_kv import MemoryKV

P = ParamSpec("P")


def synced(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test on a fresh loop (the project has no pytest-asyncio); the wrapper keeps
    the signature, so fixtures and hypothesis's @given see the real parameters."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


class InterleavingKV:
    """One client of a shared MemoryKV that yields to the loop a random number of times before
    and after every call, so tasks using different clients interleave between any two store
    operations, as daemons on different hosts do."""

    def __init__(self, backend: MemoryKV, rng: random.Random) -> None:
        self.backend = backend
        self.rng = rng

    async def _pause(self) -> None:
        for _ in range(self.rng.randrange(4)):
            await asyncio.sleep(0)

    async def get(self, key: str) -> KeyValue | None:
        await self._pause()
        try:
            return await self.backend.get(key)
        finally:
            await self._pause()

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        await self._pause()
        try:
            return await self.backend.get_prefix(prefix)
        finally:
            await self._pause()

    async def put(self, key: str, value: bytes, *, lease: int = 0,
                  expect_mod_revision: int | None = None) -> int:
        await self._pause()
        try:
            return await self.backend.put(key, value, lease=lease,
                                          expect_mod_revision=expect_mod_revision)
        finally:
            await self._pause()

    async def delete(self, key: str, *, expect_mod_revision: int | None = None) -> bool:
        await self._pause()
        try:
            return await self.backend.delete(key, expect_mod_revision=expect_mod_revision)
        finally:
            await self._pause()

    async def txn(self, compares: Sequence[tuple[str, int]],
                  puts: Sequence[tuple[str, bytes, int]], deletes: Sequence[str]) -> bool:
        await self._pause()
        try:
            return await self.backend.txn(compares, puts, deletes)
        finally:
            await self._pause()

    async def grant(self, ttl: int) -> int:
        return await self.backend.grant(ttl)

    async def keepalive_once(self, lease: int) -> int:
        return await self.backend.keepalive_once(lease)

    async def revoke(self, lease: int) -> None:
        await self.backend.revoke(lease)

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        return self.backend.watch(prefix, start_revision)

    async def close(self) -> None:
        pass




class FakeTime:
    """Discrete-event time for code that sleeps through an injected ``sleep``: ``advance``
    moves MemoryKV's lease clock and the sleepers' clock together, waking each sleeper at its
    own due time (a keepalive due at 9.9 s runs before a lease deadline at 10 s)."""

    def __init__(self, kv: MemoryKV) -> None:
        self.kv = kv
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.kv.now + max(seconds, 0.0), self._seq, fut))
        await fut

    @staticmethod
    async def settle() -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float, step: float = 0.25,
                      each: Callable[[], None] | None = None) -> None:
        """Move time forward, at most ``step`` at a time; ``each`` runs after every step."""
        target = self.kv.now + seconds
        await self.settle()
        while self.kv.now < target:
            due = self._sleepers[0][0] if self._sleepers else target
            to = min(due, target, self.kv.now + step)
            self.kv.advance(to - self.kv.now)
            while self._sleepers and self._sleepers[0][0] <= self.kv.now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
            if each is not None:
                each()
