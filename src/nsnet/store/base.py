"""The store protocol: what the engine and IPAM may ask of any store, local or global.

Documents are JSON objects keyed by (kind, id), with a name unique per kind and a revision per
document. The protocol is the common ground of SQLite (``store.local``, the embedded default)
and etcd (the coming global scope), so it keeps to what both do natively:

- **compare-and-swap on a revision**: ``put(..., expect_rev=n)`` writes only if the document is
  still at revision ``n`` (``0``: only if it does not exist), else ``errors.Conflict``. Two
  daemons sharing etcd must not both allocate the same VNI; the revision is how they find out.
- **watch**: an async iterator of the changes of one kind, in commit order. Changes inside a
  transaction arrive once it commits, never if it rolls back.
- **transaction**: a block whose writes land together or not at all (issue 8: an endpoint and
  its address). etcd will map it to one ``Txn``.
- **IPAM table**: addresses claimed per network with their owner, refused twice by the store
  itself, whatever the caller's in-memory view says.

``testing.fake_store.MemoryStore`` implements the same protocol in memory, and the contract
tests in ``tests/unit/test_store_contract.py`` run against both.
"""

from __future__ import annotations

import builtins
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from nsnet.errors import Conflict
from nsnet.store.watch import Change, Watch

__all__ = ["Change", "IpamTable", "Record", "Store", "Watch", "revision_conflict"]


@dataclass(frozen=True)
class Record:
    """One stored document with its revision (1 on create, +1 on every put)."""

    kind: str
    id: str
    name: str
    rev: int
    data: dict[str, Any]


class IpamTable(Protocol):
    """Address claims per network: all the IPAM allocator needs of a store."""

    def ipam_claim(self, network: str, address: str, owner: str) -> None:
        """``Conflict`` when the address is held already (by anyone)."""

    def ipam_release(self, network: str, address: str) -> None:
        """Idempotent."""

    def ipam_owner(self, network: str, address: str) -> str | None: ...

    def ipam_release_network(self, network: str) -> None: ...

    def ipam_all(self) -> builtins.list[tuple[str, str, str]]:
        """(network, address, owner) of every claim."""
        ...


class Store(IpamTable, Protocol):
    """Documents with revisions, watches and transactions, plus the IPAM table."""

    def get(self, kind: str, id_: str) -> Record | None: ...

    def put(self, kind: str, id_: str, name: str, data: dict[str, Any],
            expect_rev: int | None = None) -> int:
        """Create or replace; the new revision. ``expect_rev``: ``None`` writes blindly,
        ``0`` only creates, ``n`` only replaces revision ``n``; otherwise ``Conflict`` and no
        write. A name another document of the kind holds is a ``Conflict`` too."""
        ...

    def delete(self, kind: str, id_: str, expect_rev: int | None = None) -> None:
        """Idempotent without ``expect_rev``; with it, ``Conflict`` unless at that revision."""

    def list(self, kind: str) -> builtins.list[dict[str, Any]]:
        """Every document of ``kind`` (its data)."""
        ...

    def records(self, kind: str) -> builtins.list[Record]:
        """Every document of ``kind`` with names and revisions."""
        ...

    def watch(self, kind: str) -> Watch:
        """Changes of ``kind`` committed from now on; ``async for change in watch``, and
        ``watch.close()`` (or ``with``) when done. Created on the event loop thread."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Writes inside land together at the end of the block, or none does (an exception
        rolls them back and propagates). Nested blocks join the outermost one."""
        ...

    def close(self) -> None: ...


def revision_conflict(kind: str, id_: str, expect_rev: int | None) -> Conflict:
    """The one wording of a failed compare-and-swap, whichever store refused it."""
    if expect_rev == 0:
        return Conflict(f"{kind} {id_[:12]} already exists")
    return Conflict(f"{kind} {id_[:12]} is not at revision {expect_rev} any more")
