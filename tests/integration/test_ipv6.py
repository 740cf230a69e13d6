"""IPv6 on bridge networks (issue 12): dual stack, the default ULA pool, ``--ip6``, the v6
default route, masquerade, AAAA and PTR, and IPv6-only networks (``--ipv4=false``).

"A client on the LAN" is a second namespace on a veth with documentation addresses
(2001:db8:1::/64) and no route back to the containers' ULA prefixes: a reply to a container
proves the host masqueraded it, and a counter in the client's own table shows which source
address it saw.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest
from helpers import api_error, exec_, in_sandbox, run, sandbox

from nsnet.client.api import Client
from nsnet.ipam.ula import ula_base
from nsnet.testing.hosts import Daemon, TestHost, sh
from nsnet.testing.lan import lan_machine

pytestmark = pytest.mark.root

HOST_LAN = "2001:db8:1::1"
CLIENT = "2001:db8:1::2"


@pytest.fixture
def lan(daemon: Daemon) -> Iterator[TestHost]:
    """The LAN client: ``lan0`` on the test host, ``lan0p`` in the client, which counts the
    echo requests it gets by source (the host's address, or a container's ULA)."""
    with lan_machine(daemon.host, host_addresses=[f"{HOST_LAN}/64"],
                     lan_addresses=[f"{CLIENT}/64"]) as other:
        # The first packet to the client waits for lan0's link-local to finish DAD (~2 s)
        # before the host can ask for the client's MAC: warm the path up before counting.
        sh("ping", "-6", "-c1", "-W5", CLIENT, ns=daemon.host.name)
        sh("nft", "-f", "-", ns=other.name, input=(
            "add table inet seen\n"
            "add chain inet seen in { type filter hook input priority 0; }\n"
            f"add rule inet seen in ip6 saddr {HOST_LAN} icmpv6 type echo-request counter "
            "comment \"host\"\n"
            "add rule inet seen in ip6 saddr fc00::/7 icmpv6 type echo-request counter "
            "comment \"ula\"\n"))
        yield other


def seen(client: TestHost) -> dict[str, int]:
    """Echo requests the LAN client received, by the source it saw."""
    out: dict[str, int] = {}
    for item in client.nft_json("list", "chain", "inet", "seen", "in"):
        rule = item.get("rule")
        if not isinstance(rule, dict):
            continue
        for e in rule.get("expr", []):
            if isinstance(e, dict) and "counter" in e:
                out[str(rule.get("comment"))] = int(e["counter"]["packets"])
    return out


def ping6(c: Client, cid: str, addr: str) -> int:
    return exec_(c, cid, ["ping6", "-c1", "-W2", addr])[0]


def default_routes(c: Client, cid: str, family: str) -> list[dict[str, object]]:
    out = in_sandbox(c, cid, "ip", "-j", family, "route", "show", "default", check=True).stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def eth0(c: Client, cid: str) -> dict[str, object]:
    out = in_sandbox(c, cid, "ip", "-j", "addr", "show", "dev", "eth0", check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def families(link: dict[str, object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in link["addr_info"]:  # type: ignore[attr-defined]
        out.setdefault(a["family"], []).append(f"{a['local']}/{a['prefixlen']}")
    return out


def dig(c: Client, cid: str, *args: str) -> list[str]:
    return in_sandbox(c, cid, "dig", "+short", "+time=2", "+tries=1", "@127.0.0.11",
                      *args).stdout.split()


def test_dual_stack_subnet_ip6_route_masquerade_and_dns(daemon: Daemon, lan: TestHost) -> None:
    c = daemon.client()
    nid = c.networks.create({"Name": "ds", "EnableIPv6": True,
                             "IPAM": {"Config": [{"Subnet": "fd00:61::/64"}]}})["Id"]
    a = run(c, network="ds", name="a")
    b = str(c.containers.create({
        "Image": "busybox", "Cmd": ["sleep", "3600"], "HostConfig": {"NetworkMode": "ds"},
        "NetworkingConfig": {"EndpointsConfig": {"ds": {
            "IPAMConfig": {"IPv6Address": "fd00:61::99"}}}}}, name="b")["Id"])
    c.containers.start(b)
    na = c.containers.inspect(a)["NetworkSettings"]["Networks"]["ds"]
    nb = c.containers.inspect(b)["NetworkSettings"]["Networks"]["ds"]
    assert (na["GlobalIPv6Address"], na["GlobalIPv6PrefixLen"], na["IPv6Gateway"]) == \
        ("fd00:61::2", 64, "fd00:61::1")
    assert nb["GlobalIPv6Address"] == "fd00:61::99" and na["IPAddress"]
    # Both families on eth0, read from the kernel; the bridge holds the gateway.
    fam = families(eth0(c, a))
    assert "fd00:61::2/64" in fam["inet6"] and len(fam["inet"]) == 1
    br = daemon.host.ip_json("-6", "addr", "show", "dev", f"br-{nid[:12]}")[0]
    assert "fd00:61::1/64" in families(br)["inet6"]
    # A v6 default route through the bridge's gateway, beside the v4 one.
    r6 = default_routes(c, a, "-6")
    assert [(r["gateway"], r["dev"]) for r in r6] == [("fd00:61::1", "eth0")]
    assert len(default_routes(c, a, "-4")) == 1
    # Containers reach each other and the gateway over v6.
    assert ping6(c, a, "fd00:61::99") == 0
    assert ping6(c, b, "fd00:61::1") == 0
    # Out to the LAN, masqueraded: the client saw the host's address, never the ULA.
    assert ping6(c, a, CLIENT) == 0
    assert seen(lan) == {"host": 1, "ula": 0}
    nat6 = json.dumps(daemon.host.nft_json("list", "map", "inet", "nsnet", "nat6"))
    assert "fd00:61::" in nat6
    # DNS: AAAA by name and alias-free container name, PTR for the v6 address.
    assert dig(c, a, "b", "AAAA") == ["fd00:61::99"]
    assert dig(c, b, "a.ds", "AAAA") == ["fd00:61::2"]
    assert dig(c, a, "-x", "fd00:61::99") == ["b.ds."]
    assert dig(c, b, "b", "A") == [str(nb["IPAddress"])]


def test_masquerade_off_applies_to_ipv6(daemon: Daemon, lan: TestHost) -> None:
    """``enable_ip_masquerade=false``: the ULA leaves unchanged, and the client (no route
    back) never answers."""
    c = daemon.client()
    c.networks.create({"Name": "nonat", "EnableIPv6": True,
                       "IPAM": {"Config": [{"Subnet": "fd00:63::/64"}]},
                       "Options": {"com.docker.network.bridge.enable_ip_masquerade": "false"}})
    x = run(c, network="nonat")
    assert ping6(c, x, CLIENT) != 0
    assert seen(lan) == {"host": 0, "ula": 1}


def test_internal_ipv6_network_stays_inside(daemon: Daemon, lan: TestHost) -> None:
    c = daemon.client()
    c.networks.create({"Name": "in6", "EnableIPv6": True, "Internal": True,
                       "IPAM": {"Config": [{"Subnet": "fd00:64::/64"}]}})
    x = run(c, network="in6")
    y = run(c, network="in6")
    assert ping6(c, x, "fd00:64::3") == 0
    assert default_routes(c, y, "-6") == []
    assert ping6(c, x, CLIENT) != 0
    assert seen(lan) == {"host": 0, "ula": 0}


def test_default_ipv6_pool_is_the_engines_ula(daemon: Daemon) -> None:
    """No IPv6 subnet: a /64 of the ULA /48 derived from ``<data-root>/engine-id`` by
    Docker's rule; the next network takes the next /64."""
    c = daemon.client()
    c.networks.create({"Name": "u1", "EnableIPv6": True})
    engine_id = (daemon.data_root / "engine-id").read_text().strip()
    subnets = list(ula_base(engine_id).subnets(new_prefix=64))
    cfg = c.networks.inspect("u1")["IPAM"]["Config"]
    assert cfg[1] == {"Subnet": str(subnets[0]), "Gateway": str(subnets[0][1])}
    c.networks.create({"Name": "u2", "EnableIPv6": True})
    assert c.networks.inspect("u2")["IPAM"]["Config"][1]["Subnet"] == str(subnets[1])
    x = run(c, network="u2")
    assert c.containers.inspect(x)["NetworkSettings"]["Networks"]["u2"]["GlobalIPv6Address"] \
        == str(subnets[1][2])
    assert ping6(c, x, str(subnets[1][1])) == 0
    # Kept across a restart: the same engine, the same prefix.
    daemon.stop()
    daemon.start()
    c = daemon.client()
    c.networks.remove("u1")
    c.networks.create({"Name": "u3", "EnableIPv6": True})
    assert c.networks.inspect("u3")["IPAM"]["Config"][1]["Subnet"] == str(subnets[0])
    c.containers.remove(x, force=True)


