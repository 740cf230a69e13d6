"""The store's transactions: an endpoint and its address change together or not at all."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nsnet.errors import Conflict
from nsnet.store.local import LocalStore


def _rows(path: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    """What is on disk, read by a second connection (not through the store under test)."""
    db = sqlite3.connect(str(path))
    try:
        names = [r[0] for r in db.execute("SELECT name FROM objects ORDER BY name")]
        ipam = [(str(a), str(b), str(c)) for a, b, c in
                db.execute("SELECT network,address,owner FROM ipam ORDER BY address")]
    finally:
        db.close()
    return names, ipam


def test_commit_writes_everything_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = LocalStore(path)
    with s.transaction():
        s.ipam_claim("n", "10.0.0.2", "ep1")
        s.put("container", "c1", "one", {"x": 1})
        # Not visible to another connection before the commit.
        assert _rows(path) == ([], [])
    assert _rows(path) == (["one"], [("n", "10.0.0.2", "ep1")])
    s.close()


def test_exception_rolls_back_every_write_of_the_block(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = LocalStore(path)
    s.ipam_claim("n", "10.0.0.2", "ep1")
    s.put("container", "c1", "one", {"eps": ["ep1"]})
    with pytest.raises(RuntimeError), s.transaction():
        s.ipam_release("n", "10.0.0.2")
        s.put("container", "c1", "one", {"eps": []})
        raise RuntimeError("crash before the end of the block")
    assert _rows(path) == (["one"], [("n", "10.0.0.2", "ep1")])
    assert s.list("container") == [{"eps": ["ep1"]}]
    # A conflict inside the block (the database's own refusal) also undoes the earlier writes.
    with pytest.raises(Conflict), s.transaction():
        s.put("container", "c2", "two", {})
        s.ipam_claim("n", "10.0.0.2", "ep2")
    assert _rows(path) == (["one"], [("n", "10.0.0.2", "ep1")])
    assert s.ipam_owner("n", "10.0.0.2") == "ep1"
    assert s.ipam_owner("n", "10.0.0.3") is None
    s.close()


def test_nested_blocks_join_the_outermost(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = LocalStore(path)
    with pytest.raises(RuntimeError), s.transaction():
        with s.transaction():
            s.put("network", "n1", "net", {})
        # The inner block's end is not a commit.
        assert _rows(path) == ([], [])
        raise RuntimeError
    assert _rows(path) == ([], [])
    with s.transaction(), s.transaction():
        s.put("network", "n1", "net", {})
    assert _rows(path) == (["net"], [])
    s.close()


def test_other_threads_wait_for_the_block(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "s.db")
    seen: list[list[dict[str, object]]] = []
    t = threading.Thread(target=lambda: seen.append(s.list("container")))
    with s.transaction():
        s.put("container", "c1", "one", {"v": 1})
        t.start()
        time.sleep(0.05)
        # The reader is blocked on the lock, not reading a half-made state.
        assert seen == []
        s.put("container", "c1", "one", {"v": 2})
    t.join(5)
    assert seen == [[{"v": 2}]]
    s.close()


def test_a_kill_inside_the_block_leaves_nothing(tmp_path: Path) -> None:
    """SIGKILL between the two writes of a block: the next opener sees neither."""
    path = tmp_path / "s.db"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from nsnet.store.local import LocalStore\n"
        "s = LocalStore(Path(sys.argv[1]))\n"
        "s.ipam_claim('n', '10.0.0.2', 'ep1')\n"
        "s.put('container', 'c1', 'one', {'eps': ['ep1']})\n"
        "with s.transaction():\n"
        "    s.ipam_release('n', '10.0.0.2')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=30)
    assert p.returncode == -9, p.stderr
    s = LocalStore(path)
    assert s.ipam_all() == [("n", "10.0.0.2", "ep1")]
    assert s.list("container") == [{"eps": ["ep1"]}]
    s.close()
