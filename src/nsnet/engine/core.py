"""The engine: wires the store, IPAM, kernel, drivers and runtime, and reconciles at start."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from nsnet.drivers.base import Sandbox
from nsnet.drivers.bridge import BridgeDriver
from nsnet.drivers.macvlan import MacvlanDriver
from nsnet.drivers.null import HostDriver, NullDriver
from nsnet.engine.base import ContainerWaiters, EngineConfig, log
from nsnet.engine.containers import ContainersMixin
from nsnet.engine.networks import NetworksMixin
from nsnet.engine.resolver import NoResolver, ResolverHooks
from nsnet.errors import NsnetError
from nsnet.ipam.allocator import Allocator
from nsnet.kernel import netns
from nsnet.kernel.host import HostKernel
from nsnet.model import Container, Endpoint, Network
from nsnet.runtime.images import ImageStore
from nsnet.runtime.runc import Runc
from nsnet.store.local import LocalStore


class Engine(NetworksMixin, ContainersMixin):
    def __init__(self, config: EngineConfig, resolver: ResolverHooks | None = None) -> None:
        self.config = config
        config.data_root.mkdir(parents=True, exist_ok=True)
        config.exec_root.mkdir(parents=True, exist_ok=True)
        # Made now, private, rather than by the first container (nsnet.file_modes).
        (config.exec_root / "sandboxes").mkdir(mode=0o700, exist_ok=True)
        self.store = LocalStore(config.data_root / "nsnet.db")
        self.ipam = Allocator(self.store)
        self.host = HostKernel(config.exec_root)
        self.drivers = {
            "bridge": BridgeDriver(self.host),
            "host": HostDriver(),
            "null": NullDriver(),
            "macvlan": MacvlanDriver(self.host, lambda: list(self.networks.values())),
            "ipvlan": MacvlanDriver(self.host, lambda: list(self.networks.values()), "ipvlan"),
        }
        self.images = ImageStore(config.data_root / "images")
        self.runc = Runc(config.exec_root, config.data_root)
        self.resolver = resolver or NoResolver()
        self.networks = {}
        self.containers = {}
        self.waiters = {}
        self.locks = {}
        self.exit_tasks = {}
        self.readers = {}
        self.restarting = set()

    def register_driver(self, name: str, driver: Any) -> None:
        self.drivers[name] = driver

    async def start(self) -> dict[str, Any]:
        for d in self.store.list("network"):
            n = Network.from_dict(d)
            self.networks[n.id] = n
        for d in self.store.list("container"):
            c = Container.from_dict(d)
            self.containers[c.id] = c
            self.waiters[c.id] = ContainerWaiters()
        await asyncio.get_running_loop().run_in_executor(None, self.images.ensure_busybox)
        self.ensure_predefined()
        return await self.reconcile()

    async def reconcile(self) -> dict[str, Any]:
        """Make the kernel match the store (DESIGN.md rule 3); report what was changed."""
        report: dict[str, Any] = {"networks_rebuilt": [], "containers_lost": [],
                                  "links_removed": [], "namespaces_removed": [],
                                  "chains_removed": [], "addresses_released": 0,
                                  "addresses_reclaimed": 0, "address_conflicts": [],
                                  "endpoints_restored": [], "runc_removed": []}
        self.host.firewall.ensure_base()
        for net in list(self.networks.values()):
            drv = self.drivers.get(net.driver)
            if drv is None:
                continue
            try:
                drv.create_network(net)
                self.save_network(net)
                report["networks_rebuilt"].append(net.name)
            except Exception:  # noqa: BLE001
                log.exception("rebuilding network %s", net.name)
        # Containers the store thinks are running: adopt the live ones, close the dead ones.
        # The live ones first: their addresses are claimed before any teardown frees one.
        unwatched = [c for c in self.containers.values()
                     if c.state.status == "running" and c.id not in self.exit_tasks]
        dead = []
        for c in unwatched:
            alive = c.state.pid > 0 and _pid_alive(c.state.pid) and (
                c.network_mode == "host" or os.path.exists(self.ns_path(c)))
            if alive:
                self.exit_tasks[c.id] = asyncio.create_task(self._watch(c.id, c.state.pid))
                self._adopt(c, report)
            else:
                dead.append(c)
        for c in dead:
            report["containers_lost"].append(c.name)
            # The exit status died with the previous daemon; 255 says "unknown".
            await self.container_exited(c.id, 255)
        # Not running yet stored with endpoints: an exit whose kernel teardown failed.
        for c in list(self.containers.values()):
            if c.state.status != "running" and any(a.endpoint for a in c.attachments):
                try:
                    self.teardown_sandbox(c)
                except Exception:  # noqa: BLE001
                    log.exception("releasing the endpoints of stopped %s", c.short_id)
        owned_links = set()
        live_eps = set()
        for c in self.containers.values():
            for a in c.attachments:
                if a.endpoint is not None:
                    live_eps.add(a.endpoint.id)
                    if a.endpoint.host_ifname:
                        owned_links.add(a.endpoint.host_ifname)
        for net in self.networks.values():
            if net.driver_state.get("bridge"):
                owned_links.add(net.driver_state["bridge"])
            owned = getattr(self.drivers.get(net.driver), "owned_links", None)
            if owned is not None:
                owned_links |= owned(net)
        for name, _alias in list(self.host.links.tagged("nsnet:")):
            if name not in owned_links:
                self.host.links.delete(name)
                report["links_removed"].append(name)
        for net in self.networks.values():
            stale = getattr(self.drivers.get(net.driver), "stale_ports", None)
            if stale is None:
                continue
            for name in stale(net, owned_links):
                self.host.links.delete(name)
                report["links_removed"].append(name)
        live_ns = {self.ns_path(c) for c in self.containers.values()
                   if c.state.status == "running" and c.network_mode != "host"}
        for entry in os.listdir(self.host.netns_dir):
            p = str(self.host.netns_dir / entry)
            if p not in live_ns:
                netns.remove(p)
                report["namespaces_removed"].append(entry)
        known = {n.short_id for n in self.networks.values()}
        for sid in self.host.firewall.network_chains():
            if sid not in known:
                self.host.firewall.remove_stale(sid)
                report["chains_removed"].append(sid)
        # Our accepts in another firewall's FORWARD chain (kernel/foreign_firewall.py): the
        # networks' re-create above restored theirs; these belong to no network.
        report["forward_accepts_removed"] = self.host.firewall.foreign.remove_unowned(known)
        for network, address, owner in self.store.ipam_all():
            if owner not in live_eps:
                self.ipam.release(network, address)
                report["addresses_released"] += 1
        running = {c.id for c in self.containers.values() if c.state.status == "running"}
        for cid in self.runc.list_ids():
            if cid not in running:
                await self.runc.delete(cid)
                report["runc_removed"].append(cid)
        return report

    def _adopt(self, c: Container, report: dict[str, Any]) -> None:
        """A container that outlived the daemon: its endpoints as stored, in the kernel (links
        up, default route), in IPAM (addresses claimed) and in the resolver; what a restore
        changed (a re-made veth's name) written back, or the next reconcile would delete it."""
        before = c.to_dict()
        for a in c.attachments:
            anet = self.networks.get(a.network_id)
            if a.endpoint is None or anet is None:
                continue
            self._reclaim(c, anet, a.endpoint, report)
            restore = getattr(self.drivers.get(anet.driver), "restore", None)
            if restore is not None:
                try:
                    restore(anet, a.endpoint, Sandbox(c.id, c.sandbox_key or None))
                except Exception:  # noqa: BLE001
                    log.exception("restoring %s on %s", c.short_id, anet.name)
        if c.sandbox_key:
            self._revive_sandbox(c)
        if c.sandbox_key and self.on_user_network(c):
            self.resolver.sandbox_up(c, c.sandbox_key)
        for a in c.attachments:
            if a.endpoint is not None and a.network_id in self.networks:
                self.resolver.endpoint_up(c, self.networks[a.network_id], a.endpoint)
        try:
            # A crash between a disconnect's save and its file updates leaves stale names.
            self.write_etc_files(c)
        except OSError:
            log.exception("rewriting /etc files of %s", c.short_id)
        if c.to_dict() != before:
            self.save_container(c)
            report["endpoints_restored"].append(c.name)

    def _reclaim(self, c: Container, net: Network, ep: Endpoint,
                 report: dict[str, Any]) -> None:
        """Claim a stored endpoint's addresses in IPAM again if a crash left them free."""
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
            with self.host.sandbox_links(c.sandbox_key) as links:
                for a in c.attachments:
                    ep = a.endpoint
                    if ep is None or not links.exists(ep.ifname):
                        continue
                    links.set_up(ep.ifname)
                    if ep.default_route and ep.gateway:
                        links.set_default_route(ep.ifname, ep.gateway, 4)
                    if ep.default_route and ep.ipv6_gateway:
                        links.set_default_route(ep.ifname, ep.ipv6_gateway, 6)
            self.pick_default_route(c)
        except (OSError, NsnetError):
            log.exception("reviving the links of %s", c.short_id)

    async def close(self) -> None:
        for t in list(self.exit_tasks.values()):
            t.cancel()
        self.host.close()
        self.store.close()


def _pid_alive(pid: int) -> bool:
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
