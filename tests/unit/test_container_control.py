"""rename, pause/unpause, top and resize (issue 11) without root: the engine over the fakes
of test_engine_usecases (with a runtime that records pause/resume), the routes over the fake
backend of test_api_routes, and the pure pieces (ps output, ps_args, docker top's table)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from test_api_routes import FakeBackend, _running, serve
from test_engine_usecases import World

from nsnet.cli.container import top_table
from nsnet.engine.containers import ContainerCreate, top_args
from nsnet.engine.sessions import ExecConfig
from nsnet.errors import Conflict, Invalid, NotFound, SystemError_
from nsnet.model import Container, Endpoint, Network
from nsnet.runtime.runc import parse_ps_output


class RecordingResolver:
    """The embedded DNS as the engine sees it: which names each endpoint came up with."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.log: list[tuple[str, str]] = []

    def sandbox_up(self, c: Container, ns_path: str) -> None:
        pass

    def sandbox_down(self, c: Container) -> None:
        pass

    def endpoint_up(self, c: Container, net: Network, ep: Endpoint) -> None:
        self.names[ep.id] = list(ep.dns_names)
        self.log.append(("up", c.name))

    def endpoint_down(self, c: Container, net: Network, ep: Endpoint) -> None:
        self.names.pop(ep.id, None)
        self.log.append(("down", c.name))

    def network_removed(self, net: Network) -> None:
        pass


