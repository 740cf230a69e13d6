"""``--network container:<name|id>`` (issue 11) without root: the engine over the fakes of
test_engine_usecases. moby's create-time refusals word for word, the owner recorded by ID, a
start that joins the owner's namespace (through its process) with its hostname and /etc files,
moby's refusal to start without a running owner, connect refused, an owner stopping under a
running dependent, reconcile adopting a dependent after a daemon restart, and inspect's
NetworkMode and (empty) Networks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_engine_usecases import World

from nsnet.api import render
from nsnet.engine import reconcile
from nsnet.engine.containers import ContainerCreate
from nsnet.errors import Conflict, Forbidden, Invalid, NotFound
from nsnet.model import EndpointRequest
from nsnet.runtime.runc import ProcessSpec


class SharedWorld(World):
    """World whose runtime remembers what each container was prepared with."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.prepared: dict[str, tuple[str, str | None, dict[str, Path]]] = {}
        rt: Any = self.runtime
        original = rt.prepare

        def prepare(cid: str, rootfs_lower: Path, process: ProcessSpec, hostname: str,
                    netns_path: str | None, bind_files: dict[str, Path]) -> Path:
            self.prepared[cid] = (hostname, netns_path, dict(bind_files))
            result: Path = original(cid, rootfs_lower, process, hostname, netns_path,
                                    bind_files)
            return result

        rt.prepare = prepare

    def dependent(self, owner: str, name: str = "dep", start: bool = True) -> str:
        c = self.engine.create_container(ContainerCreate(
            image="busybox", name=name, cmd=["sleep", "1"],
            network_mode=f"container:{owner}"))
        if start:
            self.run(self.engine.start_container(c.id))
        return c.id


@pytest.fixture
def sw(tmp_path: Path) -> Iterator[SharedWorld]:
    w = SharedWorld(tmp_path)
    yield w
    w.close()


def _create(sw: SharedWorld, **kw: Any) -> None:
    sw.engine.create_container(ContainerCreate(image="busybox", cmd=["true"], **kw))


