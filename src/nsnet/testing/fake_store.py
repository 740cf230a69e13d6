"""``MemoryStore``: the store protocol in memory, shipped beside the real one (as CNI ships
``fake_store.go``) so every user of a store has a test double that keeps the same contract.

The contract tests (tests/unit/test_store_contract.py) run against it and ``LocalStore`` alike:
revisions and compare-and-swap, unique names, transactions that roll back, watches that see
commits only, an IPAM table that refuses a second owner. Documents are copied in and out
through JSON, as SQLite does, so a caller mutating what it got back changes nothing stored.
"""

from __future__ import annotations

import builtins
import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nsnet.errors import Conflict
from nsnet.store.base import Record, Store, revision_conflict
from nsnet.store.watch import Change, Transactions, Watch, WatchHub


class MemoryStore:
    def __init__(self) -> None:
        # (kind, id) -> (name, rev, JSON text)
        self._docs: dict[tuple[str, str], tuple[str, int, str]] = {}
        self._ipam: dict[tuple[str, str], str] = {}
        self._lock = threading.RLock()
        self._watches = WatchHub()
        self._txn = Transactions(self._watches)
        self._saved: tuple[dict[tuple[str, str], tuple[str, int, str]],
                           dict[tuple[str, str], str]] = ({}, {})
        self.closed = False

    def close(self) -> None:
        self.closed = True

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._txn.block(begin=self._snapshot, commit=lambda: None,
                                         rollback=self._restore):
            yield

    def _snapshot(self) -> None:
        self._saved = (dict(self._docs), dict(self._ipam))

    def _restore(self) -> None:
        self._docs, self._ipam = self._saved

    def watch(self, kind: str) -> Watch:
        return self._watches.watch(kind)

    # -- documents ------------------------------------------------------------------------

    def get(self, kind: str, id_: str) -> Record | None:
        with self._lock:
            doc = self._docs.get((kind, id_))
        if doc is None:
            return None
        return Record(kind, id_, doc[0], doc[1], json.loads(doc[2]))

    def put(self, kind: str, id_: str, name: str, data: dict[str, Any],
            expect_rev: int | None = None) -> int:
        text = json.dumps(data)
        with self._lock:
            old = self._docs.get((kind, id_))
            current = old[1] if old else 0
            if expect_rev is not None and expect_rev != current:
                raise revision_conflict(kind, id_, expect_rev)
            for (k, other), (n, _rev, _text) in self._docs.items():
                if k == kind and n == name and other != id_:
                    raise Conflict(f"{kind} name {name!r} is already in use")
            rev = current + 1
            self._docs[(kind, id_)] = (name, rev, text)
            self._txn.changed(Change(kind, id_, name, rev, json.loads(text)))
        return rev

    def delete(self, kind: str, id_: str, expect_rev: int | None = None) -> None:
        with self._lock:
            old = self._docs.get((kind, id_))
            if expect_rev is not None and (old is None or old[1] != expect_rev):
                raise revision_conflict(kind, id_, expect_rev)
            if old is None:
                return
            del self._docs[(kind, id_)]
            self._txn.changed(Change(kind, id_, old[0], old[1] + 1, None))

    def list(self, kind: str) -> builtins.list[dict[str, Any]]:
        return [r.data for r in self.records(kind)]

    def records(self, kind: str) -> builtins.list[Record]:
        with self._lock:
            items = [(i, d) for (k, i), d in self._docs.items() if k == kind]
        return [Record(kind, i, n, r, json.loads(t)) for i, (n, r, t) in items]

    # -- address allocations --------------------------------------------------------------

    def ipam_claim(self, network: str, address: str, owner: str) -> None:
        with self._lock:
            if (network, address) in self._ipam:
                raise Conflict(f"address {address} is already in use")
            self._ipam[(network, address)] = owner

    def ipam_release(self, network: str, address: str) -> None:
        with self._lock:
            self._ipam.pop((network, address), None)

    def ipam_owner(self, network: str, address: str) -> str | None:
        with self._lock:
            return self._ipam.get((network, address))

    def ipam_release_network(self, network: str) -> None:
        with self._lock:
            for key in [k for k in self._ipam if k[0] == network]:
                del self._ipam[key]

    def ipam_all(self) -> builtins.list[tuple[str, str, str]]:
        with self._lock:
            return [(n, a, o) for (n, a), o in copy.copy(self._ipam).items()]


def _is_a_store(s: MemoryStore) -> Store:
    """Never called: mypy checks here that MemoryStore implements the protocol."""
    return s
