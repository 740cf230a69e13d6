"""The multi-host lab itself: hosts on one underlay, a daemon each, nothing left behind."""

from __future__ import annotations

import json
import secrets

import pytest

from nsnet.testing import leaks
from nsnet.testing.hosts import sh
from nsnet.testing.multihost import UNDERLAY_MTU, host_address, lab

pytestmark = pytest.mark.root


def test_three_hosts_answer_and_reach_each_other() -> None:
    before = leaks.LeakSnapshot.take()
    with lab(3, etcd_members=3) as the_lab:
        # Every daemon answers on its own socket, from its own namespace and roots.
        sockets = {str(h.daemon.socket) for h in the_lab.hosts if h.daemon}
        assert len(sockets) == 3
        for h in the_lab.hosts:
            assert h.daemon is not None
            assert h.daemon.client().ping()
            assert h.daemon.host is h.ns
            (eth0,) = h.ns.ip_json("-4", "addr", "show", "dev", "eth0")
            assert eth0["mtu"] == UNDERLAY_MTU
            addrs = [a["local"] for a in eth0["addr_info"]]  # type: ignore[index, union-attr]
            assert addrs == [h.address]
        assert [h.address for h in the_lab.hosts] == [host_address(i) for i in range(3)]
        # Every host reaches every other one over the underlay (and the etcd namespace).
        for a in the_lab.hosts:
            for b in the_lab.hosts:
                if a is not b:
                    assert the_lab.ping(a, b), f"{a.label} cannot reach {b.label}"
        # The etcd cluster answers every host over the underlay, all three members healthy.
        assert the_lab.etcd is not None
        assert the_lab.etcd.url == "etcd://" + ",".join(f"{e}:2379" for e in
                                                        the_lab.etcd_addresses)
        for a in the_lab.hosts:
            p = sh("etcdctl", "--endpoints", ",".join(the_lab.etcd.endpoints), "endpoint",
                   "health", ns=a.ns.name, check=False)
            assert p.returncode == 0 and (p.stdout + p.stderr).count("is healthy") == 3, p
        # The switch has no address: it is a wire, not a router.
        sw = json.loads(sh("ip", "-j", "addr", "show", ns=the_lab.switch.name).stdout)
        assert {a["local"] for link in sw if link["ifname"] != "lo"
                for a in link["addr_info"]} == set()
        # Nothing of the lab lives in the machine's own namespace, even while every lab
        # namespace is there to hold a link's other end.
        assert leaks.our_new_links(leaks.machine_links(), before.links,
                                   leaks.run_nsids) == []
        assert leaks.nsnet_tables() == before.tables
    assert leaks.check_leaks(before, the_lab.root, [], wait=0) == []


def test_leak_is_reported() -> None:
    """A namespace the lab did not make, left by the test inside it, fails the lab's check
    (made with ``ip netns add`` through ``sh``, which notes it as this run's)."""
    stray = None
    with pytest.raises(AssertionError, match="namespaces left"), lab(1, daemons=False):
        stray = f"nsmlstray-{secrets.token_hex(3)}"
        sh("ip", "netns", "add", stray)
    assert stray is not None
    sh("ip", "netns", "del", stray, check=False)
