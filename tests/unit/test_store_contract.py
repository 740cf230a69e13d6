"""One contract, every store: LocalStore (SQLite) and MemoryStore (tests) keep the same promises.

An etcd store will be added to ``STORES`` and must pass the same tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nsnet.errors import Conflict
from nsnet.store.base import Store
from nsnet.store.local import LocalStore
from nsnet.store.watch import Change, Watch, WatchHub, WatchLagged
from nsnet.testing.fake_store import MemoryStore

STORES: dict[str, Callable[[Path], Store]] = {
    "local": lambda p: LocalStore(p / "nsnet.db"),
    "memory": lambda _p: MemoryStore(),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = STORES[request.param](tmp_path)
    yield s
    s.close()


def test_revisions_count_writes_and_get_returns_them(store: Store) -> None:
    assert store.get("network", "n1") is None
    assert store.put("network", "n1", "front", {"a": 1}) == 1
    assert store.put("network", "n1", "front", {"a": 2}) == 2
    rec = store.get("network", "n1")
    assert rec is not None and (rec.name, rec.rev, rec.data) == ("front", 2, {"a": 2})
    assert [r.id for r in store.records("network")] == ["n1"]
    assert store.list("network") == [{"a": 2}]
    assert store.list("container") == []


def test_compare_and_swap(store: Store) -> None:
    assert store.put("network", "n1", "front", {"v": 1}, expect_rev=0) == 1
    with pytest.raises(Conflict, match="already exists"):
        store.put("network", "n1", "front", {"v": 9}, expect_rev=0)
    assert store.put("network", "n1", "front", {"v": 2}, expect_rev=1) == 2
    # A writer that read revision 1 lost the race: nothing is written.
    with pytest.raises(Conflict, match="revision 1"):
        store.put("network", "n1", "front", {"v": 3}, expect_rev=1)
    with pytest.raises(Conflict):
        store.put("network", "n2", "back", {}, expect_rev=4)  # no such document
    assert store.get("network", "n2") is None
    with pytest.raises(Conflict):
        store.delete("network", "n1", expect_rev=1)
    rec = store.get("network", "n1")
    assert rec is not None and rec.data == {"v": 2}
    store.delete("network", "n1", expect_rev=2)
    assert store.get("network", "n1") is None
    store.delete("network", "n1")  # idempotent without a revision


def test_names_are_unique_per_kind(store: Store) -> None:
    store.put("network", "n1", "front", {})
    with pytest.raises(Conflict, match="front"):
        store.put("network", "n2", "front", {})
    with pytest.raises(Conflict, match="front"):
        store.put("network", "n2", "front", {}, expect_rev=0)
    store.put("container", "c1", "front", {})  # another kind: fine
    store.put("network", "n1", "renamed", {})
    store.put("network", "n2", "front", {})  # the old name is free again
    assert sorted(r.name for r in store.records("network")) == ["front", "renamed"]


def test_stored_documents_are_copies(store: Store) -> None:
    data = {"opts": {"k": "v"}}
    store.put("network", "n1", "front", data)
    data["opts"]["k"] = "changed"
    store.list("network")[0]["opts"]["k"] = "changed too"
    assert store.list("network") == [{"opts": {"k": "v"}}]


def test_transaction_rolls_back_documents_and_addresses_together(store: Store) -> None:
    store.ipam_claim("n", "10.0.0.2", "ep1")
    store.put("container", "c1", "one", {"eps": ["ep1"]})
    with pytest.raises(RuntimeError), store.transaction():
        store.ipam_release("n", "10.0.0.2")
        store.put("container", "c1", "one", {"eps": []})
        with store.transaction():  # nested: joins the outer block
            store.put("container", "c2", "two", {})
        raise RuntimeError
    assert store.ipam_owner("n", "10.0.0.2") == "ep1"
    assert store.list("container") == [{"eps": ["ep1"]}]
    rec = store.get("container", "c1")
    assert rec is not None and rec.rev == 1
    with pytest.raises(Conflict), store.transaction():
        store.put("container", "c3", "three", {})
        store.ipam_claim("n", "10.0.0.2", "ep2")  # the store's own refusal
    assert store.get("container", "c3") is None


def test_ipam_table(store: Store) -> None:
    store.ipam_claim("n1", "10.0.0.2", "ep1")
    store.ipam_claim("n1", "10.0.0.3", "ep2")
    store.ipam_claim("n2", "10.0.0.2", "ep3")  # same address, another network
    with pytest.raises(Conflict):
        store.ipam_claim("n1", "10.0.0.2", "ep9")
    assert store.ipam_owner("n1", "10.0.0.2") == "ep1"
    store.ipam_release("n1", "10.0.0.2")
    store.ipam_release("n1", "10.0.0.2")
    assert store.ipam_owner("n1", "10.0.0.2") is None
    store.ipam_release_network("n1")
    assert store.ipam_all() == [("n2", "10.0.0.2", "ep3")]


async def _drain(w: Watch, n: int) -> list[Change]:
    out: list[Change] = []
    async for c in w:
        out.append(c)
        if len(out) == n:
            break
    return out


def test_watch_sees_commits_in_order_and_never_a_rollback(store: Store) -> None:
    async def main() -> list[Change]:
        with store.watch("network") as w:
            store.put("network", "n1", "a", {"v": 1})
            store.put("container", "c1", "x", {})  # another kind: not seen
            with pytest.raises(RuntimeError), store.transaction():
                store.put("network", "n2", "b", {})
                raise RuntimeError
            with store.transaction():
                store.put("network", "n1", "a", {"v": 2})
                store.put("network", "n3", "c", {})
            store.delete("network", "n3")
            return await asyncio.wait_for(_drain(w, 4), 5)

    got = asyncio.run(main())
    assert [(c.id, c.rev, c.deleted) for c in got] == [
        ("n1", 1, False), ("n1", 2, False), ("n3", 1, False), ("n3", 2, True)]
    assert got[1].data == {"v": 2}


def test_watch_delivers_writes_from_other_threads(store: Store) -> None:
    async def main() -> list[Change]:
        with store.watch("network") as w:
            t = threading.Thread(target=lambda: [store.put("network", f"n{i}", f"x{i}", {})
                                                 for i in range(20)])
            t.start()
            got = await asyncio.wait_for(_drain(w, 20), 5)
            t.join()
            return got

    assert [c.id for c in asyncio.run(main())] == [f"n{i}" for i in range(20)]


def test_a_watcher_that_falls_behind_is_told_to_relist() -> None:
    """Memory stays bounded whatever a slow reader does."""
    hub = WatchHub(limit=3)

    async def main() -> None:
        w = hub.watch("network")
        hub.publish([Change("network", f"n{i}", "x", 1, {}) for i in range(5)])
        with pytest.raises(WatchLagged):
            await asyncio.wait_for(w.__anext__(), 5)
        # A lagged watch is closed: a fresh one is needed.
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(w.__anext__(), 5)

    asyncio.run(main())
