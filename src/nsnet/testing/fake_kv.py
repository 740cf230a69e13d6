"""``MemoryKV``: the ``KV`` protocol in memory, with etcd's semantics, for tests without etcd.

Every user of cluster-wide state (global IPAM, node membership, the peer watch) is tested
against this first, so it must behave as etcd does where callers could notice: one revision
counter bumped once per committed change (a read-only or no-op transaction bumps nothing), a
key's ``create_revision`` and ``mod_revision``, compares where an absent key has
``mod_revision`` 0, a lease whose expiry deletes its keys in one revision, a watch that replays
history from any revision not yet compacted and then follows live, and ``Compacted`` for one
that asks for less. The contract tests (``nsnet.testing.kv_contract``) hold it and ``EtcdKV``
to the same promises.

What etcd does with time and faults is under the test's control instead: ``advance(seconds)``
moves the lease clock (expiring what is due), ``expire(lease)`` ends one lease at once, and
``down()``/``up()`` make every call raise ``errors.Unavailable`` the way an unreachable
cluster does, including watches already open.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from nsnet.errors import Conflict, Invalid, NotFound, Unavailable
from nsnet.store.kv import Compacted, KeyValue, WatchEvent

__all__ = ["MemoryKV"]

_UNAVAILABLE = "cluster store unreachable (MemoryKV is down)"


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


@dataclass
class _Watcher:
    prefix: str
    queue: asyncio.Queue[list[WatchEvent] | BaseException | None]


class MemoryKV:
    """An etcd stand-in: revisions, CAS, transactions, leases on a fake clock, watch."""

    def __init__(self) -> None:
        self.revision = 1  # etcd's empty store is at revision 1
        self.compact_revision = 0
        self.now = 0.0
        self._keys: dict[str, KeyValue] = {}
        self._history: list[tuple[int, list[WatchEvent]]] = []
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x6E73_0000_0001)
        self._watchers: list[_Watcher] = []
        self._available = True

    # ---- the test's controls -------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the lease clock; every lease whose TTL has passed expires (each in its own
        revision, as etcd revokes them one by one)."""
        self.now += seconds
        for lease_id in sorted(i for i, le in self._leases.items() if le.deadline <= self.now):
            self.expire(lease_id)

    def expire(self, lease: int) -> None:
        """End ``lease`` now as if its TTL had run out: its keys go in one revision."""
        held = self._leases.pop(lease, None)
        if held is not None:
            self._commit([], sorted(held.keys))

    def down(self) -> None:
        """From now on every call raises ``Unavailable``; open watches end with it."""
        self._available = False
        for w in self._watchers:
            w.queue.put_nowait(Unavailable(_UNAVAILABLE))
        self._watchers.clear()

    def up(self) -> None:
        self._available = True

    def compact(self, revision: int) -> None:
        """Forget the history before ``revision``: a watch from an older one gets
        ``Compacted``."""
        if revision > self.revision:
            raise Invalid(f"cannot compact to {revision}: store is at {self.revision}")
        self.compact_revision = max(self.compact_revision, revision)
        self._history = [(r, evs) for r, evs in self._history if r >= self.compact_revision]

    @property
    def leases(self) -> list[int]:
        """Ids of the leases alive now."""
        return sorted(self._leases)

    # ---- KV --------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._check()
        return self._keys.get(key)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        self._check()
        found = [kv for k, kv in sorted(self._keys.items()) if k.startswith(prefix)]
        return found, self.revision

    async def put(
        self, key: str, value: bytes, *, lease: int = 0, expect_mod_revision: int | None = None
    ) -> int:
        self._check()
        compares = [] if expect_mod_revision is None else [(key, expect_mod_revision)]
        if not self._apply(compares, [(key, value, lease)], []):
            raise Conflict(_mismatch(key, expect_mod_revision, self._keys.get(key)))
        return self.revision

    async def delete(self, key: str, *, expect_mod_revision: int | None = None) -> bool:
        self._check()
        existed = key in self._keys
        compares = [] if expect_mod_revision is None else [(key, expect_mod_revision)]
        if not self._apply(compares, [], [key]):
            raise Conflict(_mismatch(key, expect_mod_revision, self._keys.get(key)))
        return existed

    async def txn(
        self,
        compares: Sequence[tuple[str, int]],
        puts: Sequence[tuple[str, bytes, int]],
        deletes: Sequence[str],
    ) -> bool:
        self._check()
        return self._apply(compares, puts, deletes)

    async def grant(self, ttl: int) -> int:
        self._check()
        if ttl <= 0:
            raise Invalid(f"lease TTL must be positive, not {ttl}")
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(ttl=ttl, deadline=self.now + ttl)
        return lease_id

    async def keepalive_once(self, lease: int) -> int:
        self._check()
        held = self._leases.get(lease)
        if held is None:
            raise NotFound(f"lease {lease:x} not found (expired or revoked)")
        held.deadline = self.now + held.ttl
        return held.ttl

    async def revoke(self, lease: int) -> None:
        self._check()
        self.expire(lease)

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        return self._watch(prefix, start_revision)

    async def close(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(None)
        self._watchers.clear()

    # ---- inside ----------------------------------------------------------------------------

    def _check(self) -> None:
        if not self._available:
            raise Unavailable(_UNAVAILABLE)

    async def _watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        self._check()
        start = start_revision if start_revision > 0 else self.revision + 1
        if start < self.compact_revision:
            raise Compacted(self.compact_revision)
        watcher = _Watcher(prefix, asyncio.Queue())
        # Replay and registration happen with no await between them, so no commit can fall
        # in the gap: the history covers everything up to now, the queue everything after.
        for rev, events in self._history:
            mine = [e for e in events if e.kv.key.startswith(prefix)]
            if rev >= start and mine:
                watcher.queue.put_nowait(mine)
        self._watchers.append(watcher)
        try:
            while True:
                item = await watcher.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def _apply(
        self,
        compares: Sequence[tuple[str, int]],
        puts: Sequence[tuple[str, bytes, int]],
        deletes: Sequence[str],
    ) -> bool:
        for _key, _value, lease in puts:
            if lease and lease not in self._leases:
                raise NotFound(f"lease {lease:x} not found (expired or revoked)")
        for key, mod_revision in compares:
            held = self._keys.get(key)
            if (held.mod_revision if held else 0) != mod_revision:
                return False
        self._commit(puts, deletes)
        return True

    def _commit(self, puts: Sequence[tuple[str, bytes, int]], deletes: Sequence[str]) -> None:
        """Apply writes as one revision (none if nothing changes) and tell the watchers."""
        gone = [k for k in dict.fromkeys(deletes) if k in self._keys]
        if not puts and not gone:
            return
        rev = self.revision + 1
        events: list[WatchEvent] = []
        for key in gone:
            old = self._keys.pop(key)
            self._unlease(key, old.lease)
            events.append(WatchEvent("delete", KeyValue(key, b"", rev, 0, 0)))
        for key, value, lease in puts:
            old_kv = self._keys.get(key)
            if old_kv is not None:
                self._unlease(key, old_kv.lease)
            created = old_kv.create_revision if old_kv else rev
            kv = KeyValue(key, bytes(value), rev, created, lease)
            self._keys[key] = kv
            if lease:
                self._leases[lease].keys.add(key)
            events.append(WatchEvent("put", kv))
        self.revision = rev
        self._history.append((rev, events))
        for w in self._watchers:
            mine = [e for e in events if e.kv.key.startswith(w.prefix)]
            if mine:
                w.queue.put_nowait(mine)

    def _unlease(self, key: str, lease: int) -> None:
        if lease in self._leases:
            self._leases[lease].keys.discard(key)


def _mismatch(key: str, expected: int | None, held: KeyValue | None) -> str:
    now = f"at revision {held.mod_revision}" if held else "absent"
    want = "absent" if expected == 0 else f"at revision {expected}"
    return f"{key}: expected {want}, found {now} (changed by another writer)"
