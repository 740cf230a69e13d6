"""How the engine tells the embedded DNS what changed (docs/architecture.md rule 6).

The sandbox and network services call these hooks at the points where names appear or vanish;
``nsnet.engine.embedded_dns.EmbeddedDNS`` implements them with resolver sockets and a
per-sandbox nftables table. ``NoResolver`` keeps the engine usable without DNS (``nsnetd
--no-dns``, unit tests).
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
    """Names resolve nowhere: every hook is a no-op."""

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