@pytest.mark.parametrize(("extra", "message"), [
    ({"hostname": "h"}, "conflicting options: hostname and the network mode"),
    ({"links": ["web:w"]}, "conflicting options: container type network can't be used with "
                           "links. This would result in undefined behavior"),
    ({"dns": ["192.0.2.1"]}, "conflicting options: dns and the network mode"),
    ({"extra_hosts": ["a:192.0.2.1"]},
     "conflicting options: custom host-to-IP mapping and the network mode"),
    ({"endpoints": {"container:web": EndpointRequest(mac_address="02:42:ac:11:00:09")}},
     "conflicting options: mac-address and the network mode"),
    ({"port_bindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
     "conflicting options: port publishing and the container type network mode"),
    ({"publish_all_ports": True},
     "conflicting options: port publishing and the container type network mode"),
    ({"exposed_ports": ["80/tcp"]},
     "conflicting options: port exposing and the container type network mode"),
    ({"endpoints": {"frontend": EndpointRequest()}},
     "conflicting options: cannot attach both user-defined and non-user-defined "
     "network-modes (container:web and frontend)"),
    ({"endpoints": {"container:web": EndpointRequest(aliases=["x"])}},
     "conflicting options: endpoint settings and the network mode container:web"),
])
def test_create_refuses_what_docker_refuses(sw: SharedWorld, extra: dict[str, Any],
                                            message: str) -> None:
    sw.running("web", "bridge")
    before = sw.snapshot()
    with pytest.raises(Invalid) as e:
        _create(sw, network_mode="container:web", **extra)
    assert e.value.message == message
    assert sw.snapshot() == before


def test_create_needs_an_owner_and_records_it_by_id(sw: SharedWorld) -> None:
    with pytest.raises(Invalid, match=r"invalid container format container:<name\|id>"):
        _create(sw, network_mode="container:")
    with pytest.raises(NotFound, match="No such container: nosuch"):
        _create(sw, network_mode="container:nosuch")
    web = sw.running("web", "bridge")
    dep = sw.dependent("web", start=False)
    c = sw.engine.registry.containers[dep]
    assert c.network_mode == f"container:{web}"
    assert c.attachments == []
    assert c.hostname == dep[:12]  # moby's default until the start takes the owner's
    # A rename of the owner changes nothing: the dependent names it by ID.
    sw.run(sw.engine.rename_container("web", "web2"))
    sw.run(sw.engine.start_container(dep))
    assert sw.engine.registry.containers[dep].state.status == "running"


def test_start_joins_the_owners_namespace_hostname_and_files(sw: SharedWorld) -> None:
    net = sw.network("front", "10.77.0.0/24")
    web = sw.running("web", net)
    owner = sw.engine.registry.containers[web]
    dep = sw.dependent("web")
    c = sw.engine.registry.containers[dep]
    hostname, netns, files = sw.prepared[dep]
    assert netns == f"/proc/{owner.state.pid}/ns/net"
    assert hostname == owner.hostname == c.hostname
    web_files = sw.engine.s.sandboxes.etc_dir(owner)
    assert files == {"/etc/hosts": web_files / "hosts",
                     "/etc/resolv.conf": web_files / "resolv.conf",
                     "/etc/hostname": web_files / "hostname"}
    assert "nameserver 127.0.0.11" in (web_files / "resolv.conf").read_text()
    # No sandbox, endpoint or address of its own.
    assert c.sandbox_key == "" and c.attachments == []
    assert not sw.engine.s.sandboxes.etc_dir(c).exists()
    assert sw.engine.s.sandboxes.ns_path(c) not in sw.kernel.objects().namespaces
    # A dependent of a dependent ends in the same namespace and files.
    dep2 = sw.dependent("dep", name="dep2")
    assert sw.prepared[dep2][1] == f"/proc/{c.state.pid}/ns/net"
    assert sw.prepared[dep2][2] == files
    assert sw.engine.registry.containers[dep2].hostname == owner.hostname


def test_start_without_a_running_owner_is_refused_and_leaves_nothing(sw: SharedWorld) -> None:
    web = sw.engine.create_container(ContainerCreate(image="busybox", name="web",
                                                     cmd=["sleep", "1"]))
    dep = sw.dependent("web", start=False)
    before = sw.snapshot()
    with pytest.raises(Conflict) as e:
        sw.run(sw.engine.start_container(dep))
    assert e.value.message == f"cannot join network of a non running container: {web.id}"
    assert sw.engine.registry.containers[dep].state.status == "created"
    assert sw.snapshot()[:2] == before[:2] and sw.snapshot()[3] == before[3]
    # The owner removed: moby's "No such container".
    sw.run(sw.engine.remove_container("web"))
    with pytest.raises(NotFound, match=f"No such container: {web.id}"):
        sw.run(sw.engine.start_container(dep))


def test_connect_and_disconnect_of_a_running_dependent_are_refused(sw: SharedWorld) -> None:
    net = sw.network("front", "10.77.0.0/24")
    sw.running("web", "bridge")
    dep = sw.dependent("web")
    before = sw.snapshot()
    with pytest.raises(Forbidden) as e:
        sw.run(sw.engine.connect(net, dep, EndpointRequest()))
    assert e.value.message == ("container sharing network namespace with another container "
                               "or host cannot be connected to any other network")
    assert sw.snapshot() == before
    with pytest.raises(Forbidden, match=f"container {dep} is not connected to network bridge"):
        sw.engine.disconnect("bridge", dep, False)


def test_connect_of_a_stopped_dependent_is_refused_too(sw: SharedWorld) -> None:
    net = sw.network("front", "10.77.0.0/24")
    sw.running("web", "bridge")
    dep = sw.dependent("web", start=False)
    before = sw.snapshot()
    with pytest.raises(Forbidden, match="cannot be connected to any other network"):
        sw.run(sw.engine.connect(net, dep, EndpointRequest()))
    assert sw.snapshot() == before


def test_owner_stopping_under_a_running_dependent_leaves_the_kernel_explicitly(
        sw: SharedWorld) -> None:
    """The namespace outlives the owner (the dependent's process holds it): its links are
    taken down and deleted one by one, as libnetwork does, and its address is freed only
    then; the dependent keeps running."""
    net = sw.network("front", "10.77.0.0/24")
    web = sw.running("web", net)
    owner = sw.engine.registry.containers[web]
    ep = owner.attachments[0].endpoint
    assert ep is not None and ep.host_ifname
    dep = sw.dependent("web")
    calls = len(sw.kernel.calls)
    sw.run(sw.engine.stop_container("web", timeout=1))
    assert "set_down" in sw.kernel.calls[calls:]
    assert sw.engine.registry.containers[dep].state.status == "running"
    assert owner.attachments[0].endpoint is None
    assert not any(a == ep.ipv4 for _n, a, _o in sw.store.ipam_all())
    sw.kernel.reaper.flush()
    assert sw.kernel.link(ep.host_ifname) is None
    # Without a dependent the namespace's drop takes the links (no per-link work).
    sw.run(sw.engine.start_container("web"))
    sw.run(sw.engine.stop_container(dep, timeout=1))
    calls = len(sw.kernel.calls)
    sw.run(sw.engine.stop_container("web", timeout=1))
    assert "set_down" not in sw.kernel.calls[calls:]


def test_reconcile_adopts_a_dependent_after_a_daemon_restart(
        sw: SharedWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix a dependent (which has no namespace path of its own) was judged dead
    and closed with 255 while its process ran on."""
    net = sw.network("front", "10.77.0.0/24")
    web = sw.running("web", net)
    dep = sw.dependent("web")
    svc = sw.engine.s.containers
    for cid in (web, dep):  # as a new daemon finds them: running, nobody watching
        svc.exit_tasks.pop(cid).cancel()
    sw.run(asyncio.sleep(0))
    for cid in (web, dep):  # the processes run on (a cancelled wait cancelled their exit)
        sw.runtime.exits[sw.runtime.running[cid]] = sw.loop.create_future()
    monkeypatch.setattr(reconcile, "pid_alive", lambda pid: True)
    report = sw.run(sw.engine.reconcile())
    assert report["containers_lost"] == []
    owner = sw.engine.registry.containers[web]
    assert sw.engine.registry.containers[dep].state.status == "running"
    assert dep in svc.exit_tasks
    assert sw.engine.s.sandboxes.ns_path(owner) in sw.kernel.objects().namespaces
    assert report["namespaces_removed"] == []


def test_inspect_shows_the_mode_and_no_networks(sw: SharedWorld) -> None:
    web = sw.running("web", "bridge")
    dep = sw.dependent("web")
    c = sw.engine.registry.containers[dep]
    j = render.container_json(c, dict(sw.engine.registry.networks), None)
    assert j["HostConfig"]["NetworkMode"] == f"container:{web}"
    assert j["NetworkSettings"]["Networks"] == {}
    assert j["NetworkSettings"]["SandboxKey"] == ""
    assert j["NetworkSettings"]["IPAddress"] == ""
    assert j["Config"]["Hostname"] == sw.engine.registry.containers[web].hostname
    s = render.container_summary(c, dict(sw.engine.registry.networks))
    assert s["HostConfig"]["NetworkMode"] == f"container:{web}"
    assert s["NetworkSettings"]["Networks"] == {}


def test_a_link_to_a_dependent_reaches_its_owners_address(sw: SharedWorld) -> None:
    web = sw.running("web", "bridge")
    sw.dependent("web")
    ip = sw.engine.registry.containers[web].attachments[0].endpoint
    assert ip is not None and ip.ipv4
    c = sw.engine.create_container(ContainerCreate(image="busybox", name="holder",
                                                   cmd=["sleep", "1"], links=["dep:d"]))
    sw.run(sw.engine.start_container(c.id))
    hosts = (sw.engine.s.sandboxes.etc_dir(c) / "hosts").read_text()
    assert f"{ip.ipv4}\td dep" in hosts
