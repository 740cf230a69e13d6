"""The key-value protocol every user of cluster-wide state codes against.

Overlay networks (issue 10) share their state between hosts through etcd. Global IPAM, node
membership and the peer watch need exactly what etcd v3 offers and nothing more, so ``KV`` is
that model, kept small enough that an in-memory fake (``nsnet.testing.fake_kv.MemoryKV``) can
implement it with the same semantics and the same contract tests run against both:

- **one revision counter for the whole store**, bumped by every committed write; each key
  carries the revision that created it and the one that last modified it. Compare-and-swap is
  on ``mod_revision`` (``0`` meaning "absent"), so two hosts racing for one VNI or subnet find
  out from the store, not from their own view of it.
- **transactions** that compare several keys and write several keys at once, all or nothing:
  a network, its name and its subnet claim land together.
- **leases**: a key written under a lease vanishes when the lease expires or is revoked; a host
  registers under one and keeps it alive, so a dead host's keys go without anyone cleaning up.
- **watch from a revision**: a consumer lists a prefix (getting the revision it read at), then
  watches from the next revision and misses nothing in between. When that history is gone
  (compacted) the watch raises ``Compacted`` and the consumer lists again.

Every failure to reach the cluster is ``errors.Unavailable`` (the API answers 503), so callers
never see a transport library's exceptions; a lost compare is ``errors.Conflict``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from nsnet.errors import Unavailable

__all__ = ["KV", "Compacted", "KeyValue", "WatchEvent", "prefix_end"]


@dataclass(frozen=True)
class KeyValue:
    """One key as the store holds it at some revision.

    ``lease`` is 0 for a key that lives until deleted. ``value`` is empty on a delete event
    (etcd sends no previous value unless asked, and nobody here needs it).
    """

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class WatchEvent:
    """A committed change to one key; a delete's ``kv.mod_revision`` is the deleting revision."""

    kind: Literal["put", "delete"]
    kv: KeyValue


class Compacted(Unavailable):
    """The history a watch asked for has been compacted away: list again, then watch from the
    listing's revision + 1. ``compact_revision`` is the oldest revision still available.

    A subclass of ``Unavailable`` so a caller that only knows "the watch broke" still does the
    right thing (re-list), while one that cares can tell the two apart.
    """

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch history compacted up to revision {compact_revision}")
        self.compact_revision = compact_revision


class KV(Protocol):
    """An etcd-shaped store: keys are ``str`` (UTF-8 on the wire), values ``bytes``."""

    async def get(self, key: str) -> KeyValue | None:
        """The key, or ``None`` when absent."""
        ...

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix``, sorted by key, and the store revision they were
        read at (watch from that + 1 to miss nothing)."""
        ...

    async def put(
        self, key: str, value: bytes, *, lease: int = 0, expect_mod_revision: int | None = None
    ) -> int:
        """Write ``key``; the new store revision. ``expect_mod_revision``: ``None`` writes
        blindly, ``0`` only creates, ``n`` only replaces the key last modified at ``n``; any
        mismatch raises ``errors.Conflict`` and writes nothing. An unknown lease is
        ``errors.NotFound``."""
        ...

    async def delete(self, key: str, *, expect_mod_revision: int | None = None) -> bool:
        """Whether a key was deleted (deleting an absent key is not an error). With
        ``expect_mod_revision`` a mismatch raises ``errors.Conflict``."""
        ...

    async def txn(
        self,
        compares: Sequence[tuple[str, int]],
        puts: Sequence[tuple[str, bytes, int]],
        deletes: Sequence[str],
    ) -> bool:
        """All or nothing: if every ``(key, mod_revision)`` compare holds (0 = absent), apply
        every ``(key, value, lease)`` put and every delete in one revision and return True;
        otherwise change nothing and return False."""
        ...

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (etcd may round a short TTL up); its id."""
        ...

    async def keepalive_once(self, lease: int) -> int:
        """Refresh ``lease``; its remaining TTL. ``errors.NotFound`` if it has expired."""
        ...

    async def revoke(self, lease: int) -> None:
        """End ``lease`` now, deleting its keys. Idempotent."""
        ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Changes under ``prefix`` from ``start_revision`` on, in commit order, in batches
        (one revision's changes are never split; a batch may hold several revisions).
        ``start_revision`` 0 means "from when the watch starts" (its first iteration, when etcd
        gets the request): racy, so pass a listing's revision + 1 instead. Raises ``Compacted``
        when that revision is gone, ``errors.Unavailable`` when the cluster cannot be reached
        (an implementation may first retry and resume from the last revision it delivered, so
        no event is lost or repeated)."""
        ...

    async def close(self) -> None:
        """Release connections; pending watches end."""
        ...


def prefix_end(prefix: str) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's ``range_end``).

    Computed on the UTF-8 bytes as etcd does (the last byte below 0xff is incremented and the
    rest dropped), so it is bytes: for a non-ASCII prefix the result need not be valid text.
    """
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # etcd: every key
    raw[-1] += 1
    return bytes(raw)
