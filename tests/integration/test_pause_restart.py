"""Issue 11 against a real daemon: a paused container stays paused across a daemon restart
(graceful or kill -9) and reconcile takes runc's word when the store is wrong; ``status=paused``
filters; the events of a stop that has to escalate and of an attached run. The freezer is read
from the container's cgroup, the events through the client's ``events``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import exec_, run, wait_for

from nsnet.client.api import Client
from nsnet.testing.hosts import Daemon, daemon_host, sh

pytestmark = [pytest.mark.root]

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """Hosts of our own prefix: a leak report naming another prefix is another test's."""
    with daemon_host(prefix="nspz") as d:
        yield d


def frozen(c: Client, ref: str) -> bool:
    """The freezer's word (v1 freezer.state, else v2 cgroup.events), not the daemon's."""
    pid = c.containers.inspect(ref)["State"]["Pid"]
    paths = dict(ln.split(":", 2)[1:] for ln in
                 Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    if "freezer" in paths:
        st = Path(f"/sys/fs/cgroup/freezer{paths['freezer']}/freezer.state").read_text()
        return st.strip() == "FROZEN"
    return "frozen 1" in Path(f"/sys/fs/cgroup{paths['']}/cgroup.events").read_text()


def shown(c: Client, ref: str) -> tuple[str, bool, bool]:
    st = c.containers.inspect(ref)["State"]
    return st["Status"], st["Paused"], st["Running"]


def runc(d: Daemon, *args: str) -> None:
    sh("runc", "--root", str(d.exec_root / "runc"), *args)


def test_paused_survives_restarts_and_unpause_works_after(daemon: Daemon) -> None:
    d = daemon
    c = d.client()
    cid = run(c, name="p")
    other = run(c, name="q")
    c.containers.pause("p")
    for restart in ("graceful", "kill -9"):
        if restart == "graceful":
            d.stop()
        else:
            d.kill()
        d.start()
        c = d.client()
        assert shown(c, "p") == ("paused", True, True), restart
        assert frozen(c, "p")
        assert [x["Id"] for x in c.containers.list(filters={"status": ["paused"]})] == [cid]
        assert [x["Id"] for x in c.containers.list(filters={"status": ["running"]})] == [other]
        listed = {x["Id"]: x for x in c.containers.list()}
        assert listed[cid]["State"] == "paused" and listed[cid]["Status"].endswith("(Paused)")
    c.containers.unpause("p")
    assert shown(c, "p") == ("running", False, True) and not frozen(c, "p")
    assert exec_(c, cid, ["echo", "thawed"])[:2] == (0, "thawed\n")

    # stop of a container paused before a restart: thawed after the signal, so it ends.
    c.containers.pause("p")
    d.kill()
    d.start()
    c = d.client()
    c.containers.stop("p", t=1)
    assert shown(c, "p") == ("exited", False, False)
    if Path(DOCKER).exists():
        c.containers.start("p")
        c.containers.pause("p")
        p = d.docker("ps", "--filter", "status=paused", "--format", "{{.Names}} {{.State}}")
        assert p.stdout.split() == ["p", "paused"]
        bad = d.docker("ps", "--filter", "status=frozen", check=False)
        assert bad.returncode != 0 and "Invalid filter 'status=frozen'" in bad.stderr
    c.containers.remove("p", force=True)
    c.containers.remove("q", force=True)


def test_reconcile_takes_runcs_word_over_a_wrong_store(daemon: Daemon) -> None:
    """What a crash between ``runc pause``/``resume`` and the store's save leaves: here made
    by freezing and thawing through runc while the daemon is down."""
    d = daemon
    c = d.client()
    cid = run(c, name="r")
    d.kill()
    runc(d, "pause", cid)
    d.start()
    c = d.client()
    assert shown(c, "r") == ("paused", True, True) and frozen(c, "r")
    d.kill()
    runc(d, "resume", cid)
    d.start()
    c = d.client()
    assert shown(c, "r") == ("running", False, True) and not frozen(c, "r")
    assert exec_(c, cid, ["true"])[0] == 0
    c.containers.remove("r", force=True)


def _events(c: Client, since: float, cid: str) -> list[tuple[str, str]]:
    with c.events(since=f"{since:.3f}", until=f"{time.time():.3f}",
                  filters={"container": [cid]}) as stream:
        return [(m["Action"], (m["Actor"]["Attributes"] or {}).get("signal", ""))
                for m in stream]


def test_a_stop_that_escalates_reports_two_kills(daemon: Daemon) -> None:
    c = daemon.client()
    t0 = time.time() - 0.5
    # sleep as PID 1 ignores SIGTERM (no handler, and init is immune to the default one).
    cid = run(c, name="stubborn", cmd=["sleep", "3600"])
    c.containers.stop(cid, t=1)
    got = [e for e in _events(c, t0, cid) if e[0] in ("kill", "die", "stop")]
    assert got == [("kill", "15"), ("kill", "9"), ("die", ""), ("stop", "")]
    c.containers.remove(cid)


def test_an_attached_run_reports_attach(daemon: Daemon) -> None:
    t0 = time.time() - 0.5
    p = daemon.cli("run", "--name", "fg", "busybox", "echo", "hello")
    assert p.stdout == "hello\n"
    c = daemon.client()
    cid = c.containers.inspect("fg")["Id"]
    assert wait_for(lambda: ("die", "") in _events(c, t0, cid))
    actions = [a for a, _ in _events(c, t0, cid)]
    assert actions.index("create") < actions.index("attach") < actions.index("start")
    c.containers.remove(cid)
