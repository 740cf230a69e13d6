"""Engine use-cases over a fake kernel, a memory store and a fake runtime: no root.

Each test drives one use-case through ``build_engine`` with fakes and checks docs/architecture.md
rule 2 from the outside: a use-case that fails halfway leaves no kernel object
(``FakeKernel.objects``), no store row and no claimed address behind it, and one that succeeds
leaves exactly its own.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nsnet.engine.config import EngineConfig
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.core import Engine
from nsnet.engine.networks import NetworkCreate
from nsnet.engine.wiring import build_engine
from nsnet.errors import NotFound, NsnetError, SystemError_
from nsnet.model import EndpointRequest, Image
from nsnet.runtime.runc import ProcessSpec
from nsnet.testing.fake_kernel import HOST, FakeKernel
from nsnet.testing.fake_store import MemoryStore

T = TypeVar("T")
BUSYBOX = Image(id="sha256:" + "b" * 64, repo_tags=["busybox:latest"],
                created="2026-01-01T00:00:00Z")


class FakeImages:
    def list(self) -> list[Image]:
        return [BUSYBOX]

    def resolve(self, ref: str) -> Image:
        if ref in ("busybox", "busybox:latest", BUSYBOX.id):
            return BUSYBOX
        raise NotFound(f"No such image: {ref}")

    def rootfs(self, image: Image) -> Path:
        return Path("/nonexistent/rootfs")

    def ensure_busybox(self) -> Image:
        return BUSYBOX

    def import_tar(self, tar_path: Path, repo_tag: str | None) -> Image:
        raise NotImplementedError

    def remove(self, ref: str, force: bool,
               in_use: bool) -> builtins.list[dict[str, str]]:
        raise NotImplementedError


class FakeRuntime:
    """Processes are futures: ``kill`` ends one with 128+signal; ``fail_start`` makes the
    next start raise as runc does for a command it cannot run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prepared: set[str] = set()
        self.running: dict[str, int] = {}
        self.exits: dict[int, asyncio.Future[int]] = {}
        self.fail_start: str | None = None
        self._pids = itertools.count(4_000_000)

    def prepare(self, cid: str, rootfs_lower: Path, process: ProcessSpec, hostname: str,
                netns_path: str | None, bind_files: dict[str, Path]) -> Path:
        for f in bind_files.values():
            assert f.exists(), f"{f} not written before the runtime starts"
        self.prepared.add(cid)
        return self.root / cid

    async def start(self, cid: str) -> int:
        if self.fail_start is not None:
            msg, self.fail_start = self.fail_start, None
            raise SystemError_(msg)
        pid = next(self._pids)
        self.running[cid] = pid
        self.exits[pid] = asyncio.get_running_loop().create_future()
        return pid

    async def wait_exit(self, pid: int) -> int:
        return await self.exits[pid]

    async def kill(self, cid: str, sig: int) -> None:
        pid = self.running.pop(cid, None)
        if pid is not None and not self.exits[pid].done():
            self.exits[pid].set_result(128 + sig)

    async def delete(self, cid: str) -> None:
        self.prepared.discard(cid)

    def remove_data(self, cid: str) -> None:
        pass

    async def exec(self, cid: str, process: ProcessSpec,
                   detach: bool) -> asyncio.subprocess.Process:
        raise NotImplementedError

    def take_detached(self, proc: asyncio.subprocess.Process) -> None:
        return None

    def log_paths(self, cid: str) -> tuple[Path, Path]:
        return self.root / f"{cid}.out", self.root / f"{cid}.err"

    def list_ids(self) -> list[str]:
        return sorted(self.prepared)


