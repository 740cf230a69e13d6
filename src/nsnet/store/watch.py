"""Change notification for stores: what etcd's watch gives, done in-process for SQLite.

A store publishes each committed change to the ``Watch``es of its kind. A watch is an async
iterator bound to the event loop it was opened on; writes may come from any thread (the store
is used from executor threads too), so delivery always hops onto that loop, which keeps the
order in which the store published (its commit order, as it publishes under its lock).

A watch holds at most ``limit`` undelivered changes. A consumer that falls further behind gets
``WatchLagged`` and must list again and open a new watch, as an etcd client must after a
compaction: memory stays bounded whatever a slow reader does.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nsnet.errors import Unavailable

DEFAULT_LIMIT = 10_000


@dataclass(frozen=True)
class Change:
    """One committed write: ``data`` is None when the document was deleted."""

    kind: str
    id: str
    name: str
    rev: int
    data: dict[str, Any] | None

    @property
    def deleted(self) -> bool:
        return self.data is None


class WatchLagged(Unavailable):
    """The watcher fell too far behind; list again and watch anew."""


class Watch:
    """Changes of one kind, in commit order: ``async for change in watch``."""

    def __init__(self, hub: WatchHub, kind: str, limit: int) -> None:
        self.kind = kind
        self._hub = hub
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Change] = deque()
        self._wakeup = asyncio.Event()
        self._lagged = False
        self._closed = False

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Change:
        while True:
            if self._lagged:
                self.close()
                self._lagged = False
                raise WatchLagged(f"watch on {self.kind} fell more than {self._limit} "
                                  "changes behind")
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving; a reader waiting now ends its loop once the queue is drained."""
        self._closed = True
        self._hub.forget(self)
        self._notify(self._wakeup.set)

    def deliver(self, change: Change) -> None:
        """From any thread: queue ``change`` for the reader."""
        self._notify(lambda: self._push(change))

    def _notify(self, fn: Callable[[], None]) -> None:
        # Always through the loop, even from its own thread: changes published from two
        # threads then reach the reader in the order they were published (commit order).
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:
            pass  # the loop is closed: nobody is reading any more

    def _push(self, change: Change) -> None:
        if self._closed or self._lagged:
            return
        if len(self._queue) >= self._limit:
            self._queue.clear()
            self._lagged = True
        else:
            self._queue.append(change)
        self._wakeup.set()


class WatchHub:
    """The watches of one store, by kind."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._watches: dict[str, set[Watch]] = {}
        self._lock = threading.Lock()

    def watch(self, kind: str) -> Watch:
        w = Watch(self, kind, self._limit)
        with self._lock:
            self._watches.setdefault(kind, set()).add(w)
        return w

    def forget(self, w: Watch) -> None:
        with self._lock:
            self._watches.get(w.kind, set()).discard(w)

    def publish(self, changes: list[Change]) -> None:
        """After a commit only: a rolled-back change must never reach a watcher."""
        for change in changes:
            with self._lock:
                targets = list(self._watches.get(change.kind, ()))
            for w in targets:
                w.deliver(change)


class Transactions:
    """Nested transactions of one store and the changes they hold back from its watchers.

    Shared by every store, so each says only how it begins, commits and rolls back: changes
    made inside the outermost block are published at its commit and dropped at a rollback (a
    watcher must never see a write that did not happen); nested blocks join the outermost one.
    The caller holds its store's lock around ``block`` and ``changed``.
    """

    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub
        self._depth = 0
        self._pending: list[Change] = []

    @contextmanager
    def block(self, begin: Callable[[], object], commit: Callable[[], object],
              rollback: Callable[[], object]) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        begin()
        self._depth = 1
        try:
            yield
        except BaseException:
            rollback()
            self._pending.clear()
            raise
        else:
            commit()
            changes, self._pending = self._pending, []
            self._hub.publish(changes)
        finally:
            self._depth = 0

    def changed(self, change: Change) -> None:
        """Publish now, or at the commit of the open transaction."""
        if self._depth:
            self._pending.append(change)
        else:
            self._hub.publish([change])
