"""Issue 11: Docker's network-name rule and ``IPAMConfig.LinkLocalIPs``, without root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import synced
from test_engine_usecases import World
from test_global_networks import hosts, overlay

from nsnet.api.parse import endpoint_request
from nsnet.api.render import endpoint_settings
from nsnet.cluster import keys
from nsnet.drivers.base import endpoint_addresses
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.networks import NetworkCreate
from nsnet.engine.registry import check_network_name
from nsnet.engine.sandboxes import validate_endpoint_request
from nsnet.errors import Forbidden, Invalid, NsnetError
from nsnet.model import Attachment, Container, EndpointRequest, IPAMPool, Network
from nsnet.testing.fake_kv import MemoryKV


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


@pytest.mark.parametrize("name", ["my net", "test@#$", "-dash", ".dot", "a/b", "é ünï",
                                  "x" * 255, "tab-free\u00a0nbsp"])
def test_names_docker_accepts(name: str) -> None:
    check_network_name(name)


@pytest.mark.parametrize("name,text", [
    ("", "name is empty"), ("   ", "name is empty"), ("a\tb", "control characters"),
    ("a\nb", "control characters"), ("a\x00b", "control characters"),
    ("evil\u202egnp.exe", "control characters"), ("a\u2028b", "control characters"),
    ("x" * 256, "longer than 255"),
])
def test_names_refused(name: str, text: str) -> None:
    with pytest.raises(Invalid, match=text):
        check_network_name(name)


def test_spaced_and_symbol_names_resolve_by_name_id_and_prefix(world: World) -> None:
    a = world.run(world.engine.create_network(NetworkCreate(
        name="my net", pools=[IPAMPool(subnet="10.110.0.0/24")])))
    b = world.run(world.engine.create_network(NetworkCreate(
        name="test@#$", pools=[IPAMPool(subnet="10.111.0.0/24")])))
    reg = world.engine.registry
    assert reg.find_network("my net") is a and reg.find_network("test@#$") is b
    assert reg.find_network(a.id) is a and reg.find_network(b.id[:12]) is b
    with pytest.raises(NsnetError, match="already exists"):
        world.run(world.engine.create_network(NetworkCreate(name="my net")))
    for reserved in ("bridge", "host", "none", "default"):
        with pytest.raises(Forbidden):
            world.run(world.engine.create_network(NetworkCreate(name=reserved)))
    # A container on it gets an endpoint as on any other network.
    cid = world.running("c1", "my net")
    c = world.engine.find_container(cid)
    assert [x.network_id for x in c.attachments] == [a.id]
    assert c.attachments[0].endpoint is not None


def test_container_names_keep_dockers_rule(world: World) -> None:
    with pytest.raises(Invalid, match="Invalid container name"):
        world.engine.create_container(ContainerCreate(image="busybox", name="my box",
                                                      cmd=["true"]))


def test_link_local_ips_parsed_canonical_and_checked() -> None:
    req = endpoint_request({"IPAMConfig": {"LinkLocalIPs": ["169.254.7.7", "FE80::0:1",
                                                            "169.254.7.7"]}}, "n")
    assert req.link_local_ips == ["169.254.7.7", "fe80::1"]
    assert endpoint_request({"IPAMConfig": {"LinkLocalIPs": []}}, "n").link_local_ips is None
    for bad in ("10.0.0.1", "fd00::1", "ff02::1", "169.254.1", "fe80::1%eth0",
                "::ffff:1.2.3.4"):
        with pytest.raises(Invalid, match="invalid link-local IP address"):
            endpoint_request({"IPAMConfig": {"LinkLocalIPs": [bad]}}, "n")
    with pytest.raises(Invalid, match="LinkLocalIPs"):
        endpoint_request({"IPAMConfig": {"LinkLocalIPs": [169]}}, "n")


def test_ipv6_link_local_needs_an_ipv6_interface() -> None:
    v4 = Network(id="a" * 64, name="v4", driver="bridge", created="",
                 pools=[IPAMPool(subnet="10.0.0.0/24")])
    v6 = Network(id="b" * 64, name="v6", driver="bridge", created="",
                 pools=[IPAMPool(subnet="10.0.1.0/24"), IPAMPool(subnet="fd00:1::/64")])
    validate_endpoint_request(v4, "v4", EndpointRequest(link_local_ips=["169.254.1.1"]))
    validate_endpoint_request(v6, "v6", EndpointRequest(link_local_ips=["fe80::7"]))
    with pytest.raises(Invalid, match="--ipv6"):
        validate_endpoint_request(v4, "v4", EndpointRequest(link_local_ips=["fe80::7"]))


def test_link_local_ips_reach_the_interface_and_inspect(world: World) -> None:
    world.run(world.engine.create_network(NetworkCreate(
        name="ll", pools=[IPAMPool(subnet="10.112.0.0/24")])))
    c = world.engine.create_container(ContainerCreate(
        image="busybox", name="c1", cmd=["sleep", "1"], network_mode="ll",
        endpoints={"ll": EndpointRequest(link_local_ips=["169.254.9.9"])}))
    world.run(world.engine.start_container(c.id))
    c = world.engine.find_container(c.id)
    ep = c.attachments[0].endpoint
    assert ep is not None and ep.link_local == ["169.254.9.9/16"]
    assert endpoint_addresses(ep) == [f"{ep.ipv4}/24", "169.254.9.9/16"]
    assert (c.sandbox_key, "eth0", "169.254.9.9/16") in world.kernel.objects().addresses
    net = world.engine.registry.networks[c.attachments[0].network_id]
    shown = endpoint_settings(c, c.attachments[0], net)
    assert shown["IPAMConfig"] == {"LinkLocalIPs": ["169.254.9.9"]}


def test_inspect_of_a_request_without_link_local_ips_is_unchanged() -> None:
    c = Container(id="c" * 64, name="x", image="busybox", image_id="", created="")
    shown = endpoint_settings(c, Attachment(network_id="n", request=EndpointRequest()), None)
    assert shown["IPAMConfig"] is None


@synced
async def test_overlay_names_are_etcd_key_components() -> None:
    kv = MemoryKV()
    (a,) = await hosts(kv, 1)
    net = await a.glob.create(overlay("my net"), [])
    assert a.registry.find_network("my net") is net
    assert await kv.get(keys.network_name("my net")) is not None
    for bad in ("a/b", "..", "nb\u00a0sp"):
        with pytest.raises(Invalid, match="invalid network name"):
            await a.glob.create(overlay(bad), [])
    await a.glob.stop()
