"""How the engine tells the embedded DNS what changed (DESIGN.md rule 6).

The engine calls these hooks at the points where names appear or vanish; the implementation
lives in ``nsnet.engine.dns_hooks`` and owns the resolver sockets and the per-sandbox nftables
table. ``NoResolver`` keeps the engine usable without DNS (unit tests).
"""

from __future__ import annotations

from typing import Protocol

from nsnet.model import Container, Endpoint, Network


class ResolverHooks(Protocol):
    def sandbox_up(self, c: Container, ns_path: str) -> None:
        """A sandbox that is on at least one user-defined network needs a resolver."""

    def sandbox_down(self, c: Container) -> None: ...

    def endpoint_up(self, c: Container, net: Network, ep: Endpoint) -> None: ...

    def endpoint_down(self, c: Container, net: Network, ep: Endpoint) -> None: ...

    def network_removed(self, net: Network) -> None: ...


class NoResolver:
    def sandbox_up(self, c: Container, ns_path: str) -> None:
        pass

    def sandbox_down(self, c: Container) -> None:
        pass

    def endpoint_up(self, c: Container, net: Network, ep: Endpoint) -> None:
        pass

    def endpoint_down(self, c: Container, net: Network, ep: Endpoint) -> None:
        pass

    def network_removed(self, net: Network) -> None:
        pass
