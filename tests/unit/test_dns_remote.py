"""The embedded DNS answers for containers of an overlay network on other hosts (issue 10).

``EmbeddedDNS`` is the peer service's ``RemoteListener``. These tests drive it the way the
engine (``endpoint_up``/``endpoint_down``/``network_removed``) and the peer service
(``remote_endpoint_up``/``remote_endpoint_down``) do, and read the answers back from its record
table, from the server's answer path in wire form, and, at the end, with the real peer service
fed by a store that other hosts write to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype
from cluster_support import synced
from hypothesis import given, settings
from hypothesis import strategies as st

from nsnet.cluster.endpoints import EndpointRecord
from nsnet.cluster.membership import NodeInfo
from nsnet.dns.records import HIT, MISS, NODATA, QTYPE_A, QTYPE_AAAA, QTYPE_PTR
from nsnet.dns.sandbox import ServedSandbox
from nsnet.drivers.overlay import OPT_VNI, OverlayDriver
from nsnet.engine.embedded_dns import EmbeddedDNS
from nsnet.engine.peers import PeerService
from nsnet.model import Attachment, Container, Endpoint, IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_kv import MemoryKV

OV, OV2, BR = "0a" * 32, "0b" * 32, "0c" * 32
ME, N2 = "me", "n2"
VTEPS = {ME: "192.0.2.11", N2: "192.0.2.12"}


def network(net_id: str) -> Network:
    if net_id == BR:
        return Network(id=BR, name="front", driver="bridge", created="")
    name = "ovnet" if net_id == OV else "ovnet2"
    return Network(id=net_id, name=name, driver="overlay", created="", scope="global",
                   options={OPT_VNI: "4096" if net_id == OV else "4097"},
                   pools=[IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.1")])


def embedded(networks: dict[str, Network]) -> EmbeddedDNS:
    k = FakeKernel()
    return EmbeddedDNS(Path("/nonexistent/resolv.conf"), networks.get, k.ns,
                       k.firewall.run_in_namespace)


class Local:
    """A container on this host and the endpoints the engine gives it."""

    def __init__(self, name: str) -> None:
        self.c = Container(id=name * 8, name=name, image="busybox", image_id="sha256:0",
                           created="")

    def ep(self, net_id: str, ipv4: str, aliases: tuple[str, ...] = ()) -> Endpoint:
        return Endpoint(id=f"{self.c.name}-{net_id[:2]}", network_id=net_id,
                        container_id=self.c.id, ifname="eth0", mac="02:42:0a:00:00:02",
                        ipv4=ipv4, dns_names=[self.c.name, *aliases, self.c.short_id])

    def join(self, d: EmbeddedDNS, net: Network, ipv4: str,
             aliases: tuple[str, ...] = ()) -> Endpoint:
        ep = self.ep(net.id, ipv4, aliases)
        if self.c.attachment(net.id) is None:
            self.c.attachments.append(Attachment(network_id=net.id, endpoint=ep))
        d.endpoint_up(self.c, net, ep)
        return ep


def rec(ep: str, ipv4: str, names: tuple[str, ...], net_id: str = OV,
        container_id: str = "", ipv6: str | None = None) -> EndpointRecord:
    return EndpointRecord(network_id=net_id, endpoint_id=ep, node_id=N2, vtep=VTEPS[N2],
                          mac="02:42:0a:00:00:09", ipv4=ipv4, ipv6=ipv6,
                          container_id=container_id or ep, container_name=names[0],
                          dns_names=names)


def a(d: EmbeddedDNS, who: Local, name: str, qtype: int = QTYPE_A) -> list[str] | int:
    """Sorted addresses of a HIT, else the kind (MISS, NODATA)."""
    ans = d.records.lookup(who.c.id, name, qtype)
    return sorted(ans.addresses) if ans.kind == HIT else ans.kind


def test_remote_names_answer_for_containers_on_the_overlay_only() -> None:
    nets = {n: network(n) for n in (OV, BR)}
    d = embedded(nets)
    web, other = Local("web"), Local("other")
    web.join(d, nets[OV], "10.0.0.2", aliases=("api",))
    other.join(d, nets[BR], "172.20.0.2")
    d.remote_endpoint_up(rec("r1", "10.0.0.3", ("db", "api", "r1short"), ipv6="fd00::3"))
    assert a(d, web, "db") == ["10.0.0.3"]
    assert a(d, web, "db.ovnet") == ["10.0.0.3"]
    assert a(d, web, "r1short") == ["10.0.0.3"]
    assert a(d, web, "db", QTYPE_AAAA) == ["fd00::3"]
    assert a(d, web, "api") == ["10.0.0.2", "10.0.0.3"]  # round robin across hosts
    ptr = d.records.lookup(web.c.id, "3.0.0.10.in-addr.arpa", QTYPE_PTR)
    assert ptr.kind == HIT and ptr.ptr == "db.ovnet"
    # a container on another network sees nothing of it, by any name
    assert a(d, other, "db") == MISS and a(d, other, "db.ovnet") == MISS
    assert d.records.lookup(other.c.id, "3.0.0.10.in-addr.arpa", QTYPE_PTR).kind == MISS
    d.remote_endpoint_down(rec("r1", "10.0.0.3", ("db", "api", "r1short"), ipv6="fd00::3"))
    assert a(d, web, "db") == MISS and a(d, web, "api") == ["10.0.0.2"]
    assert d.records.lookup(web.c.id, "3.0.0.10.in-addr.arpa", QTYPE_PTR).kind == MISS
    assert d.records.remote_count == 0


def test_a_container_joining_later_sees_what_was_already_announced() -> None:
    """The peer service may announce a remote endpoint before the global network mirror has
    brought the network here: nobody can see it yet, and the first local join shows it."""
    nets: dict[str, Network] = {}
    d = embedded(nets)
    d.remote_endpoint_up(rec("r1", "10.0.0.3", ("db",)))
    assert d.records.remote_count == 0  # a network this host does not know answers nowhere
    nets[OV] = network(OV)
    web = Local("web")
    web.join(d, nets[OV], "10.0.0.2")
    assert a(d, web, "db") == ["10.0.0.3"]
    # once shown, a new announcement answers at once, and one for a known network too
    d.remote_endpoint_up(rec("r2", "10.0.0.4", ("cache",)))
    assert a(d, web, "cache") == ["10.0.0.4"]
    nets[OV2] = network(OV2)
    d.remote_endpoint_up(rec("r3", "10.0.0.5", ("queue",), net_id=OV2))
    assert d.records.remote_count == 3
    assert a(d, web, "queue") == MISS  # web is not on ovnet2


def test_a_remote_record_naming_a_local_network_answers_for_nobody() -> None:
    nets = {BR: network(BR)}
    d = embedded(nets)
    front = Local("front")
    front.join(d, nets[BR], "172.20.0.2")
    d.remote_endpoint_up(rec("evil", "172.20.0.99", ("front", "gateway"), net_id=BR))
    front.join(d, nets[BR], "172.20.0.2")  # a later join does not show it either
    assert a(d, front, "gateway") == MISS
    assert a(d, front, "front") == ["172.20.0.2"]
    assert d.records.remote_count == 0


def test_a_down_removes_only_the_record_that_was_announced() -> None:
    nets = {OV: network(OV)}
    d = embedded(nets)
    web = Local("web")
    web.join(d, nets[OV], "10.0.0.2")
    old, new = rec("r1", "10.0.0.3", ("db",)), rec("r1", "10.0.0.7", ("db", "db2"))
    d.remote_endpoint_up(old)
    d.remote_endpoint_up(old)  # told twice: one record
    d.remote_endpoint_up(new)  # replaced without a down in between
    assert a(d, web, "db") == ["10.0.0.7"] and a(d, web, "db2") == ["10.0.0.7"]
    d.remote_endpoint_down(old)  # late: the newer record stays
    assert a(d, web, "db") == ["10.0.0.7"]
    d.remote_endpoint_down(new)
    d.remote_endpoint_down(new)
    assert a(d, web, "db") == MISS and a(d, web, "db2") == MISS
    assert d.records.remote_count == 0


def test_remote_ids_equal_to_local_ones_corrupt_nothing() -> None:
    """Another host's record carrying this host's container id and endpoint id (on a network
    the local container is not on, or on the same one) neither widens the container's scope
    nor replaces or removes its endpoint."""
    nets = {OV: network(OV), OV2: network(OV2)}
    d = embedded(nets)
    web = Local("web")
    ep = web.join(d, nets[OV], "10.0.0.2")
    d.endpoint_up(Local("peer").c, nets[OV2], Local("peer").ep(OV2, "10.0.1.2"))
    twin = rec(ep.id, "10.0.1.9", ("twin",), net_id=OV2, container_id=web.c.id)
    same = rec(ep.id, "10.0.0.9", ("web", "twin2"), net_id=OV, container_id=web.c.id)
    d.remote_endpoint_up(twin)
    d.remote_endpoint_up(same)
    assert d.records.networks_of(web.c.id) == [OV]
    assert a(d, web, "twin") == MISS  # on ovnet2, which web is not on
    assert a(d, web, "web") == ["10.0.0.2", "10.0.0.9"] and a(d, web, "twin2") == ["10.0.0.9"]
    d.remote_endpoint_down(twin)
    d.remote_endpoint_down(same)
    assert a(d, web, "web") == ["10.0.0.2"] and a(d, web, "twin2") == MISS
    d.endpoint_down(web.c, nets[OV], ep)
    assert a(d, web, "web") == MISS and d.records.networks_of(web.c.id) == []


def test_network_removed_drops_its_remote_records() -> None:
    nets = {OV: network(OV), OV2: network(OV2)}
    d = embedded(nets)
    web = Local("web")
    web.join(d, nets[OV], "10.0.0.2")
    web.join(d, nets[OV2], "10.0.1.2")
    d.remote_endpoint_up(rec("r1", "10.0.0.3", ("db",)))
    d.remote_endpoint_up(rec("r2", "10.0.1.3", ("queue",), net_id=OV2))
    d.endpoint_down(web.c, nets[OV], web.ep(OV, "10.0.0.2"))
    net = nets.pop(OV)
    d.network_removed(net)
    assert d.records.remote_count == 1
    assert a(d, web, "db") == MISS and a(d, web, "db.ovnet") == MISS
    assert a(d, web, "queue") == ["10.0.1.3"]
    # late news of the removed network: a down is harmless, an up answers for nobody
    d.remote_endpoint_down(rec("r1", "10.0.0.3", ("db",)))
    d.remote_endpoint_up(rec("r4", "10.0.0.4", ("late",)))
    assert a(d, web, "late") == MISS and d.records.remote_count == 1


# ---- any interleaving ------------------------------------------------------------------------

CONTAINERS = ["c1", "c2"]
NETS = [OV, OV2, BR]
_names = st.lists(st.sampled_from(["web", "api", "db", "c1"]), min_size=1, max_size=3,
                  unique=True).map(tuple)
_v4 = st.sampled_from(["10.0.0.2", "10.0.0.3", "10.0.0.4"])
# Remote ids collide with local endpoint ids ("c1-0a") and container ids.
_remote = st.builds(rec, st.sampled_from(["c1-0a", "r1", "r2"]), _v4, _names,
                    st.sampled_from(NETS), st.sampled_from(["", "c1" * 8]))
_op = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(CONTAINERS), st.sampled_from(NETS), _v4),
    st.tuples(st.just("leave"), st.sampled_from(CONTAINERS), st.sampled_from(NETS)),
    st.tuples(st.just("up"), _remote, st.booleans()),
    st.tuples(st.just("down"), _remote),
    st.tuples(st.just("arrive"), st.sampled_from([OV, OV2])),
)


def _answers(d: EmbeddedDNS, locals_: dict[str, Local],
             holders: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str, int], Any]:
    """Every answer a container can get for the names and addresses in play. A PTR for an
    address several endpoints hold may name any of them (the first holder answers)."""
    out: dict[tuple[str, str, int], Any] = {}
    for who in locals_.values():
        for name in ["web", "api", "db", "c1", "c2", "web.ovnet", "db.ovnet2", "api.front"]:
            out[(who.c.name, name, QTYPE_A)] = a(d, who, name)
        for host in (2, 3, 4):
            q = f"{host}.0.0.10.in-addr.arpa"
            ans = d.records.lookup(who.c.id, q, QTYPE_PTR)
            if ans.kind != HIT:
                out[(who.c.name, q, QTYPE_PTR)] = ans.kind
                continue
            nets = [n for n in d.records.networks_of(who.c.id)
                    if ans.ptr in holders.get((n, f"10.0.0.{host}"), set())]
            out[(who.c.name, q, QTYPE_PTR)] = bool(nets)
    return out


class World:
    """One host's engine and peer service, and what they have told the resolver so far."""

    def __init__(self) -> None:
        self.nets = {OV: network(OV), BR: network(BR)}
        self.d = embedded(self.nets)
        self.locals = {c: Local(c) for c in CONTAINERS}
        self.joined: dict[tuple[str, str], str] = {}  # (container, network) -> address
        self.told: dict[tuple[str, str], EndpointRecord] = {}  # up and not down

    def apply(self, op: tuple[Any, ...]) -> None:
        kind, d = op[0], self.d
        if kind == "join":
            _, c, n, v4 = op
            self.nets.setdefault(n, network(n))  # the engine joins only networks it has
            self.locals[c].join(d, self.nets[n], v4)
            self.joined[(c, n)] = v4
        elif kind == "leave" and (op[1], op[2]) in self.joined:
            _, c, n = op
            v4 = self.joined.pop((c, n))
            d.endpoint_down(self.locals[c].c, self.nets[n], self.locals[c].ep(n, v4))
        elif kind == "up":
            _, r, down_first = op
            key = (r.network_id, r.endpoint_id)
            old = self.told.get(key)
            if old is not None and old != r and down_first:
                d.remote_endpoint_down(old)  # what the peer service does on a change
            self.told[key] = r
            d.remote_endpoint_up(r)  # repeated ups happen too (subscribe)
        elif kind == "down":
            r = op[1]
            d.remote_endpoint_down(r)  # a stale or unknown down must change nothing
            if self.told.get((r.network_id, r.endpoint_id)) == r:
                del self.told[(r.network_id, r.endpoint_id)]
        elif kind == "arrive":
            self.nets.setdefault(op[1], network(op[1]))

    def fresh(self) -> tuple[EmbeddedDNS, dict[str, Local]]:
        """A resolver told only the final state, remote endpoints first."""
        fresh = embedded(dict(self.nets))
        fresh_locals = {c: Local(c) for c in CONTAINERS}
        for r in sorted(self.told.values(), key=lambda r: (r.network_id, r.endpoint_id)):
            fresh.remote_endpoint_up(r)
        for (c, n), v4 in sorted(self.joined.items()):
            fresh_locals[c].join(fresh, self.nets[n], v4)
        return fresh, fresh_locals

    def ptr_holders(self) -> dict[tuple[str, str], set[str]]:
        holders: dict[tuple[str, str], set[str]] = {}
        for (c, n), v4 in self.joined.items():
            holders.setdefault((n, v4), set()).add(f"{c}.{self.nets[n].name}")
        for r in self.told.values():
            if r.network_id in self.nets and r.ipv4 is not None:
                holders.setdefault((r.network_id, r.ipv4), set()).add(
                    f"{r.dns_names[0]}.{self.nets[r.network_id].name}")
        return holders


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=30))
def test_any_interleaving_answers_as_a_fresh_build(ops: list[tuple[Any, ...]]) -> None:
    """Local joins and leaves, remote ups and downs (duplicated, replaced with or without a
    down, stale, with ids equal to local ones) and networks arriving late, in any order, leave
    every container with the answers a resolver built from the final state alone gives."""
    w = World()
    for op in ops:
        w.apply(op)
    fresh, fresh_locals = w.fresh()
    holders = w.ptr_holders()
    assert _answers(w.d, w.locals, holders) == _answers(fresh, fresh_locals, holders)
    for c, _n in w.joined:  # every container still resolves itself
        assert a(w.d, w.locals[c], c) != MISS