def test_daemon_ipv6_flags_give_the_default_bridge_ipv6_and_info_its_engine_id(
        daemon: Daemon) -> None:
    """``nsnetd --ipv6 --fixed-cidr-v6``, as dockerd's: the default bridge gains the subnet at
    the next start and its containers an IPv6 address; ``docker info`` shows the engine ID
    the default IPv6 pool comes from."""
    c = daemon.client()
    engine_id = (daemon.data_root / "engine-id").read_text().strip()
    assert c.info()["ID"] == engine_id
    daemon.stop()
    daemon.extra_args = [*daemon.extra_args, "--ipv6", "--fixed-cidr-v6", "fd00:77::/64"]
    daemon.start()
    c = daemon.client()
    assert c.info()["ID"] == engine_id
    cfg = c.networks.inspect("bridge")["IPAM"]["Config"]
    assert {"Subnet": "fd00:77::/64", "Gateway": "fd00:77::1"} in cfg
    x = run(c, network="bridge")
    assert c.containers.inspect(x)["NetworkSettings"]["Networks"]["bridge"][
        "GlobalIPv6Address"] == "fd00:77::2"
    assert ping6(c, x, "fd00:77::1") == 0
    c.containers.remove(x, force=True)


def test_ipv6_only_network(daemon: Daemon, lan: TestHost) -> None:
    """``--ipv4=false``: no IPv4 address or route in the container, DNS answers AAAA only,
    the container's resolv.conf works (busybox resolves a peer through 127.0.0.11)."""
    c = daemon.client()
    c.networks.create({"Name": "six", "EnableIPv4": False, "EnableIPv6": True,
                       "IPAM": {"Config": [{"Subnet": "fd00:62::/64"}]}})
    net = c.networks.inspect("six")
    assert (net["EnableIPv4"], net["EnableIPv6"]) == (False, True)
    assert net["IPAM"]["Config"] == [{"Subnet": "fd00:62::/64", "Gateway": "fd00:62::1"}]
    x = run(c, network="six", name="x")
    y = run(c, network="six", name="y")
    ep = c.containers.inspect(y)["NetworkSettings"]["Networks"]["six"]
    assert (ep["IPAddress"], ep["Gateway"], ep["GlobalIPv6Address"], ep["IPv6Gateway"]) == \
        ("", "", "fd00:62::3", "fd00:62::1")
    fam = families(eth0(c, x))
    assert "inet" not in fam and fam["inet6"][0] == "fd00:62::2/64"
    assert default_routes(c, x, "-4") == []
    assert [r["gateway"] for r in default_routes(c, x, "-6")] == ["fd00:62::1"]
    assert dig(c, x, "y", "AAAA") == ["fd00:62::3"]
    assert dig(c, x, "y", "A") == []
    # A known name with no IPv4: NOERROR and no data (never forwarded upstream), as moby.
    full = in_sandbox(c, x, "dig", "+time=2", "+tries=1", "@127.0.0.11", "y", "A").stdout
    assert "status: NOERROR" in full and "ANSWER: 0" in full
    assert dig(c, x, "-x", "fd00:62::3") == ["y.six."]
    code, out, _ = exec_(c, x, ["cat", "/etc/resolv.conf"])
    assert code == 0 and "nameserver 127.0.0.11" in out
    code, out, err = exec_(c, x, ["ping", "-c1", "-W2", "y"])
    assert code == 0, out + err
    assert "fd00:62::3" in out
    assert ping6(c, x, CLIENT) == 0
    assert seen(lan)["host"] == 1
    # Refused with a 400 before anything is made: an IPv4 subnet with IPv4 off, no family.
    e = api_error(c.networks.create, {"Name": "bad", "EnableIPv4": False, "EnableIPv6": True,
                                      "IPAM": {"Config": [{"Subnet": "10.62.0.0/24"}]}})
    assert e.status == 400 and "IPv4 is disabled" in e.message
    e = api_error(c.networks.create, {"Name": "bad", "EnableIPv4": False})
    assert e.status == 400
    assert "bad" not in {n["Name"] for n in c.networks.list()}


