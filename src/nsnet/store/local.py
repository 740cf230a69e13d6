"""The embedded store: SQLite under ``--data-root``.

Objects are JSON documents keyed by (kind, id) with a unique name per kind, so the same shape can
later live in etcd. IPAM allocations get their own table with a primary key on (network,
address): the database itself refuses a second owner for one address, whatever the caller does.

Writes that must change together (an endpoint and its address, a network and its allocations)
go in one ``with store.transaction():`` block: a crash (even SIGKILL) between them leaves
either all or none of them on disk, so the store is never in a state where an address is free
but a stored endpoint still uses it.

It implements ``store.base.Store``: revisions with compare-and-swap (``put(..., expect_rev=)``)
and watches, which for one process are an in-process notification after each commit.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nsnet.errors import Conflict
from nsnet.store.base import Record, Store, revision_conflict
from nsnet.store.watch import Change, Transactions, Watch, WatchHub

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT NOT NULL,
    rev  INTEGER NOT NULL DEFAULT 1,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, name)
);
CREATE TABLE IF NOT EXISTS ipam (
    network TEXT NOT NULL,
    address TEXT NOT NULL,
    owner   TEXT NOT NULL,
    PRIMARY KEY (network, address)
);
"""


class LocalStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL keeps WAL durable across a process crash; a power cut may lose the last commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # Re-entrant: every write inside a transaction takes it again on the same thread.
        self._lock = threading.RLock()
        self._watches = WatchHub()
        self._txn = Transactions(self._watches)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them reach the disk at the end of the block, or none does.

        An exception inside rolls the block back and goes on. Nested blocks join the outermost
        one. The block holds the store's lock: it must not await (another task on the loop
        thread would re-enter the lock and its writes would join this transaction) and must
        stay short (other threads wait for it).
        """
        with self._lock, self._txn.block(
                # IMMEDIATE takes the write lock now: no other connection can slip in between.
                begin=lambda: self._db.execute("BEGIN IMMEDIATE"),
                commit=lambda: self._db.execute("COMMIT"),
                rollback=lambda: self._db.execute("ROLLBACK")):
            yield

    def watch(self, kind: str) -> Watch:
        return self._watches.watch(kind)

    # -- documents ------------------------------------------------------------------------

    def get(self, kind: str, id_: str) -> Record | None:
        with self._lock:
            row = self._db.execute("SELECT name, rev, data FROM objects WHERE kind=? AND id=?",
                                   (kind, id_)).fetchone()
        if row is None:
            return None
        return Record(kind, id_, str(row[0]), int(row[1]), json.loads(row[2]))

    def put(self, kind: str, id_: str, name: str, data: dict[str, Any],
            expect_rev: int | None = None) -> int:
        """See ``store.base.Store.put``; the check and the write are one statement."""
        text = json.dumps(data)
        with self._lock:
            try:
                if expect_rev is None:
                    row = self._db.execute(
                        "INSERT INTO objects(kind,id,name,data) VALUES(?,?,?,?) "
                        "ON CONFLICT(kind,id) DO UPDATE SET name=excluded.name, "
                        "data=excluded.data, rev=rev+1 RETURNING rev",
                        (kind, id_, name, text)).fetchone()
                elif expect_rev == 0:
                    row = self._db.execute(
                        "INSERT INTO objects(kind,id,name,data) VALUES(?,?,?,?) "
                        "ON CONFLICT(kind,id) DO NOTHING RETURNING rev",
                        (kind, id_, name, text)).fetchone()
                else:
                    row = self._db.execute(
                        "UPDATE objects SET name=?, data=?, rev=rev+1 "
                        "WHERE kind=? AND id=? AND rev=? RETURNING rev",
                        (name, text, kind, id_, expect_rev)).fetchone()
            except sqlite3.IntegrityError as e:
                raise Conflict(f"{kind} name {name!r} is already in use") from e
            if row is None:
                raise revision_conflict(kind, id_, expect_rev)
            rev = int(row[0])
            self._txn.changed(Change(kind, id_, name, rev, json.loads(text)))
        return rev

    def delete(self, kind: str, id_: str, expect_rev: int | None = None) -> None:
        with self._lock:
            row = self._db.execute("SELECT name, rev FROM objects WHERE kind=? AND id=?",
                                   (kind, id_)).fetchone()
            if expect_rev is not None and (row is None or int(row[1]) != expect_rev):
                raise revision_conflict(kind, id_, expect_rev)
            if row is None:
                return
            self._db.execute("DELETE FROM objects WHERE kind=? AND id=?", (kind, id_))
            self._txn.changed(Change(kind, id_, str(row[0]), int(row[1]) + 1, None))

    def list(self, kind: str) -> builtins.list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM objects WHERE kind=?", (kind,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def records(self, kind: str) -> builtins.list[Record]:
        with self._lock:
            rows = self._db.execute("SELECT id, name, rev, data FROM objects WHERE kind=?",
                                    (kind,)).fetchall()
        return [Record(kind, str(i), str(n), int(r), json.loads(d)) for i, n, r, d in rows]

    # -- address allocations --------------------------------------------------------------

    def ipam_claim(self, network: str, address: str, owner: str) -> None:
        with self._lock:
            try:
                self._db.execute("INSERT INTO ipam(network,address,owner) VALUES(?,?,?)",
                                 (network, address, owner))
            except sqlite3.IntegrityError as e:
                raise Conflict(f"address {address} is already in use") from e

    def ipam_release(self, network: str, address: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM ipam WHERE network=? AND address=?", (network, address))

    def ipam_owner(self, network: str, address: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT owner FROM ipam WHERE network=? AND address=?",
                                   (network, address)).fetchone()
        return str(row[0]) if row else None

    def ipam_release_network(self, network: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM ipam WHERE network=?", (network,))

    def ipam_all(self) -> builtins.list[tuple[str, str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT network,address,owner FROM ipam").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]


def _is_a_store(s: LocalStore) -> Store:
    """Never called: mypy checks here that LocalStore implements the protocol."""
    return s
