"""The fake kernel behaves like the kernel where the engine depends on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nsnet.errors import Conflict, SystemError_
from nsnet.kernel.firewall import NetworkFirewall
from nsnet.testing.fake_kernel import HOST, FakeKernel

NS = "/run/fake/ns1"


def _sandbox(k: FakeKernel, path: str = NS) -> None:
    k.ns.create(path)


def test_veth_into_a_sandbox_and_both_ends_go_together() -> None:
    k = FakeKernel()
    before = k.objects()
    _sandbox(k)
    br, created = k.links.ensure_bridge("br-x", None, "nsnet:x")
    assert created
    with k.netns_fd(NS) as fd:
        idx = k.links.add_veth_into("vethabc", "eth0", "02:00:00:00:00:01", fd, br, None,
                                    want_index=True)
    assert idx == k.links.index("vethabc")
    assert k.links.ports(br) == ["vethabc"]
    with k.sandbox_links(NS) as sl:
        sl.configure_endpoint("eth0", ["10.0.0.2/24"], "10.0.0.1", None)
        assert sl.exists("eth0")
    assert (NS, "0.0.0.0/0", "eth0") in k.objects().routes
    k.links.delete("vethabc")
    with k.sandbox_links(NS) as sl:
        assert not sl.exists("eth0")  # the peer went with it, and its route
    assert not any(ns == NS and dst == "0.0.0.0/0" for ns, dst, _ in k.objects().routes)
    k.links.delete("br-x")
    k.ns.remove(NS)
    assert k.objects() == before


def test_removing_a_namespace_reaps_its_links_and_their_host_peers() -> None:
    k = FakeKernel()
    _sandbox(k)
    with k.netns_fd(NS) as fd:
        k.links.add_veth_into("vethabc", "eth0", "02:00:00:00:00:01", fd, None, None)
    k.firewall.run_in_namespace(NS, "add table ip nsnet-dns\n")
    k.ns.remove(NS)
    assert not k.links.exists("vethabc")
    assert NS not in k.objects().sandbox_tables
    k.ns.remove(NS)  # idempotent
    with pytest.raises(FileNotFoundError):
        k.sandbox_links(NS).__enter__()


def test_names_are_unique_per_namespace_and_missing_links_are_errors() -> None:
    k = FakeKernel()
    _sandbox(k)
    k.add_host_link("eth0")
    with k.netns_fd(NS) as fd:
        # eth0 inside the sandbox is another link than the host's eth0.
        k.links.add_veth_into("vethabc", "eth0", "02:00:00:00:00:01", fd, None, None)
        with pytest.raises(Conflict):
            k.links.add_veth_into("vethdef", "eth0", "02:00:00:00:00:02", fd, None, None)
        with pytest.raises(SystemError_):  # no such master: ENODEV
            k.links.add_veth_into("vethdef", "eth1", "02:00:00:00:00:02", fd, 999, None)
    assert not k.links.exists("vethdef")
    with pytest.raises(SystemError_):
        k.links.set_up("nope")
    k.links.set_down("nope")  # idempotent, as the real one
    k.links.delete("nope")
    assert k.links.enslave("nope", 1) is False


def test_a_parent_takes_its_macvlans_along_and_a_bridge_releases_its_ports() -> None:
    k = FakeKernel()
    _sandbox(k)
    parent = k.add_host_link("eth0")
    br, _ = k.links.ensure_bridge("br-x", None, None)
    with k.netns_fd(NS) as fd:
        k.links.add_macvlan_into("eth1", parent, "bridge", "02:00:00:00:00:03", fd, None)
        k.links.add_veth_into("vethabc", "eth0", "02:00:00:00:00:01", fd, br, None)
    k.links.delete("eth0")
    assert k.link("eth1", NS) is None
    k.links.delete("br-x")
    veth = k.link("vethabc")
    assert veth is not None and veth.master is None


def test_default_route_needs_a_connected_gateway() -> None:
    k = FakeKernel()
    _sandbox(k)
    with k.netns_fd(NS) as fd:
        k.links.add_veth_into("vethabc", "eth0", "02:00:00:00:00:01", fd, None, None)
    with k.sandbox_links(NS) as sl, pytest.raises(SystemError_):
        sl.configure_endpoint("eth0", ["10.0.0.2/24"], "192.0.2.1", None)


def test_fail_on_fails_the_named_call_once_after_n() -> None:
    k = FakeKernel()
    k.fail_on("ensure_bridge", after=1)
    k.links.ensure_bridge("br-a", None, None)
    with pytest.raises(SystemError_):
        k.links.ensure_bridge("br-b", None, None)
    k.links.ensure_bridge("br-b", None, None)  # once only
    k.fail_on("apply_network", Conflict("boom"))
    with pytest.raises(Conflict):
        k.firewall.apply_network(NetworkFirewall("abc", "n", "br-a", ("10.0.0.0/24",)))
    assert k.objects().firewall_networks == frozenset()
    with pytest.raises(ValueError, match="no call"):
        k.fail_on("add_veth")  # a typo must not silently test nothing
    assert k.calls.count("ensure_bridge") == 3


def test_reaper_defers_until_flushed_and_keeps_the_name_taken() -> None:
    k = FakeKernel(deferred_deletes=True)
    _sandbox(k)
    with k.netns_fd(NS) as fd:
        k.links.add_veth_into("vethabc", "eth0", "02:00:00:00:00:01", fd, None, None)
    k.delete_peer_later("vethabc", NS, "eth0")
    assert k.dying_names(NS) == {"eth0"}
    assert k.links.exists("vethabc")
    k.wait_for_name(NS, "eth0")
    assert not k.links.exists("vethabc")
    assert k.dying_names(NS) == set()


@pytest.mark.parametrize("given_root", [True, False])
def test_namespaces_are_mirrored_as_files_under_netns_dir(tmp_path: Path,
                                                          given_root: bool) -> None:
    """Reconcile lists netns_dir to find namespaces nobody owns."""
    k = FakeKernel(tmp_path if given_root else None)
    path = str(k.netns_dir / "abc")
    k.ns.create(path)
    assert os.listdir(k.netns_dir) == ["abc"]
    k.ns.remove(path)
    assert os.listdir(k.netns_dir) == []
    k.close()


def test_everything_starts_with_only_the_hosts_loopback() -> None:
    k = FakeKernel()
    assert k.objects().links == frozenset({(HOST, "lo")})
