"""Engine state shared by the use-case modules: the registry of networks and containers.

The store is the truth (DESIGN.md rule 3); these dicts are its in-memory mirror, written through
on every change. Mutating use-cases do their kernel work without awaiting in between, so on the
single asyncio loop they are atomic with respect to each other; the container lifecycle, which
must await runc, holds a per-container lock instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nsnet.errors import Invalid, NotFound
from nsnet.ipam.allocator import Allocator
from nsnet.model import Container, Network
from nsnet.store.local import LocalStore

if TYPE_CHECKING:
    from nsnet.drivers.base import Driver
    from nsnet.engine.resolver import ResolverHooks
    from nsnet.kernel.host import HostKernel
    from nsnet.runtime.images import ImageStore
    from nsnet.runtime.runc import Runc

log = logging.getLogger("nsnet.engine")

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass
class EngineConfig:
    data_root: Path
    exec_root: Path
    default_bridge: str = "nsnet0"
    host_resolv_conf: Path = Path("/etc/resolv.conf")
    host_hosts: Path = Path("/etc/hosts")
    extra: dict[str, Any] = field(default_factory=dict)


class ContainerWaiters:
    """Futures for Docker's wait conditions: next-exit, not-running, removed."""

    def __init__(self) -> None:
        self.next_exit: list[asyncio.Future[int]] = []
        self.removed: list[asyncio.Future[int]] = []

    @staticmethod
    def _fire(futs: list[asyncio.Future[int]], code: int) -> None:
        for f in futs:
            if not f.done():
                f.set_result(code)
        futs.clear()

    def exited(self, code: int) -> None:
        self._fire(self.next_exit, code)

    def gone(self, code: int) -> None:
        self._fire(self.next_exit, code)
        self._fire(self.removed, code)


class EngineBase:
    config: EngineConfig
    store: LocalStore
    ipam: Allocator
    host: HostKernel
    drivers: dict[str, Driver]
    images: ImageStore
    runc: Runc
    resolver: ResolverHooks

    networks: dict[str, Network]
    containers: dict[str, Container]
    waiters: dict[str, ContainerWaiters]
    locks: dict[str, asyncio.Lock]
    exit_tasks: dict[str, asyncio.Task[None]]
    # Attached output readers per container: auto-remove waits for them to drain.
    readers: dict[str, int]
    # Containers inside a restart: their stop must not trigger auto-remove.
    restarting: set[str]

    # -- persistence ------------------------------------------------------------------------

    def save_network(self, net: Network) -> None:
        self.store.put("network", net.id, net.name, net.to_dict())
        self.networks[net.id] = net

    def save_container(self, c: Container) -> None:
        self.store.put("container", c.id, c.name, c.to_dict())
        self.containers[c.id] = c

    def lock_for(self, cid: str) -> asyncio.Lock:
        lk = self.locks.get(cid)
        if lk is None:
            lk = self.locks[cid] = asyncio.Lock()
        return lk

    # -- lookups (Docker's order: full ID, exact name, unique ID prefix) ---------------------

    def find_network(self, ref: str) -> Network:
        if ref in self.networks:
            return self.networks[ref]
        for n in self.networks.values():
            if n.name == ref:
                return n
        if ref:
            matches = [n for n in self.networks.values() if n.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Invalid(f"network {ref} is ambiguous ({len(matches)} matches found based "
                              "on name/ID prefix)")
        raise NotFound(f"network {ref} not found")

    def find_container(self, ref: str) -> Container:
        if ref in self.containers:
            return self.containers[ref]
        name = ref[1:] if ref.startswith("/") else ref
        for c in self.containers.values():
            if c.name == name:
                return c
        if ref:
            matches = [c for c in self.containers.values() if c.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Invalid(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def driver_of(self, net: Network) -> Driver:
        d = self.drivers.get(net.driver)
        if d is None:
            raise NotFound(f"plugin \"{net.driver}\" not found")
        return d

    def network_users(self, net: Network) -> list[Container]:
        """Containers holding a live endpoint on ``net``."""
        out = []
        for c in self.containers.values():
            a = c.attachment(net.id)
            if a is not None and a.endpoint is not None:
                out.append(c)
        return out
