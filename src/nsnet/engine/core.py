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
from nsnet.ipam.allocator import Allocator
from nsnet.kernel import netns
from nsnet.kernel.host import HostKernel
from nsnet.model import Container, Network
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
                                  "runc_removed": []}
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
        for c in list(self.containers.values()):
            if c.state.status != "running":
                continue
            if c.id in self.exit_tasks:
                continue
            alive = c.state.pid > 0 and _pid_alive(c.state.pid) and (
                c.network_mode == "host" or os.path.exists(self.ns_path(c)))
            if alive:
                self.exit_tasks[c.id] = asyncio.create_task(self._watch(c.id, c.state.pid))
                for a in c.attachments:
                    anet = self.networks.get(a.network_id)
                    restore = getattr(self.drivers.get(anet.driver) if anet else None,
                                      "restore", None)
                    if a.endpoint is not None and anet is not None and restore is not None:
                        try:
                            restore(anet, a.endpoint, Sandbox(c.id, c.sandbox_key or None))
                        except Exception:  # noqa: BLE001
                            log.exception("restoring %s on %s", c.short_id, anet.name)
                if c.sandbox_key and self.on_user_network(c):
                    self.resolver.sandbox_up(c, c.sandbox_key)
                for a in c.attachments:
                    if a.endpoint is not None and a.network_id in self.networks:
                        self.resolver.endpoint_up(c, self.networks[a.network_id], a.endpoint)
            else:
                report["containers_lost"].append(c.name)
                # The exit status died with the previous daemon; 255 says "unknown".
                await self.container_exited(c.id, 255)
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
