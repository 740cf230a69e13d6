"""Issue 11, without root: the paused mark kept in the store (and corrected from runc by
reconcile), rendered and filtered from it; the events of a stop that escalates to SIGKILL and
of an attach."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_container_control import ControlWorld

from nsnet.api import render
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.filters import check_container_filters, container_matches
from nsnet.engine.reconcile import new_report
from nsnet.errors import Invalid
from nsnet.model import Container


@pytest.fixture
def cw(tmp_path: Path) -> Iterator[ControlWorld]:
    w = ControlWorld(tmp_path)
    yield w
    w.close()


def _stored_paused(cw: ControlWorld, cid: str) -> bool:
    rec = cw.store.get("container", cid)
    assert rec is not None
    return bool(rec.data["state"]["paused"])


def test_pause_and_unpause_are_stored(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    cw.run(cw.engine.pause_container(cid))
    assert _stored_paused(cw, cid)
    # What a restarted daemon loads: the mark comes back from the stored record.
    rec = cw.store.get("container", cid)
    assert rec is not None and Container.from_dict(rec.data).state.paused
    cw.run(cw.engine.unpause_container(cid))
    assert not _stored_paused(cw, cid)


def test_an_exit_clears_the_stored_mark(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    cw.run(cw.engine.pause_container(cid))
    cw.run(cw.engine.kill_container(cid))
    c = cw.engine.find_container(cid)
    assert c.state.status == "exited" and not c.state.paused
    assert not _stored_paused(cw, cid)
    cw.run(cw.engine.start_container(cid))
    assert not cw.engine.find_container(cid).state.paused


def test_reconcile_takes_the_paused_mark_from_runc(cw: ControlWorld) -> None:
    """A crash between ``runc pause`` and the save (or ``resume`` and the save) left the
    store wrong; runc's state is the truth for a container that outlived the daemon."""
    a, b, c = (cw.running(n, "bridge") for n in ("a", "b", "c"))
    cw.run(cw.engine.pause_container(b))  # stored paused, but thawed behind our back
    states = {a: "paused", b: "running", c: "running"}
    asked: list[str] = []

    async def state(cid: str) -> dict[str, Any] | None:
        asked.append(cid)
        return {"id": cid, "status": states[cid]}

    cw.runtime.state = state  # type: ignore[attr-defined]
    reconciler = cw.engine.s.reconciler
    report = new_report()
    reg = cw.engine.registry
    cw.run(reconciler._restore_paused([reg.containers[x] for x in (a, b, c)], report))
    assert sorted(asked) == sorted([a, b, c])
    assert (reg.containers[a].state.paused, reg.containers[b].state.paused,
            reg.containers[c].state.paused) == (True, False, False)
    assert _stored_paused(cw, a) and not _stored_paused(cw, b)
    assert sorted(report["paused_corrected"]) == ["a", "b"]


def test_reconcile_keeps_the_mark_when_runc_cannot_say(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    cw.run(cw.engine.pause_container(cid))

    async def state(cid: str) -> dict[str, Any] | None:
        raise OSError("runc is not there")

    cw.runtime.state = state  # type: ignore[attr-defined]
    report = new_report()
    c = cw.engine.registry.containers[cid]
    cw.run(cw.engine.s.reconciler._restore_paused([c], report))
    assert c.state.paused and report["paused_corrected"] == []


def test_paused_renders_and_filters_from_the_state(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    other = cw.running("q", "bridge")
    cw.run(cw.engine.pause_container(cid))
    c = cw.engine.find_container(cid)
    nets = dict(cw.engine.network_table())
    st = render.container_json(c, nets, None)["State"]
    assert (st["Status"], st["Paused"], st["Running"]) == ("paused", True, True)
    summary = render.container_summary(c, nets)
    assert summary["State"] == "paused" and summary["Status"].endswith(" (Paused)")
    assert [x.id for x in cw.engine.list_containers(False, {"status": ["paused"]})] == [cid]
    assert [x.id for x in cw.engine.list_containers(False, {"status": ["running"]})] == [other]
    # Listed without -a, as docker ps lists a paused container.
    assert {x.id for x in cw.engine.list_containers(False, {})} == {cid, other}


def test_a_status_filter_moby_does_not_know_is_refused() -> None:
    with pytest.raises(Invalid, match="Invalid filter 'status=frozen'"):
        check_container_filters({"status": ["frozen"]})
    c = Container(id="a" * 64, name="x", image="busybox", image_id="sha256:x", created="")
    assert container_matches(c, {"status": ["created"]}, [], {})


# -- events ----------------------------------------------------------------------------------


def _kills_and_dies(cw: ControlWorld, cid: str) -> list[tuple[str, str]]:
    return [(e.action, e.attributes.get("signal", e.attributes.get("exitCode", "")))
            for e in cw.engine.events.ring
            if e.actor_id == cid and e.action in ("kill", "die", "stop")]


def test_a_stop_that_escalates_reports_both_kills_before_the_die(cw: ControlWorld) -> None:
    rt: Any = cw.runtime
    kill = rt.kill

    async def stubborn(cid: str, sig: int) -> None:
        if sig != 9:
            return  # the process ignores SIGTERM, as a shell script without a trap does
        await kill(cid, sig)

    rt.kill = stubborn
    cid = cw.running("s", "bridge")
    cw.run(cw.engine.stop_container(cid, 0))
    assert _kills_and_dies(cw, cid) == [("kill", "15"), ("kill", "9"), ("die", "137"),
                                        ("stop", "")]


def test_a_stop_that_needs_no_escalation_reports_one_kill(cw: ControlWorld) -> None:
    cid = cw.running("s", "bridge")
    cw.run(cw.engine.stop_container(cid, 5))
    assert _kills_and_dies(cw, cid) == [("kill", "15"), ("die", "143"), ("stop", "")]


def test_attach_is_reported(cw: ControlWorld) -> None:
    c = cw.engine.create_container(ContainerCreate(image="busybox", name="a", cmd=["true"]))

    async def sink(stream: int, data: bytes) -> None:
        pass

    async def attach_only() -> None:
        # logs=False, stream=False: the event, and nothing to follow.
        await asyncio.wait_for(cw.engine.attach(c.id, sink, True, True, False, False), 5)

    cw.run(attach_only())
    assert [e.action for e in cw.engine.events.ring if e.actor_id == c.id] == ["create",
                                                                                "attach"]
