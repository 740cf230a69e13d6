"""Records: who may see which names (docs/architecture.md rule 6: lookups scoped to the asker's
networks)."""

from __future__ import annotations

import tracemalloc

import pytest

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
