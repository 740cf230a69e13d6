"""Which links the leak check counts as this run's (``nsnet.testing.leaks.our_new_links``),
on ``ip -j link`` records shaped as the kernel reports them: Docker's bridge, ports and
containers' peers are never counted; nsnet's tagged or named links, their ports and links
whose other end is in one of the run's namespaces always are."""

from __future__ import annotations

from typing import Any

from nsnet.testing import leaks


def link(index: int, name: str, **extra: Any) -> dict[str, Any]:
    return {"ifindex": index, "ifname": name, **extra}


MACHINE = [link(1, "lo"), link(2, "eth0"), link(3, "docker0")]
BEFORE = {str(x["ifname"]): int(x["ifindex"]) for x in MACHINE}
DOCKER_NET = "br-0123456789ab"


def no_nsids() -> set[int]:
    raise AssertionError("the namespace ids were asked for when nothing needed them")


def test_docker_starting_containers_meanwhile_is_not_a_leak() -> None:
    now = [*MACHINE,
           link(10, DOCKER_NET),  # Docker's user bridge: same name shape as ours, no alias
           link(11, "veth1a2b3c4", master="docker0", link_netnsid=0),
           link(12, "veth5d6e7f8", master=DOCKER_NET, link_netnsid=1),
           link(13, "vethfeedbee", link_index=14),  # both ends here, mid-creation
           link(14, "veth0ddba11", link_index=13),
           link(15, "virbr0", ifalias="libvirt"),
           link(16, "vx-000100-abcde")]  # Docker's overlay VXLAN name
    assert leaks.our_new_links(now, BEFORE, lambda: {7}) == []


def test_links_a_buggy_daemon_makes_in_the_machines_namespace_are_reported() -> None:
    bridge = "br-fedcba987654"
    now = [*MACHINE,
           link(20, bridge, ifalias="nsnet:fedcba9876543210"),
           link(21, "veth0000001", master=bridge, link_netnsid=3),  # its port
           link(22, "nsnet0", ifalias="nsnet:1111"),
           link(23, "nsm-12345678", ifalias="nsnet:2222", link="nsm-12345678p"),
           link(24, "nsm-12345678p", link="nsm-12345678"),  # alias not set yet
           link(25, "nsh-12345678", link="eth0"),
           link(26, "nsp-12345678", link="eth0"),
           link(27, "vx-4096"), link(28, "ovbr0"), link(29, "nsnet_gwbridge")]
    assert leaks.our_new_links(now, BEFORE, no_nsids) == sorted(
        str(x["ifname"]) for x in now[3:])


def test_a_link_whose_other_end_is_in_the_runs_namespace_is_reported() -> None:
    now = [*MACHINE, link(30, "lan0", link_netnsid=4), link(31, "veth2222222", link_netnsid=5)]
    assert leaks.our_new_links(now, BEFORE, lambda: {4}) == ["lan0"]


def test_only_links_new_since_the_snapshot_count() -> None:
    tagged = link(40, "br-aaaaaaaaaaaa", ifalias="nsnet:aaaa")
    # There before the test (an earlier test's leak, reported then): not this test's.
    assert leaks.our_new_links([*MACHINE, tagged], {**BEFORE, "br-aaaaaaaaaaaa": 40},
                               no_nsids) == []
    # The same name with a new index was made again during the test.
    again = {**tagged, "ifindex": 41}
    assert leaks.our_new_links([*MACHINE, again], {**BEFORE, "br-aaaaaaaaaaaa": 40},
                               no_nsids) == ["br-aaaaaaaaaaaa"]


def test_namespaces_count_from_the_snapshot_on() -> None:
    leaks.note_namespace("nsunit-old")
    mark = leaks.namespaces_mark()
    leaks.note_namespace("nsunit-a")
    leaks.note_namespace("nsunit-b")
    assert leaks.made_since(mark) == ["nsunit-a", "nsunit-b"]


def test_an_untagged_link_a_test_made_in_the_machines_namespace_is_reported() -> None:
    """The check before 325d3c6 reported every new link; the scoped one reported only tagged
    ones, so a fixture's dummy or bridge made in the machine's namespace by mistake (``sh``
    without ``ns``) passed unseen. ``sh`` notes such links now."""
    now = [*MACHINE, link(50, "lanbr0"), link(51, "dummy7"), link(52, "veth9999999")]
    assert leaks.our_new_links(now, BEFORE, no_nsids) == []  # nothing tells them from Docker's
    assert leaks.our_new_links(now, BEFORE, no_nsids,
                               noted={"lanbr0", "dummy7"}) == ["dummy7", "lanbr0"]


def test_the_names_an_ip_link_add_gives() -> None:
    assert leaks.links_added(("ip", "link", "add", "dummy7", "type", "dummy")) == ["dummy7"]
    assert leaks.links_added(("ip", "link", "add", "name", "br9", "type", "bridge")) == ["br9"]
    assert leaks.links_added(("ip", "link", "add", "v0", "type", "veth", "peer", "name",
                              "v1")) == ["v0", "v1"]
    assert leaks.links_added(("ip", "link", "add", "link", "eth0", "name", "eth0.5", "type",
                              "vlan", "id", "5")) == ["eth0.5"]
    assert leaks.links_added(("ip", "-n", "x", "link", "add", "d", "type", "dummy")) == []
    assert leaks.links_added(("ip", "link", "set", "d", "up")) == []
