"""The host route bookkeeping behind default-pool selection (no root, no kernel)."""

from __future__ import annotations

import ipaddress

from nsnet.kernel.routes import Route, RouteTable


def nets(t: RouteTable) -> set[str]:
    return {str(n) for n in t.networks()}


def test_a_link_going_away_takes_its_connected_routes_along() -> None:
    """bug (issue 8.7): the kernel sends no RTM_DELROUTE for these; the subnet stayed taken."""
    t = RouteTable([Route("172.18.0.0", 16, oifs=frozenset({7})),
                    Route("10.0.0.0", 8, oifs=frozenset({2}))])
    t.link_down(7)
    assert nets(t) == {"10.0.0.0/8"}
    t.link_down(7)  # a second event for the same link changes nothing
    assert nets(t) == {"10.0.0.0/8"}


def test_multipath_and_deviceless_routes_outlive_one_link() -> None:
    t = RouteTable()
    t.add(Route("10.7.0.0", 16, oifs=frozenset({1, 2})))
    t.add(Route("192.0.2.0", 24))  # blackhole: no device, never flushed with a link
    t.link_down(2)
    t.link_down(1)
    assert nets(t) == {"10.7.0.0/16", "192.0.2.0/24"}


def test_replace_drops_the_route_it_replaced() -> None:
    t = RouteTable([Route("198.51.100.0", 24, priority=5, oifs=frozenset({3}))])
    t.add(Route("198.51.100.0", 24, priority=5, oifs=frozenset({4})), replace=True)
    assert len(t) == 1
    t.link_down(3)
    assert nets(t) == {"198.51.100.0/24"}
    t.link_down(4)
    assert nets(t) == set()


def test_same_prefix_on_two_links_is_two_routes() -> None:
    a = Route("203.0.113.0", 24, oifs=frozenset({3}))
    b = Route("203.0.113.0", 24, priority=100, oifs=frozenset({4}))
    t = RouteTable([a, b])
    t.delete(a)
    assert nets(t) == {"203.0.113.0/24"}
    t.delete(Route("203.0.113.0", 24, priority=100))  # next hops not named: the slot decides
    assert nets(t) == set()


def test_networks_are_normalised() -> None:
    t = RouteTable([Route("10.1.2.3", 16, oifs=frozenset({1}))])
    assert t.networks() == [ipaddress.IPv4Network("10.1.0.0/16")]


def test_an_address_going_takes_only_its_connected_route() -> None:
    """The watcher hears RTM_DELADDR when a bridge is deleted (its route leaves silently)."""
    t = RouteTable([Route("172.18.0.0", 16, oifs=frozenset({7})),
                    Route("10.50.0.0", 16, oifs=frozenset({7})),  # a static route via it
                    Route("172.18.0.0", 16, priority=5, oifs=frozenset({8}))])
    t.address_gone(7, ipaddress.IPv4Network("172.18.0.0/16"))
    assert sorted(nets(t)) == ["10.50.0.0/16", "172.18.0.0/16"]
    assert len(t) == 2
    t.address_gone(7, ipaddress.IPv4Network("172.18.0.0/16"))  # repeated: nothing more
    assert len(t) == 2
