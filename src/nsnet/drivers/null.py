"""``none`` and ``host``: no kernel objects at all, on purpose."""

from __future__ import annotations

from nsnet.drivers.base import Sandbox
from nsnet.errors import Forbidden
from nsnet.model import Endpoint, Network


class NullDriver:
    name = "null"
    has_endpoints = False

    def validate(self, net: Network) -> None:
        raise Forbidden('only one instance of "null" network is allowed')

    def create_network(self, net: Network) -> None:
        pass

    def delete_network(self, net: Network) -> None:
        pass

    def join(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        pass

    def leave(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        pass


class HostDriver(NullDriver):
    name = "host"

    def validate(self, net: Network) -> None:
        raise Forbidden('only one instance of "host" network is allowed')
