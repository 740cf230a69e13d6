"""Reconcile: make the kernel match the store (architecture rule 3), at start and on demand.

The steps run in an order that keeps addresses safe: networks are re-made first, then the
containers that outlived the daemon are adopted (their addresses claimed again) before the dead
ones are torn down (which frees theirs), and only then is everything that carries an nsnet name
and no stored owner removed: links, namespaces, firewall chains, foreign FORWARD accepts, IPAM
rows and runc state. Each step fills its part of one report, which ``nsnet system reconcile``
prints.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from nsnet.drivers.base import Driver, HasStalePorts, OwnsLinks, Restorable, Sandbox
from nsnet.engine.containers import ContainerService
from nsnet.engine.ports import Kernel, Runtime, Store
from nsnet.engine.registry import ContainerWaiters, Registry
from nsnet.engine.resolver_hooks import ResolverHooks
from nsnet.engine.sandboxes import SandboxService
from nsnet.engine.shared_netns import joined_ref, namespace_owner
from nsnet.errors import NsnetError
from nsnet.ipam.allocator import Allocator
from nsnet.model import Container, Endpoint, Network

log = logging.getLogger("nsnet.engine")

OVERLAY_VNI = "com.docker.network.driver.overlay.vxlanid_list"

Report = dict[str, Any]

# runc states in which the container's cgroup is (being) frozen.
FROZEN = ("paused", "pausing")
# Concurrent ``runc state`` calls while adopting containers at start (each one forks).
STATE_QUERIES = 8


@runtime_checkable
class ReportsState(Protocol):
    """A runtime that can say what it holds of a container (runc's ``state``); without it
    the stored paused mark stands."""

    async def state(self, cid: str) -> dict[str, Any] | None: ...


def new_report() -> Report:
    return {"networks_rebuilt": [], "containers_lost": [], "links_removed": [],
            "namespaces_removed": [], "chains_removed": [], "addresses_released": 0,
            "addresses_reclaimed": 0, "address_conflicts": [], "endpoints_restored": [],
            "runc_removed": [], "overlays_removed": [], "paused_corrected": []}


class Reconciler:
    """The one place that re-makes lost kernel objects (a driver's join never does)."""

    def __init__(self, registry: Registry, store: Store, ipam: Allocator, kernel: Kernel,
                 drivers: Mapping[str, Driver], resolver: ResolverHooks,
                 sandboxes: SandboxService, containers: ContainerService,
                 runtime: Runtime) -> None:
        self.registry = registry
        self.store = store
        self.ipam = ipam
        self.kernel = kernel
        self.drivers = drivers
        self.resolver = resolver
        self.sandboxes = sandboxes
        self.containers = containers
        self.runc = runtime
        # Whether the mirror of the cluster's networks is complete (wired with a cluster):
        # only then may an overlay namespace without a network be judged a leftover.
        self.global_synced: Callable[[], bool] = lambda: False

    async def run(self) -> Report:
        """Every step, in order; what each changed goes into the report."""
        report = new_report()
        self.kernel.firewall.ensure_base()
        self._rebuild_networks(report)
        await self._adopt_or_close(report)
        self.containers.published_ports.reconcile(report)  # after the endpoints are back
        self._finish_stopped()
        owned_links, live_eps = self._owned()
        self._remove_links(owned_links, report)
        self._remove_namespaces(report)
        self._remove_chains(report)
        self._remove_overlays(report)
        self._release_addresses(live_eps, report)
        await self._remove_runc(report)
        return report

    def _rebuild_networks(self, report: Report) -> None:
        for net in list(self.registry.networks.values()):
            drv = self.drivers.get(net.driver)
            if drv is None:
                continue
            try:
                drv.create_network(net)
                self.registry.save_network(net)
                report["networks_rebuilt"].append(net.name)
            except Exception:
                log.exception("rebuilding network %s", net.name)

    async def _adopt_or_close(self, report: Report) -> None:
        """Containers the store thinks are running: adopt the live ones, close the dead ones.
        The live ones first: their addresses are claimed before any teardown frees one."""
        svc = self.containers
        unwatched = [c for c in self.registry.containers.values()
                     if c.state.status == "running" and c.id not in svc.exit_tasks]
        dead = []
        adopted = []
        for c in unwatched:
            alive = c.state.pid > 0 and pid_alive(c.state.pid) and (
                c.network_mode == "host" or joined_ref(c.network_mode) is not None or
                os.path.exists(self.sandboxes.ns_path(c)))
            if alive:
                svc.waiters.setdefault(c.id, ContainerWaiters())
                svc.exit_tasks[c.id] = asyncio.create_task(svc.watch(c.id, c.state.pid))
                self._adopt(c, report)
                adopted.append(c)
            else:
                dead.append(c)
        await self._restore_paused(adopted, report)
        for c in dead:
            report["containers_lost"].append(c.name)
            # The exit status died with the previous daemon; 255 says "unknown".
            await svc.container_exited(c.id, 255)

    async def _restore_paused(self, adopted: list[Container], report: Report) -> None:
        """The paused mark of each adopted container made runc's truth: a crash between
        ``runc pause`` (or ``resume``) and the store's save left the mark wrong, and a client
        that sees "running" would exec into a frozen container and hang."""
        if not adopted or not isinstance(self.runc, ReportsState):
            return
        runtime: ReportsState = self.runc
        gate = asyncio.Semaphore(STATE_QUERIES)

        async def one(c: Container) -> None:
            async with gate:
                try:
                    st = await runtime.state(c.id)
                except Exception:
                    log.exception("runc state of %s: its paused mark is kept", c.short_id)
                    return
            frozen = st is not None and st.get("status") in FROZEN
            if frozen != c.state.paused and c.state.status == "running":
                log.warning("container %s is %s in runc, stored otherwise: corrected",
                            c.short_id, "paused" if frozen else "not paused")
                c.state.paused = frozen
                self.registry.save_container(c)
                report["paused_corrected"].append(c.name)

        await asyncio.gather(*(one(c) for c in adopted))

    def _busy(self) -> set[str]:
        """Containers a start, stop, exit or removal holds the lock of (it awaits runc): their
        namespace, endpoints and runc state are that use-case's, however "created" they look.
        Reconcile runs on demand too (``nsnet system reconcile``), not only at start."""
        return {cid for cid, lock in self.registry.locks.items() if lock.locked()}

    def _finish_stopped(self) -> None:
        """Not running yet stored with endpoints: an exit whose kernel teardown failed."""
        busy = self._busy()
        for c in list(self.registry.containers.values()):
            if c.id in busy:
                continue
            if c.state.status != "running" and any(a.endpoint for a in c.attachments):
                try:
                    self.sandboxes.teardown_sandbox(c)
                except Exception:
                    log.exception("releasing the endpoints of stopped %s", c.short_id)

    def _owned(self) -> tuple[set[str], set[str]]:
        """Host-side link names and endpoint IDs that stored objects own."""
        owned_links: set[str] = set()
        live_eps: set[str] = set()
        for c in self.registry.containers.values():
            for a in c.attachments:
                if a.endpoint is not None:
                    live_eps.add(a.endpoint.id)
                    if a.endpoint.host_ifname:
                        owned_links.add(a.endpoint.host_ifname)
        for net in self.registry.networks.values():
            if net.driver_state.get("bridge"):
                owned_links.add(net.driver_state["bridge"])
            drv = self.drivers.get(net.driver)
            if isinstance(drv, OwnsLinks):
                owned_links |= drv.owned_links(net)
        return owned_links, live_eps

    def _remove_links(self, owned_links: set[str], report: Report) -> None:
        for name, _alias in list(self.kernel.links.tagged("nsnet:")):
            if name not in owned_links:
                self.kernel.links.delete(name)
                report["links_removed"].append(name)
        for net in self.registry.networks.values():
            drv = self.drivers.get(net.driver)
            if not isinstance(drv, HasStalePorts):
                continue
            for name in drv.stale_ports(net, owned_links):
                self.kernel.links.delete(name)
                report["links_removed"].append(name)

    def _remove_namespaces(self, report: Report) -> None:
        busy = self._busy()
        # A running dependent (``container:`` mode) keeps its owner's path: its own is
        # never made, and the owner's must not go while the dependent lives in it.
        live_ns = {self.sandboxes.ns_path(namespace_owner(self.registry, c))
                   for c in self.registry.containers.values()
                   if (c.state.status == "running" or c.id in busy) and
                   c.network_mode != "host"}
        for entry in os.listdir(self.kernel.netns_dir):
            p = str(self.kernel.netns_dir / entry)
            if p not in live_ns:
                self.kernel.ns.remove(p)
                report["namespaces_removed"].append(entry)

    def _remove_chains(self, report: Report) -> None:
        known = {n.short_id for n in self.registry.networks.values()}
        for sid in self.kernel.firewall.network_chains():
            if sid not in known:
                self.kernel.firewall.remove_stale(sid)
                report["chains_removed"].append(sid)
        # Our accepts in another firewall's FORWARD chain (kernel/foreign_firewall.py): the
        # networks' re-create above restored theirs; these belong to no network.
        report["forward_accepts_removed"] = self.kernel.firewall.foreign.remove_unowned(known)

    def _remove_overlays(self, report: Report) -> None:
        """Overlay namespaces whose VNI no global network has (removed while this host was
        down or cut off). Not while the network list is incomplete: a network not listed yet
        would lose its data plane and its running containers' connectivity."""
        if not self.global_synced():
            return
        owned = {net.options.get(OVERLAY_VNI) for net in self.registry.networks.values()
                 if net.driver == "overlay"}
        for vni in sorted(self.kernel.overlays.present()):
            if str(vni) not in owned:
                self.kernel.overlays.remove(vni)
                report["overlays_removed"].append(vni)

    def _release_addresses(self, live_eps: set[str], report: Report) -> None:
        for network, address, owner in self.store.ipam_all():
            if owner not in live_eps:
                self.ipam.release(network, address)
                report["addresses_released"] += 1

    async def _remove_runc(self, report: Report) -> None:
        for cid in self.runc.list_ids():
            c = self.registry.containers.get(cid)
            if c is None:
                await self.runc.delete(cid)
                report["runc_removed"].append(cid)
                continue
            # Under the container's lock: a start in flight finishes first (and is running).
            async with self.registry.lock_for(cid):
                if cid in self.registry.containers and c.state.status != "running":
                    await self.runc.delete(cid)
                    report["runc_removed"].append(cid)

    # -- adopting a container that outlived the daemon ---------------------------------------

    def _adopt(self, c: Container, report: Report) -> None:
        """Its endpoints as stored, in the kernel (links up, default route), in IPAM
        (addresses claimed) and in the resolver; what a restore changed (a re-made veth's
        name) written back, or the next reconcile would delete it."""
        before = c.to_dict()
        for a in c.attachments:
            anet = self.registry.networks.get(a.network_id)
            if a.endpoint is None or anet is None:
                continue
            self._reclaim(c, anet, a.endpoint, report)
            drv = self.drivers.get(anet.driver)
            if isinstance(drv, Restorable):
                ep, host_side = a.endpoint, a.endpoint.host_ifname
                try:
                    drv.restore(anet, ep, Sandbox(c.id, c.sandbox_key or None))
                    if ep.host_ifname != host_side and c.sandbox_key:
                        # Re-made: a new interface in the container, without the sysctls
                        # its run asked for.
                        self.sandboxes.write_endpoint_sysctls(a, ep, c.sandbox_key)
                except Exception:
                    log.exception("restoring %s on %s", c.short_id, anet.name)
        if c.sandbox_key:
            self._revive_sandbox(c)
        if c.sandbox_key and self.sandboxes.on_user_network(c):
            self.resolver.sandbox_up(c, c.sandbox_key)
        for a in c.attachments:
            if a.endpoint is not None and a.network_id in self.registry.networks:
                self.resolver.endpoint_up(c, self.registry.networks[a.network_id], a.endpoint)
        try:
            # A crash between a disconnect's save and its file updates leaves stale names.
            self.sandboxes.write_etc_files(c)
        except OSError:
            log.exception("rewriting /etc files of %s", c.short_id)
        if c.to_dict() != before:
            self.registry.save_container(c)
            report["endpoints_restored"].append(c.name)

    def _reclaim(self, c: Container, net: Network, ep: Endpoint, report: Report) -> None:
        """Claim a stored endpoint's addresses in IPAM again if a crash left them free (a
        global network's are in the cluster, where the address sweep keeps them)."""
        if net.scope == "global":
            return
        for addr, fam in ((ep.ipv4, 4), (ep.ipv6, 6)):
            if not addr:
                continue
            owner = self.store.ipam_owner(net.id, addr)
            if owner == ep.id:
                continue
            if owner is None:
                try:
                    self.ipam.allocate(net, ep.id, fam, requested=addr)
                    report["addresses_reclaimed"] += 1
                except NsnetError as e:
                    log.error("cannot claim %s of %s on %s again: %s", addr, c.short_id,
                              net.name, e.message)
                    report["address_conflicts"].append(f"{net.name}:{addr}")
                continue
            # Only a state written before this ordering existed can get here.
            log.error("%s of %s on %s is held by endpoint %s too", addr, c.short_id, net.name,
                      owner[:12])
            report["address_conflicts"].append(f"{net.name}:{addr}")

    def _revive_sandbox(self, c: Container) -> None:
        """Links a cut-short disconnect left down come back up, with the default route the
        store marks (a link going down takes its routes along), or a new pick if none is."""
        try:
            with self.kernel.sandbox_links(c.sandbox_key) as links:
                for a in c.attachments:
                    ep = a.endpoint
                    if ep is None or not links.exists(ep.ifname):
                        continue
                    links.set_up(ep.ifname)
                    if ep.default_route and ep.gateway:
                        links.set_default_route(ep.ifname, ep.gateway, 4)
                    if ep.default_route and ep.ipv6_gateway:
                        links.set_default_route(ep.ifname, ep.ipv6_gateway, 6)
            self.sandboxes.pick_default_route(c)
        except (OSError, NsnetError):
            log.exception("reviving the links of %s", c.short_id)


def pid_alive(pid: int) -> bool:
    """A live, non-zombie process (a zombie's container is gone but not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
