"""A container's /etc files as Docker writes them, from plain data (nsnet/etc_files.py)."""

from __future__ import annotations

import pytest

from nsnet.etc_files import (
    HOSTS_HEADER,
    is_loopback,
    link_names,
    parse_link,
    render_hostname,
    render_hosts,
    render_resolv_conf,
)
from nsnet.resolvconf import ResolvConf, parse

HOST = ResolvConf(("127.0.0.53", "192.0.2.53"), ("example.test",), ("edns0", "ndots:2"))


def test_hostname() -> None:
    assert render_hostname("web") == "web\n"


def test_hosts_order_links_extra_then_own_addresses() -> None:
    name, alias = parse_link("db:database")
    assert (name, alias) == ("db", "database")
    assert parse_link("db") == ("db", "")
    assert link_names(name, alias, "db") == ["database", "db"]
    assert link_names("db", "", "db") == ["db"]  # each name once
    text = render_hosts(
        "web",
        ["10.0.0.2", "fd00::2", "", "10.1.0.2"],
        links=[("10.0.0.3", ["database", "db"])],
        extra_hosts=["gw:192.0.2.1", "broken", ":192.0.2.2", "nohost:"],
    )
    assert text == HOSTS_HEADER + (
        "10.0.0.3\tdatabase db\n"
        "192.0.2.1\tgw\n"
        "10.0.0.2\tweb\nfd00::2\tweb\n10.1.0.2\tweb\n"
    )
    assert render_hosts("h", []) == HOSTS_HEADER


def test_embedded_resolver_on_user_networks() -> None:
    text = render_resolv_conf(HOST, embedded=True)
    assert text == (
        "nameserver 127.0.0.11\nsearch example.test\noptions ndots:0 edns0\n"
        "# ExtServers: ['127.0.0.53', '192.0.2.53']\n"
    )
    own = render_resolv_conf(HOST, embedded=True, dns=["198.51.100.1"], dns_search=["."],
                             dns_options=["ndots:5", "rotate"])
    assert own == (
        "nameserver 127.0.0.11\noptions ndots:5 rotate\n# ExtServers: ['198.51.100.1']\n"
    )
    assert parse(own).nameservers == ("127.0.0.11",)


@pytest.mark.parametrize(
    ("kw", "servers"),
    [
        ({}, ["192.0.2.53"]),  # the host's minus loopback
        ({"dns": ["198.51.100.1:5353"]}, ["198.51.100.1:5353"]),
        ({"host_mode": True}, ["127.0.0.53", "192.0.2.53"]),  # host mode: as they are
    ],
)
def test_default_bridge_and_host_mode(kw: dict[str, object], servers: list[str]) -> None:
    conf = parse(render_resolv_conf(HOST, embedded=False, **kw))  # type: ignore[arg-type]
    assert list(conf.nameservers) == servers
    assert conf.search == ("example.test",)
    assert conf.options == ("edns0", "ndots:2")  # the host's options, ndots included


def test_only_loopback_on_the_host_falls_back_to_public_resolvers() -> None:
    host = ResolvConf(("127.0.0.53", "[::1]:53"))
    text = render_resolv_conf(host, embedded=False, dns_search=["a.test"], dns_options=["x"])
    assert text == "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch a.test\noptions x\n"


@pytest.mark.parametrize(
    ("addr", "loop"),
    [("127.0.0.1", True), ("127.0.0.53:5353", True), ("::1", True), ("[::1]:53", True),
     ("fe80::1%eth0", False), ("192.0.2.1", False), ("not-an-ip", False), ("", False)],
)
def test_is_loopback(addr: str, loop: bool) -> None:
    assert is_loopback(addr) is loop