class ControlWorld(World):
    """World whose runtime freezes, thaws and lists processes, logging what it was asked."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.resolver = RecordingResolver()
        self.engine.s.sandboxes.resolver = self.resolver
        self.engine.s.sandboxes.etc.on_user_network = self.engine.s.sandboxes.on_user_network
        rt: Any = self.runtime
        self.asked: list[tuple[str, str]] = []
        original_kill = rt.kill

        async def pause(cid: str) -> None:
            self.asked.append(("pause", cid))

        async def resume(cid: str) -> None:
            self.asked.append(("resume", cid))

        async def kill(cid: str, sig: int) -> None:
            self.asked.append(("kill", cid))
            await original_kill(cid, sig)

        async def top(cid: str, ps_args: list[str]) -> tuple[list[str], list[list[str]]]:
            self.asked.append(("top", " ".join(ps_args)))
            return ["PID", "CMD"], [["4000000", "sleep 1"]]

        rt.pause, rt.resume, rt.kill, rt.top = pause, resume, kill, top


@pytest.fixture
def cw(tmp_path: Path) -> Iterator[ControlWorld]:
    w = ControlWorld(tmp_path)
    yield w
    w.close()


# -- rename -----------------------------------------------------------------------------------


def test_rename_of_a_running_container_moves_its_dns_names(cw: ControlWorld) -> None:
    cw.network("n1", "198.51.100.0/24")
    cid = cw.running("web", "n1")
    c = cw.engine.find_container(cid)
    ep = c.attachments[0].endpoint
    assert ep is not None and "web" in ep.dns_names
    cw.resolver.names[ep.id] = list(ep.dns_names)
    cw.run(cw.engine.rename_container("web", "web2"))
    assert cw.engine.find_container("web2").id == cid
    with pytest.raises(NotFound):
        cw.engine.find_container("web")
    assert cw.resolver.names[ep.id] == ["web2", c.short_id]  # hostname: the short id
    assert cw.resolver.log[-2:] == [("down", "web2"), ("up", "web2")]
    stored = [d for d in cw.store.list("container") if d["id"] == cid]
    assert stored[0]["name"] == "web2"
    assert stored[0]["attachments"][0]["endpoint"]["dns_names"][0] == "web2"


def test_rename_refusals_use_mobys_messages(cw: ControlWorld) -> None:
    cw.network("n1", "198.51.100.0/24")
    a = cw.running("a", "n1")
    cw.running("b", "n1")
    cases: list[tuple[str, str, type[Exception], str]] = [
        ("a", "", Invalid, "Neither old nor new names may be empty"),
        ("a", "a", Invalid, "Renaming a container with the same name as its current name"),
        ("a", "/a", Invalid, "Renaming a container with the same name as its current name"),
        ("a", "bad name", Invalid, "Error when allocating new name: Invalid container name "
                                   "(/bad name), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ("a", "b", Conflict, 'Error when allocating new name: Conflict. The container name '
                             '"/b" is already in use by container'),
        ("nope", "x", NotFound, "No such container: nope"),
    ]
    for ref, new, kind, message in cases:
        with pytest.raises(kind) as info:
            cw.run(cw.engine.rename_container(ref, new))
        assert str(info.value.args[0]).startswith(message), (ref, new, info.value)
    assert cw.engine.find_container(a).name == "a"


def test_rename_carries_links_of_other_containers(cw: ControlWorld) -> None:
    target = cw.running("db", "bridge")
    holder = cw.engine.create_container(ContainerCreate(
        image="busybox", name="app", cmd=["sleep", "1"], links=["db:database", "/db"]))
    cw.run(cw.engine.start_container(holder.id))
    hosts = cw.engine.s.sandboxes.etc_dir(holder) / "hosts"
    assert "database" in hosts.read_text()
    cw.run(cw.engine.rename_container(target, "db2"))
    assert cw.engine.find_container("app").links == ["db2:database", "db2:db"]
    text = hosts.read_text()
    assert "database" in text and "db2" in text


def test_rename_of_a_stopped_container_touches_no_resolver(cw: ControlWorld) -> None:
    c = cw.engine.create_container(ContainerCreate(image="busybox", name="x", cmd=["true"]))
    cw.run(cw.engine.rename_container(c.id, "/y"))
    assert cw.engine.find_container(c.id).name == "y"
    assert cw.resolver.log == []


# -- pause / unpause --------------------------------------------------------------------------


def test_pause_and_unpause_with_their_conflicts(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    c = cw.engine.find_container(cid)
    cw.run(cw.engine.pause_container("p"))
    assert cw.engine.container_paused(c) and c.state.status == "running"
    with pytest.raises(Conflict, match=f"Container {cid} is already paused"):
        cw.run(cw.engine.pause_container("p"))
    cw.run(cw.engine.unpause_container("p"))
    assert not cw.engine.container_paused(c)
    with pytest.raises(Conflict, match=f"Container {cid} is not paused"):
        cw.run(cw.engine.unpause_container("p"))
    assert cw.asked == [("pause", cid), ("resume", cid)]
    cw.run(cw.engine.stop_container(cid, 1))
    with pytest.raises(Conflict, match=f"Container {cid} is not running"):
        cw.run(cw.engine.pause_container("p"))


def test_exec_into_a_paused_container_is_refused_at_create(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    cw.run(cw.engine.pause_container(cid))
    with pytest.raises(Conflict, match=f"Container {cid} is paused, unpause the container "
                       "before exec"):
        cw.engine.create_exec(cid, ExecConfig(cmd=["true"]))
    cw.run(cw.engine.unpause_container(cid))
    assert cw.engine.create_exec(cid, ExecConfig(cmd=["true"])).cmd == ["true"]


def test_stop_of_a_paused_container_signals_then_resumes(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    cw.run(cw.engine.pause_container(cid))
    cw.run(cw.engine.stop_container(cid, 5))
    c = cw.engine.find_container(cid)
    assert c.state.status == "exited" and not cw.engine.container_paused(c)
    assert cw.asked == [("pause", cid), ("kill", cid), ("resume", cid)]


def test_rm_of_a_paused_container_needs_force(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    cw.run(cw.engine.pause_container(cid))
    with pytest.raises(Conflict, match='container is paused: unpause and then stop'):
        cw.run(cw.engine.remove_container(cid))
    cw.run(cw.engine.remove_container(cid, force=True))
    assert cid not in cw.engine.registry.containers
    assert cw.asked[-2:] == [("kill", cid), ("resume", cid)]


def test_kill_of_a_paused_container_resumes_it(cw: ControlWorld) -> None:
    cid = cw.running("p", "bridge")
    cw.run(cw.engine.pause_container(cid))
    cw.run(cw.engine.kill_container(cid, "SIGKILL"))
    assert cw.asked[-1] == ("resume", cid)
    assert not cw.engine.container_paused(cw.engine.find_container(cid))


# -- top / resize -----------------------------------------------------------------------------


def test_top_needs_a_running_container_and_passes_ps_args(cw: ControlWorld) -> None:
    c = cw.engine.create_container(ContainerCreate(image="busybox", name="t", cmd=["true"]))
    with pytest.raises(Conflict, match=f"Container {c.id} is not running"):
        cw.run(cw.engine.top_container("t", ""))
    with pytest.raises(Conflict):
        cw.engine.resize_container("t", 10, 10)
    cw.run(cw.engine.start_container(c.id))
    assert cw.run(cw.engine.top_container("t", "")) == (["PID", "CMD"], [["4000000",
                                                                          "sleep 1"]])
    cw.run(cw.engine.pause_container("t"))  # a paused container can still be listed
    cw.run(cw.engine.top_container("t", "aux  -o pid"))
    assert [a for a in cw.asked if a[0] == "top"] == [("top", "-ef"), ("top", "aux -o pid")]
    cw.engine.resize_container("t", 24, 80)


def test_top_args_split_without_a_shell_and_refuse_a_fake_pid_column() -> None:
    assert top_args("") == ["-ef"]
    assert top_args("-o pid,comm $(reboot)") == ["-o", "pid,comm", "$(reboot)"]
    assert top_args("-o pid=PID,comm") == ["-o", "pid=PID,comm"]
    with pytest.raises(Invalid, match='specifying "user=PID" is not allowed'):
        top_args("-o user=PID")
    with pytest.raises(Invalid):
        top_args("   ")


def test_ps_output_is_cut_to_the_containers_pids() -> None:
    out = ("UID          PID    PPID  C STIME TTY          TIME CMD\n"
           "root           1       0  0 10:00 ?        00:00:01 /sbin/init splash\n"
           "root         412       1  0 10:01 ?        00:00:00 sleep   3600\n"
           "root         413     412  0 10:01 ?        00:00:00 sh -c echo hi\n")
    titles, rows = parse_ps_output(out, {412, 413})
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["root", "412", "1", "0", "10:01", "?", "00:00:00", "sleep 3600"],
                    ["root", "413", "412", "0", "10:01", "?", "00:00:00", "sh -c echo hi"]]
    with pytest.raises(SystemError_, match="Couldn't find PID field in ps output"):
        parse_ps_output("USER COMMAND\nroot x\n", {1})


def test_docker_top_table_pads_all_columns_but_the_last() -> None:
    lines = top_table(["UID", "PID", "CMD"], [["root", "12345678901234567890", "sleep 1"]])
    # Go's tabwriter(minwidth 20, padding 3): 20 for "root", 20 + 3 for the long pid.
    assert lines == ["UID" + " " * 17 + "PID" + " " * 20 + "CMD",
                     "root" + " " * 16 + "12345678901234567890" + " " * 3 + "sleep 1"]


# -- routes -----------------------------------------------------------------------------------


def test_control_routes_reach_the_backend() -> None:
    fake = FakeBackend()
    c = _running(fake)
    e = fake.create_exec(c.id, _exec_config())

    async def go(client: TestClient[Any, Any]) -> list[Any]:
        out: list[Any] = []
        r = await client.post(f"/containers/{c.id}/rename", params={"name": "new"})
        out.append(r.status)
        r = await client.get(f"/v1.41/containers/{c.id}/top", params={"ps_args": "aux"})
        out.append((r.status, await r.json()))
        r = await client.post(f"/containers/{c.id}/resize", params={"h": "24", "w": "80"})
        out.append((r.status, await r.read()))
        r = await client.post(f"/exec/{e.id}/resize", params={"h": "1", "w": "2"})
        out.append(r.status)
        return out

    assert serve(fake, go) == [
        204, (200, {"Titles": ["UID", "PID", "CMD"], "Processes": [["root", "7", "sleep 60"]]}),
        (200, b""), 200]
    assert fake.seen["rename_container"] == {"ref": c.id, "new_name": "new"}
    assert fake.seen["top_container"] == {"ref": c.id, "ps_args": "aux"}
    assert fake.seen["resize_container"] == {"ref": c.id, "height": 24, "width": 80}
    assert fake.seen["resize_exec"] == {"exec_id": e.id, "height": 1, "width": 2}


def test_bad_resize_values_are_400s_that_reach_no_backend_method() -> None:
    fake = FakeBackend()
    c = _running(fake)

    async def go(client: TestClient[Any, Any]) -> list[tuple[int, str]]:
        out = []
        for q in ({"h": "x", "w": "1"}, {"w": "1"}, {"h": "-1", "w": "1"},
                  {"h": "1", "w": "4294967296"}, {"h": "1", "w": "1e3"}):
            r = await client.post(f"/containers/{c.id}/resize", params=q)
            out.append((r.status, (await r.json())["message"]))
        r = await client.post("/exec/nope/resize", params={"h": "1", "w": "1"})
        out.append((r.status, (await r.json())["message"]))
        return out

    answers = serve(fake, go)
    assert [s for s, _ in answers] == [400] * 5 + [404]
    assert answers[0][1].startswith("invalid resize height 'x'")
    assert answers[-1][1] == "No such exec instance: nope"
    assert "resize_container" not in fake.calls


def test_paused_shows_in_inspect_and_ps() -> None:
    fake = FakeBackend()
    c = _running(fake)
    c.state.started_at = "2026-01-01T00:00:00Z"

    async def go(client: TestClient[Any, Any]) -> tuple[Any, Any, Any]:
        before = (await (await client.get(f"/containers/{c.id}/json")).json())["State"]
        assert (await client.post(f"/containers/{c.id}/pause")).status == 204
        state = (await (await client.get(f"/containers/{c.id}/json")).json())["State"]
        listed = await (await client.get("/containers/json")).json()
        return before, state, listed

    before, state, listed = serve(fake, go)
    assert (before["Status"], before["Paused"]) == ("running", False)
    assert (state["Status"], state["Paused"], state["Running"]) == ("paused", True, True)
    assert listed[0]["State"] == "paused"
    assert listed[0]["Status"].startswith("Up ") and listed[0]["Status"].endswith(" (Paused)")


def _exec_config() -> Any:
    from nsnet.engine.sessions import ExecConfig

    return ExecConfig(cmd=["true"])