def test_ipv6_only_through_the_docker_cli(daemon: Daemon) -> None:
    out = daemon.docker("network", "create", "--ipv4=false", "--ipv6", "--subnet",
                        "fd00:65::/64", "v6cli").stdout.strip()
    assert len(out) == 64
    cid = daemon.docker("run", "-d", "--network", "v6cli", "--ip6", "fd00:65::42", "busybox",
                        "sleep", "3600").stdout.strip()
    c = daemon.client()
    fam = families(eth0(c, cid))
    assert fam == {"inet6": ["fd00:65::42/64", fam["inet6"][1]]} and \
        ipaddress.ip_interface(fam["inet6"][1]).is_link_local
    assert sandbox(c, cid)
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}|{{.GlobalIPv6Address}}{{end}}"
    assert daemon.docker("inspect", "-f", fmt, cid).stdout.strip() == "|fd00:65::42"
    p = daemon.docker("network", "create", "--ipv4=false", "--subnet", "10.65.0.0/24",
                      "--ipv6", "v6bad", check=False)
    assert p.returncode != 0 and "IPv4 is disabled" in p.stderr
    p = daemon.docker("run", "-d", "--network", "v6cli", "--ip6", "fd00:99::1", "busybox",
                      "sleep", "1", check=False)
    assert p.returncode != 0 and "fd00:99::1" in p.stderr
    daemon.docker("rm", "-f", cid)
    # The nsnet CLI takes docker's spelling; no subnet: a /64 of the engine's ULA.
    daemon.cli("network", "create", "--ipv4=false", "--ipv6", "v6n")
    cfg = c.networks.inspect("v6n")["IPAM"]["Config"]
    engine_id = (daemon.data_root / "engine-id").read_text().strip()
    assert len(cfg) == 1 and \
        ipaddress.ip_network(cfg[0]["Subnet"]).subnet_of(ula_base(engine_id))
    p = daemon.cli("network", "create", "--ipv4=false", "v6none", check=False)
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1