# ---- the answer path, fed by the real peer service -------------------------------------------


def _ask(d: EmbeddedDNS, who: Local, name: str, rdtype: str) -> dns.message.Message | None:
    """The server's answer in wire form, parsed back by dnspython; None when the question
    would go upstream (no local answer)."""
    q = dns.message.make_query(name, rdtype)
    sb = ServedSandbox(who.c.id, None, None, None, False)  # type: ignore[arg-type]
    reply = d._server()._handle(sb, q.to_wire(), False)
    if not isinstance(reply, bytes):
        return None
    return dns.message.from_wire(reply)


def _view(*ids: str) -> dict[str, NodeInfo]:
    return {i: NodeInfo(node_id=i, vtep=VTEPS[i], vxlan_port=4789, hostname=i, started="")
            for i in ids}


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@synced
async def test_a_name_put_by_another_host_answers_on_the_wire_and_goes_with_its_host() -> None:
    kv = MemoryKV()
    kernel = FakeKernel()
    nets = {OV: network(OV)}
    driver = OverlayDriver(kernel, VTEPS[ME])
    peers = PeerService(kv, driver, ME, nets)
    driver.on_site = peers.site_made
    driver.create_network(nets[OV])
    d = EmbeddedDNS(Path("/nonexistent/resolv.conf"), nets.get, kernel.ns,
                    kernel.firewall.run_in_namespace)
    peers.subscribe(d)
    web = Local("web")
    web.join(d, nets[OV], "10.0.0.2", aliases=("api",))
    other = rec("f" * 64, "10.0.0.3", ("db", "api", "ffffffffffff"))
    await kv.put(other.key, other.encode())
    await peers.start()
    peers.nodes_changed(_view(ME, N2))
    await _settle()

    m = _ask(d, web, "db.", "A")
    assert m is not None and m.rcode() == 0
    assert [r.to_text() for rr in m.answer for r in rr] == ["10.0.0.3"]
    m = _ask(d, web, "api.", "A")
    assert m is not None
    assert sorted(r.to_text() for rr in m.answer for r in rr) == ["10.0.0.2", "10.0.0.3"]
    m = _ask(d, web, "3.0.0.10.in-addr.arpa.", "PTR")
    assert m is not None and [r.to_text() for rr in m.answer for r in rr] == ["db.ovnet."]
    m = _ask(d, web, "db.", "AAAA")
    assert m is not None and m.rcode() == 0 and not m.answer  # NODATA, not upstream
    assert d.records.lookup(web.c.id, "db", QTYPE_AAAA).kind == NODATA

    peers.nodes_changed(_view(ME))  # its host died: its names stop answering
    await _settle()
    assert _ask(d, web, "db.", "A") is None
    peers.nodes_changed(_view(ME, N2))
    await _settle()
    assert _ask(d, web, "db.", "A") is not None
    await kv.delete(other.key)  # removed on its host
    await _settle()
    assert _ask(d, web, "db.", "A") is None
    m = _ask(d, web, "api.", "A")
    assert m is not None and [r.to_text() for rr in m.answer for r in rr] == ["10.0.0.2"]
    await peers.stop()
