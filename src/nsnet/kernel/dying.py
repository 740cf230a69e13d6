"""Interface names still taken in a sandbox while their link is being deleted off the request
path: a quick reconnect picks another name rather than waiting for (or failing on) the delete.

Shared by ``HostKernel`` and the fake kernel so both keep the same bookkeeping.
"""

from __future__ import annotations

import threading


class DyingNames:
    """Sandbox path -> container-side names whose pair is queued for deletion; thread-safe
    (the reaper thread calls ``discard``)."""

    def __init__(self) -> None:
        self._names: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def add(self, ns_path: str, ifname: str) -> None:
        with self._lock:
            self._names.setdefault(ns_path, set()).add(ifname)

    def discard(self, ns_path: str, ifname: str) -> None:
        with self._lock:
            names = self._names.get(ns_path)
            if names is not None:
                names.discard(ifname)
                if not names:
                    self._names.pop(ns_path, None)

    def of(self, ns_path: str) -> set[str]:
        with self._lock:
            return set(self._names.get(ns_path, ()))
