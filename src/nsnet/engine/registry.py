"""The engine's in-memory mirror of the store: networks and containers, their lookups and locks.

The store is the truth (docs/architecture.md rule 3); these dicts mirror it, written through on
every change. Every service is handed the one ``Registry`` of the daemon instead of inheriting a
base class, so a test can build one over a memory store. Mutating use-cases do their kernel work
without awaiting in between, so on the single asyncio loop they are atomic with respect to each
other; the container lifecycle, which must await runc, holds a per-container lock instead.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING

from nsnet.errors import Conflict, Invalid, NotFound
from nsnet.model import Container, Network

if TYPE_CHECKING:
    from nsnet.drivers.base import Driver
    from nsnet.engine.ports import Store

# Container names keep Docker's rule: they become DNS names and /etc/hosts entries.
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# Control and format characters (newlines, NUL, bidirectional overrides that would make
# ``network ls`` lie), surrogates (not encodable as UTF-8) and line separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Longer network names are refused: the name is an etcd key component and shows in logs.
MAX_NETWORK_NAME = 255


def check_network_name(name: str) -> None:
    """Docker's rule for network names (libnetwork's ``IsValidName``: anything but blank),
    so ``docker network create "my net"`` and ``test@#$`` work as they do on Docker; on top of
    it no control or format characters (tabs, newlines, NUL, bidirectional overrides), which
    Docker takes but which would break a log line, an nftables comment or ``network ls``.
    Reserved and duplicate names are the caller's to refuse."""
    if not name.strip():
        raise Invalid("invalid name: name is empty")
    if any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in name):
        raise Invalid(f"invalid network name {name!r}: control characters are not allowed")
    if len(name) > MAX_NETWORK_NAME:
        raise Invalid(f"invalid network name: longer than {MAX_NETWORK_NAME} characters")


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


class Readers:
    """Attached output readers per container: an auto-remove waits for them to drain, so
    ``docker run --rm`` reads the last output before the container's logs go."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}

    def add(self, cid: str) -> None:
        self._count[cid] = self._count.get(cid, 0) + 1

    def done(self, cid: str) -> None:
        n = self._count.get(cid, 0) - 1
        if n <= 0:
            self._count.pop(cid, None)
        else:
            self._count[cid] = n

    def attached(self, cid: str) -> int:
        return self._count.get(cid, 0)


class Registry:
    """Networks and containers by ID, written through to the store; Docker's lookup order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.networks: dict[str, Network] = {}
        self.containers: dict[str, Container] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    def load(self) -> None:
        """Fill the mirror from the store, once at start."""
        for d in self.store.list("network"):
            n = Network.from_dict(d)
            self.networks[n.id] = n
        for d in self.store.list("container"):
            c = Container.from_dict(d)
            self.containers[c.id] = c

    # -- persistence ------------------------------------------------------------------------

    def save_network(self, net: Network) -> None:
        """Write through to the store; a global network only in memory, since etcd is its
        truth (engine/global_networks.py) and a stale local copy would outlive its removal."""
        if net.scope != "global":
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

    def not_busy(self, c: Container) -> None:
        """Connect/disconnect run without awaiting; a start, stop or removal of the same
        container in flight (it holds the container's lock across runc) must finish first, or
        both would edit the same endpoints and addresses."""
        lock = self.locks.get(c.id)
        if lock is not None and lock.locked():
            raise Conflict(f"container {c.name} is being started, stopped or removed: "
                           "try again")

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

    def network_users(self, net: Network) -> list[Container]:
        """Containers holding a live endpoint on ``net``."""
        out = []
        for c in self.containers.values():
            a = c.attachment(net.id)
            if a is not None and a.endpoint is not None:
                out.append(c)
        return out


def driver_of(drivers: Mapping[str, Driver], net: Network) -> Driver:
    d = drivers.get(net.driver)
    if d is None:
        raise NotFound(f"plugin \"{net.driver}\" not found")
    return d