def test_ipv6_beside_an_ip6tables_forward_drop_and_after_reconcile(daemon: Daemon,
                                                                   lan: TestHost) -> None:
    """Docker's host: ``ip6 filter FORWARD`` drops; nsnet's accepts there let its v6 network
    out. A deleted ``inet nsnet`` table comes back, nat6 element included, at reconcile."""
    sh("ip6tables", "-P", "FORWARD", "DROP", ns=daemon.host.name)
    c = daemon.client()
    nid = c.networks.create({"Name": "fw6", "EnableIPv6": True,
                             "IPAM": {"Config": [{"Subnet": "fd00:67::/64"}]}})["Id"]
    x = run(c, network="fw6")
    assert ping6(c, x, CLIENT) == 0
    rules = sh("ip6tables", "-S", "FORWARD", ns=daemon.host.name).stdout
    assert f'--comment "nsnet:{nid[:12]}"' in rules
    sh("nft", "delete", "table", "inet", "nsnet", ns=daemon.host.name)
    assert ping6(c, x, CLIENT) != 0
    c.reconcile()
    nat6 = json.dumps(daemon.host.nft_json("list", "map", "inet", "nsnet", "nat6"))
    assert "fd00:67::" in nat6
    assert ping6(c, x, CLIENT) == 0
    assert seen(lan)["host"] == 2  # masqueraded again: the host's address, twice
