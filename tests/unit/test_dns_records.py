"""Records: who may see which names (docs/architecture.md rule 6: lookups scoped to the asker's
networks)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsnet.dns.records import (
    ANSWER_MISS,
    HIT,
    MISS,
    NODATA,
    QTYPE_A,
    QTYPE_AAAA,
    QTYPE_PTR,
    Records,
)
from nsnet.errors import Invalid

MX = 15


def addrs(records: Records, sandbox: str, name: str, qtype: int = QTYPE_A) -> list[str]:
    ans = records.lookup(sandbox, name, qtype)
    assert ans.kind == HIT, ans
    return sorted(ans.addresses)


@pytest.fixture
def recs() -> Records:
    r = Records()
    r.set_network_name("n1", "front")
    r.set_network_name("n2", "back")
    r.set_endpoint(
        "e-web", "n1", "sb-web", ["web", "www", "0123456789ab", "webhost"], "10.1.0.2", "fd00:1::2"
    )
    r.set_endpoint("e-db", "n2", "sb-db", ["db", "database"], "10.2.0.2", None)
    return r


def test_own_network_names_resolve(recs: Records) -> None:
    assert addrs(recs, "sb-web", "web") == ["10.1.0.2"]
    assert addrs(recs, "sb-web", "0123456789ab") == ["10.1.0.2"]
    assert addrs(recs, "sb-web", "webhost", QTYPE_AAAA) == ["fd00:1::2"]
    ans = recs.lookup("sb-web", "web", QTYPE_A)
    assert ans.packed == (bytes([10, 1, 0, 2]),)


def test_sandboxes_on_different_networks_cannot_see_each_other(recs: Records) -> None:
    assert recs.lookup("sb-web", "db", QTYPE_A).kind == MISS
    assert recs.lookup("sb-db", "web", QTYPE_A).kind == MISS
    assert recs.lookup("sb-db", "web.front", QTYPE_A).kind == MISS
    assert recs.lookup("unknown-sandbox", "web", QTYPE_A) is ANSWER_MISS


def test_shared_network_makes_names_visible(recs: Records) -> None:
    # the web container connects to the back network as well
    recs.set_endpoint("e-web2", "n2", "sb-web", ["web", "web-back"], "10.2.0.3", None)
    assert addrs(recs, "sb-db", "web") == ["10.2.0.3"]  # only the address on the shared network
    assert addrs(recs, "sb-web", "db") == ["10.2.0.2"]
    # the asker on both networks gets the union
    assert addrs(recs, "sb-web", "web") == ["10.1.0.2", "10.2.0.3"]
    assert recs.networks_of("sb-web") == ["n1", "n2"]
    recs.remove_endpoint("e-web2")
    assert recs.lookup("sb-db", "web", QTYPE_A).kind == MISS
    assert recs.networks_of("sb-web") == ["n1"]


def test_alias_shared_by_two_endpoints_returns_both(recs: Records) -> None:
    recs.set_endpoint("e-a", "n1", "sb-a", ["a", "api"], "10.1.0.10", None)
    recs.set_endpoint("e-b", "n1", "sb-b", ["b", "api"], "10.1.0.11", None)
    assert addrs(recs, "sb-web", "api") == ["10.1.0.10", "10.1.0.11"]
    recs.remove_endpoint("e-a")
    assert addrs(recs, "sb-web", "api") == ["10.1.0.11"]


def test_nodata_and_miss(recs: Records) -> None:
    assert recs.lookup("sb-db", "db", QTYPE_AAAA).kind == NODATA  # known, no IPv6
    assert recs.lookup("sb-db", "db", MX).kind == NODATA  # known name, other type
    assert recs.lookup("sb-db", "db.back", MX).kind == NODATA
    assert recs.lookup("sb-db", "example.com", QTYPE_A).kind == MISS
    assert recs.lookup("sb-db", "example.com", MX).kind == MISS


def test_qualified_name_dot_network(recs: Records) -> None:
    assert addrs(recs, "sb-web", "web.front") == ["10.1.0.2"]
    assert addrs(recs, "sb-web", "www.front", QTYPE_AAAA) == ["fd00:1::2"]
    assert recs.lookup("sb-web", "web.back", QTYPE_A).kind == MISS  # wrong network
    assert recs.lookup("sb-web", "nope.front", QTYPE_A).kind == MISS
    # network names may contain dots; aliases too
    recs.set_network_name("n3", "my.net")
    recs.set_endpoint("e-x", "n3", "sb-x", ["x.svc"], "10.3.0.2", None)
    assert addrs(recs, "sb-x", "x.svc.my.net") == ["10.3.0.2"]
    assert addrs(recs, "sb-x", "x.svc") == ["10.3.0.2"]
    # renaming the network moves the qualified name
    recs.set_network_name("n3", "other")
    assert recs.lookup("sb-x", "x.svc.my.net", QTYPE_A).kind == MISS
    assert addrs(recs, "sb-x", "x.svc.other") == ["10.3.0.2"]


def test_names_are_case_insensitive_and_dotless(recs: Records) -> None:
    recs.set_endpoint("e-c", "n1", "sb-c", ["MyApp.", " Other "], "10.1.0.20", None)
    assert addrs(recs, "sb-web", "myapp") == ["10.1.0.20"]
    assert addrs(recs, "sb-web", "other") == ["10.1.0.20"]


def test_ptr(recs: Records) -> None:
    ans = recs.lookup("sb-web", "2.0.1.10.in-addr.arpa", QTYPE_PTR)
    assert ans.kind == HIT and ans.ptr == "web.front"  # Docker: "<container>.<network>"
    v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa"
    assert recs.lookup("sb-web", v6, QTYPE_PTR).ptr == "web.front"
    # not on a shared network, or unknown: not ours
    assert recs.lookup("sb-web", "2.0.2.10.in-addr.arpa", QTYPE_PTR).kind == MISS
    assert recs.lookup("sb-web", "9.9.9.9.in-addr.arpa", QTYPE_PTR).kind == MISS
    # without a network name the bare first name is used
    recs.set_endpoint("e-n", "n9", "sb-n", ["solo", "alias"], "10.9.0.2", None)
    assert recs.lookup("sb-n", "2.0.9.10.in-addr.arpa", QTYPE_PTR).ptr == "solo"


def test_replace_and_remove(recs: Records) -> None:
    recs.set_endpoint("e-web", "n1", "sb-web", ["web"], "10.1.0.99", None)
    assert addrs(recs, "sb-web", "web") == ["10.1.0.99"]
    assert recs.lookup("sb-web", "www", QTYPE_A).kind == MISS
    assert recs.lookup("sb-web", "2.0.1.10.in-addr.arpa", QTYPE_PTR).kind == MISS
    recs.remove_endpoint("e-web")
    recs.remove_endpoint("e-web")  # idempotent
    assert recs.lookup("sb-web", "web", QTYPE_A).kind == MISS
    assert len(recs) == 1


def test_remove_network_drops_its_endpoints(recs: Records) -> None:
    recs.set_endpoint("e-web2", "n2", "sb-web", ["web"], "10.2.0.3", None)
    recs.remove_network("n2")
    recs.remove_network("n2")
    assert recs.lookup("sb-db", "db", QTYPE_A).kind == MISS
    assert recs.lookup("sb-web", "web.back", QTYPE_A).kind == MISS
    assert addrs(recs, "sb-web", "web") == ["10.1.0.2"]
    recs.remove_sandbox("sb-web")
    assert len(recs) == 0


def test_bad_addresses_are_rejected() -> None:
    r = Records()
    with pytest.raises(Invalid):
        r.set_endpoint("e", "n", "s", ["x"], "not-an-ip", None)
    with pytest.raises(Invalid):
        r.set_endpoint("e", "n", "s", ["x"], "fd00::1", None)
    with pytest.raises(Invalid):
        r.set_endpoint("e", "n", "s", ["x"], None, "10.0.0.1")
    # the interface form an IPAM may hand over is accepted
    r.set_endpoint("e", "n", "s", ["x"], "10.0.0.2/24", "fd00::2/64")
    assert addrs(r, "s", "x") == ["10.0.0.2"]


def test_lookup_returns_shared_answers_for_the_common_case(recs: Records) -> None:
    # the hot path should not allocate: the same Answer object comes back
    a1 = recs.lookup("sb-web", "web", QTYPE_A)
    a2 = recs.lookup("sb-web", "web", QTYPE_A)
    assert a1 is a2


def test_memory_per_container_is_small() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        r = Records()
        for n in range(4):
            r.set_network_name(f"net{n}", f"network-{n}")
        for i in range(1000):
            net = f"net{i % 4}"
            r.set_endpoint(
                f"{i:064x}", net, f"sandbox-{i:058x}",
                [f"container-{i}", f"alias-{i}", f"{i:012x}", f"host-{i}"],
                f"10.{i % 4}.{i >> 8}.{i & 255}", f"fd00:{i % 4}::{i:x}",
            )  # fmt: skip
        # exercise the lazily built answers too
        for i in range(1000):
            r.lookup(f"sandbox-{i:058x}", f"container-{i}", QTYPE_A)
            r.lookup(f"sandbox-{i:058x}", f"container-{i}", QTYPE_AAAA)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert used / 1000 < 20 * 1024, f"{used / 1000:.0f} bytes per container"


def test_link_aliases_are_private_to_the_linking_sandbox() -> None:
    from nsnet.dns.records import HIT, MISS, QTYPE_A, Records

    r = Records()
    r.set_network_name("n1", "net")
    r.set_endpoint("e-db", "n1", "s-db", ["db"], "10.0.0.2", None)
    r.set_endpoint("e-app", "n1", "s-app", ["app"], "10.0.0.3", None)
    r.set_endpoint("e-other", "n1", "s-other", ["other"], "10.0.0.4", None)
    r.set_links("s-app", {"database": "db"})
    hit = r.lookup("s-app", "database", QTYPE_A)
    assert hit.kind == HIT and hit.addresses == ("10.0.0.2",)
    assert r.lookup("s-other", "database", QTYPE_A).kind == MISS
    r.set_links("s-app", {})
    assert r.lookup("s-app", "database", QTYPE_A).kind == MISS


# ---- remote endpoints (containers of an overlay network on other hosts, issue 10) ----------


@pytest.fixture
def overlay() -> Records:
    """One overlay network "ov" with a local container (sb-a) and two on other hosts, and a
    bridge network with a container (sb-b) that must see none of them."""
    r = Records()
    r.set_network_name("ov", "ovnet")
    r.set_network_name("br", "bridge1")
    r.set_endpoint("e-a", "ov", "sb-a", ["a", "api"], "10.0.0.2", None)
    r.set_endpoint("e-b", "br", "sb-b", ["b"], "172.20.0.2", None)
    r.set_remote_endpoint("ov", "e-r1", ["r1", "api", "0123456789ab"], "10.0.0.3", "fd00::3")
    r.set_remote_endpoint("ov", "e-r2", ["r2"], "10.0.0.4", None)
    return r


def test_remote_names_answer_on_their_network_only(overlay: Records) -> None:
    assert addrs(overlay, "sb-a", "r1") == ["10.0.0.3"]
    assert addrs(overlay, "sb-a", "0123456789ab") == ["10.0.0.3"]
    assert addrs(overlay, "sb-a", "r1", QTYPE_AAAA) == ["fd00::3"]
    assert addrs(overlay, "sb-a", "r2.ovnet") == ["10.0.0.4"]
    assert overlay.lookup("sb-a", "r2", QTYPE_AAAA).kind == NODATA
    assert overlay.lookup("sb-b", "r1", QTYPE_A).kind == MISS
    assert overlay.lookup("sb-b", "r1.ovnet", QTYPE_A).kind == MISS
    assert len(overlay) == 2 and overlay.remote_count == 2


def test_an_alias_shared_across_hosts_answers_every_holder(overlay: Records) -> None:
    assert addrs(overlay, "sb-a", "api") == ["10.0.0.2", "10.0.0.3"]
    overlay.set_remote_endpoint("ov", "e-r2", ["r2", "api"], "10.0.0.4", None)  # replaced
    assert addrs(overlay, "sb-a", "api") == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    overlay.remove_endpoint("e-a")  # the local holder goes; the remote ones stay
    overlay.set_endpoint("e-a2", "ov", "sb-a", ["a2"], "10.0.0.9", None)
    assert addrs(overlay, "sb-a", "api") == ["10.0.0.3", "10.0.0.4"]
    overlay.remove_remote_endpoint("ov", "e-r1")
    overlay.remove_remote_endpoint("ov", "e-r1")  # idempotent
    assert addrs(overlay, "sb-a", "api") == ["10.0.0.4"]
    assert overlay.lookup("sb-a", "r1", QTYPE_A).kind == MISS


def test_remote_ptr(overlay: Records) -> None:
    ans = overlay.lookup("sb-a", "3.0.0.10.in-addr.arpa", QTYPE_PTR)
    assert ans.kind == HIT and ans.ptr == "r1.ovnet"
    assert overlay.lookup("sb-b", "3.0.0.10.in-addr.arpa", QTYPE_PTR).kind == MISS
    overlay.remove_remote_endpoint("ov", "e-r1")
    assert overlay.lookup("sb-a", "3.0.0.10.in-addr.arpa", QTYPE_PTR).kind == MISS


def test_remote_ids_never_touch_local_endpoints(overlay: Records) -> None:
    """Another host's record may carry any ids: a local endpoint's id, an id it also uses on
    another network. Neither replaces nor removes anything but that record."""
    before = addrs(overlay, "sb-b", "b")
    overlay.set_remote_endpoint("br", "e-b", ["b"], "172.20.0.99", None)  # a local id
    overlay.set_remote_endpoint("ov", "e-a", ["x"], "10.0.0.50", None)
    assert addrs(overlay, "sb-b", "b") == ["172.20.0.2", "172.20.0.99"]
    overlay.remove_remote_endpoint("br", "e-b")
    overlay.remove_remote_endpoint("ov", "e-a")
    assert addrs(overlay, "sb-b", "b") == before and addrs(overlay, "sb-a", "a") == ["10.0.0.2"]
    # one endpoint id on two networks: two records
    overlay.set_remote_endpoint("ov2", "e-r1", ["r1"], "10.9.0.3", None)
    overlay.remove_remote_endpoint("ov2", "e-r1")
    assert addrs(overlay, "sb-a", "r1") == ["10.0.0.3"]
    # removing a local endpoint by a remote one's id is a no-op for the remote one
    overlay.remove_endpoint("e-r2")
    assert addrs(overlay, "sb-a", "r2") == ["10.0.0.4"]


def test_remote_endpoints_never_widen_a_scope(overlay: Records) -> None:
    before = overlay.networks_of("sb-b")
    overlay.set_remote_endpoint("ov", "e-r3", ["b", "r3"], "10.0.0.5", None)
    assert overlay.networks_of("sb-b") == before == ["br"]
    assert overlay.lookup("sb-b", "r3", QTYPE_A).kind == MISS
    assert overlay.networks_of("e-r3") == []


def test_remove_network_drops_its_remote_endpoints(overlay: Records) -> None:
    overlay.remove_network("ov")
    assert overlay.remote_count == 0
    assert overlay.lookup("sb-a", "r1", QTYPE_A).kind == MISS
    overlay.remove_sandbox("sb-a")
    overlay.remove_sandbox("sb-b")
    overlay.remove_network("br")
    assert overlay.snapshot() == Records().snapshot()


def test_remote_names_that_cannot_go_on_the_wire_are_left_out() -> None:
    r = Records()
    r.set_endpoint("e-a", "ov", "sb-a", ["a"], "10.0.0.2", None)
    r.set_remote_endpoint("ov", "e-r", ["r", "a" * 64, "x..y", "ünï", "b" * 60 + ".c"],
                          "10.0.0.3", None)
    assert addrs(r, "sb-a", "r") == ["10.0.0.3"]
    assert addrs(r, "sb-a", "b" * 60 + ".c") == ["10.0.0.3"]
    for bad in ("a" * 64, "x..y", "ünï"):
        assert r.lookup("sb-a", bad, QTYPE_A).kind == MISS
    with pytest.raises(Invalid):  # addresses are checked as for local endpoints
        r.set_remote_endpoint("ov", "e-r", ["r"], "fd00::1", None)
    assert addrs(r, "sb-a", "r") == ["10.0.0.3"]  # a refused replacement leaves the old one


# Small pools so that ids, names and addresses collide often: a local and a remote endpoint
# with one id, one remote id on two networks, aliases and addresses shared.
NETS = ["ov", "ov2", "br"]
IDS = ["e1", "e2", "e3"]
SANDBOXES = ["s1", "s2"]
NAMES = ["web", "api", "db", "x"]
_names = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)
_v4 = st.sampled_from([None, "10.0.0.2", "10.0.0.3", "10.0.0.4"])
_v6 = st.sampled_from([None, "fd00::2", "fd00::3"])
_local_up = st.tuples(st.just("local_up"), st.sampled_from(IDS), st.sampled_from(NETS),
                      st.sampled_from(SANDBOXES), _names, _v4, _v6)
_remote_up = st.tuples(st.just("remote_up"), st.sampled_from(IDS), st.sampled_from(NETS),
                       st.just(""), _names, _v4, _v6)
_local_down = st.tuples(st.just("local_down"), st.sampled_from(IDS))
_remote_down = st.tuples(st.just("remote_down"), st.sampled_from(IDS), st.sampled_from(NETS))
_op = st.one_of(_local_up, _remote_up, _local_down, _remote_down)


def _named() -> Records:
    r = Records()
    for n in NETS:
        r.set_network_name(n, f"name-{n}")
    return r


def _every_answer(r: Records) -> dict[tuple[str, str, int], tuple[int, list[str]]]:
    out = {}
    for sb in SANDBOXES:
        for net in ["", *(f".name-{n}" for n in NETS)]:
            for name in NAMES:
                for qtype in (QTYPE_A, QTYPE_AAAA):
                    ans = r.lookup(sb, name + net, qtype)
                    out[(sb, name + net, qtype)] = (ans.kind, sorted(ans.addresses))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40))
def test_any_interleaving_leaves_the_tables_of_a_fresh_build(ops: list[tuple[Any, ...]]) -> None:
    """Local and remote endpoints going up and down in any order (replacing one another,
    colliding in ids, names and addresses) leave exactly what building the final set afresh
    gives: no leftover name, holder, PTR, network or scope."""
    r = _named()
    local: dict[str, tuple[Any, ...]] = {}
    remote: dict[tuple[str, str], tuple[Any, ...]] = {}
    for op in ops:
        if op[0] == "local_up":
            _, ep, net, sb, names, v4, v6 = op
            r.set_endpoint(ep, net, sb, names, v4, v6)
            local[ep] = (net, sb, names, v4, v6)
        elif op[0] == "remote_up":
            _, ep, net, _sb, names, v4, v6 = op
            r.set_remote_endpoint(net, ep, names, v4, v6)
            remote[(net, ep)] = (names, v4, v6)
        elif op[0] == "local_down":
            r.remove_endpoint(op[1])
            local.pop(op[1], None)
        else:
            r.remove_remote_endpoint(op[2], op[1])
            remote.pop((op[2], op[1]), None)
    fresh = _named()
    for (net, ep), (names, v4, v6) in sorted(remote.items()):
        fresh.set_remote_endpoint(net, ep, names, v4, v6)
    for ep, (net, sb, names, v4, v6) in sorted(local.items()):
        fresh.set_endpoint(ep, net, sb, names, v4, v6)
    assert r.snapshot() == fresh.snapshot()
    assert _every_answer(r) == _every_answer(fresh)