class World:
    """An engine over fakes, and a loop to drive it from synchronous tests."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        config = EngineConfig(data_root=tmp / "data", exec_root=tmp / "run",
                              host_resolv_conf=tmp / "resolv.conf")
        (tmp / "resolv.conf").write_text("nameserver 192.0.2.53\n")
        self.kernel = FakeKernel(exec_root=config.exec_root)
        self.store = MemoryStore()
        self.runtime = FakeRuntime(tmp)
        self.engine: Engine
        self.engine, _ = build_engine(config, dns=False, store=self.store, kernel=self.kernel,
                                      images=FakeImages(), runtime=self.runtime)
        self.run(self.engine.start())

    def run(self, aw: Awaitable[T]) -> T:
        async def main() -> T:
            return await aw

        return self.loop.run_until_complete(main())

    def snapshot(self) -> tuple[Any, ...]:
        """Kernel objects, stored rows and IPAM claims: what a failed use-case must keep."""
        self.kernel.reaper.flush()
        return (self.kernel.objects(), sorted(str(d) for d in self.store.list("network")),
                sorted(str(d) for d in self.store.list("container")),
                sorted(self.store.ipam_all()))

    def network(self, name: str, subnet: str) -> str:
        from nsnet.model import IPAMPool

        return self.run(self.engine.create_network(
            NetworkCreate(name=name, pools=[IPAMPool(subnet=subnet)]))).id

    def running(self, name: str, network: str) -> str:
        c = self.engine.create_container(ContainerCreate(image="busybox", name=name,
                                                         cmd=["sleep", "1"],
                                                         network_mode=network))
        self.run(self.engine.start_container(c.id))
        return c.id

    def close(self) -> None:
        for cid in list(self.engine.registry.containers):
            self.run(self.engine.remove_container(cid, force=True))
        self.run(self.engine.close())
        self.loop.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def _fails(fn: Callable[[], object]) -> None:
    with pytest.raises(NsnetError):
        fn()


def test_start_makes_the_predefined_networks_and_reconciles_to_them(world: World) -> None:
    names = sorted(n.name for n in world.engine.registry.networks.values())
    assert names == ["bridge", "host", "none"]
    assert ("host", "nsnet0") in {(ns if ns != HOST else "host", name)
                                  for ns, name in world.kernel.objects().links}
    # A second reconcile has nothing to remove.
    report = world.run(world.engine.reconcile())
    assert report["links_removed"] == [] and report["namespaces_removed"] == []


def test_network_create_failing_in_the_kernel_leaves_nothing(world: World) -> None:
    before = world.snapshot()
    world.kernel.fail_on("apply_network")
    _fails(lambda: world.network("n1", "198.51.100.0/24"))
    assert world.snapshot() == before
    assert "n1" not in {n.name for n in world.engine.registry.networks.values()}


def test_network_create_failing_at_the_store_undoes_the_kernel(world: World,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    before = world.snapshot()
    real_put = world.store.put

    def put(kind: str, id_: str, name: str, data: dict[str, Any], *a: Any, **kw: Any) -> int:
        if kind == "network":
            raise SystemError_("disk full")
        return real_put(kind, id_, name, data, *a, **kw)

    monkeypatch.setattr(world.store, "put", put)
    _fails(lambda: world.network("n1", "198.51.100.0/24"))
    monkeypatch.undo()
    assert world.snapshot() == before


def test_run_failing_at_start_leaves_no_sandbox_and_no_address(world: World) -> None:
    net = world.network("n1", "198.51.100.0/24")
    c = world.engine.create_container(ContainerCreate(image="busybox", name="c1",
                                                      cmd=["nope"], network_mode="n1"))
    before = world.snapshot()
    world.runtime.fail_start = 'exec: "nope": executable file not found in $PATH'
    with pytest.raises(NsnetError) as e:
        world.run(world.engine.start_container(c.id))
    assert e.value.status == 400  # a command that cannot run is the caller's error
    stored = world.engine.find_container(c.id)
    assert stored.state.status == "created" and stored.state.exit_code == 127
    assert all(a.endpoint is None for a in stored.attachments)
    after = world.snapshot()
    assert after[0] == before[0]  # kernel: no namespace, veth, address or route
    assert after[3] == before[3] == []  # no address claimed on n1
    assert net in {a.network_id for a in stored.attachments}


def test_run_failing_halfway_in_the_join_rolls_back_the_endpoint(world: World) -> None:
    world.network("n1", "198.51.100.0/24")
    world.network("n2", "203.0.113.0/24")
    c = world.engine.create_container(ContainerCreate(
        image="busybox", name="c1", cmd=["sleep", "1"], network_mode="n1",
        endpoints={"n2": EndpointRequest()}))
    before = world.snapshot()
    # The second endpoint's link is made, then configuring it fails.
    world.kernel.fail_on("configure_endpoint", after=1)
    _fails(lambda: world.run(world.engine.start_container(c.id)))
    assert world.snapshot()[0] == before[0]
    assert world.snapshot()[3] == []
    assert world.runtime.running == {}


def test_connect_failing_halfway_leaves_the_container_as_it_was(world: World) -> None:
    world.network("n1", "198.51.100.0/24")
    world.network("n2", "203.0.113.0/24")
    cid = world.running("c1", "n1")
    before = world.snapshot()
    world.kernel.fail_on("configure_endpoint")
    _fails(lambda: world.run(world.engine.connect("n2", cid, EndpointRequest())))
    assert world.snapshot() == before
    c = world.engine.find_container(cid)
    assert [a.network_id for a in c.attachments] == [world.engine.find_network("n1").id]


def test_connect_then_disconnect_frees_the_address_and_the_link(world: World) -> None:
    world.network("n1", "198.51.100.0/24")
    n2 = world.network("n2", "203.0.113.0/24")
    cid = world.running("c1", "n1")
    before = world.snapshot()
    world.run(world.engine.connect("n2", cid, EndpointRequest(ipv4_address="203.0.113.7")))
    c = world.engine.find_container(cid)
    a = c.attachment(n2)
    ep = a.endpoint if a is not None else None
    assert ep is not None and ep.ipv4 == "203.0.113.7" and ep.ifname == "eth1"
    assert (n2, "203.0.113.7", ep.id) in world.store.ipam_all()
    assert (c.sandbox_key, "eth1") in world.kernel.objects().links
    world.engine.disconnect("n2", cid, force=False)
    assert world.engine.find_container(cid).attachment(n2) is None
    assert world.snapshot() == before


def test_stop_tears_the_sandbox_down_and_releases_addresses(world: World) -> None:
    world.network("n1", "198.51.100.0/24")
    before = world.snapshot()
    cid = world.running("c1", "n1")
    assert world.store.ipam_all() != []
    world.run(world.engine.stop_container(cid, 1))
    c = world.engine.find_container(cid)
    assert c.state.status == "exited" and c.state.exit_code == 128 + 15
    after = world.snapshot()
    assert after[0] == before[0] and after[3] == []


def test_reconcile_during_a_start_leaves_the_starting_container_alone(world: World) -> None:
    """``nsnet system reconcile`` (any API client) while a start awaits runc: the sandbox of a
    container that is not yet "running" is not a leftover. Reconcile removed its namespace,
    freed its address and deleted its runc state, so runc failed with "failed to open
    .../netns/<id>" (6 starts of 6 on a real daemon), or, later in the start, the container
    ran with an address that the next container got too."""
    world.network("n1", "198.51.100.0/24")
    c = world.engine.create_container(ContainerCreate(image="busybox", name="c1",
                                                      cmd=["sleep", "1"], network_mode="n1"))
    gate = asyncio.Event()
    in_runc = asyncio.Event()
    real_start = world.runtime.start

    async def slow_start(cid: str) -> int:
        in_runc.set()
        await gate.wait()
        return await real_start(cid)

    world.runtime.start = slow_start  # type: ignore[method-assign]

    async def race() -> dict[str, Any]:
        start = asyncio.ensure_future(world.engine.start_container(c.id))
        await in_runc.wait()
        # Reconcile runs its steps while the start is parked in runc; it may then wait for
        # the container's lock (runc state is deleted only under it), so runc is let go after
        # reconcile had its chance to do damage, not after it returned.
        reconciling = asyncio.ensure_future(world.engine.reconcile())
        for _ in range(50):
            await asyncio.sleep(0)
        gate.set()
        await start
        return await reconciling

    report = world.run(race())
    stored = world.engine.find_container(c.id)
    ep = stored.attachments[0].endpoint
    assert stored.state.status == "running" and ep is not None
    assert stored.sandbox_key in world.kernel.objects().namespaces
    assert (stored.sandbox_key, "eth0") in world.kernel.objects().links
    assert (ep.network_id, ep.ipv4, ep.id) in world.store.ipam_all()
    assert c.id in world.runtime.prepared
    assert report["namespaces_removed"] == [] and report["addresses_released"] == 0
    assert report["runc_removed"] == []
