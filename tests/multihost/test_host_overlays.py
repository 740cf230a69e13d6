"""``HostOverlays`` (the ``Kernel.overlays`` the overlay driver uses) on real kernels across two
lab hosts: made, opened again from its pinned namespace, peers synced, containers ping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nsnet.errors import Invalid, NotFound
from nsnet.kernel.api import OverlayPeer
from nsnet.kernel.host import open_ns_fd
from nsnet.kernel.links import random_mac, random_veth_name
from nsnet.kernel.netns import NamespaceThread
from nsnet.kernel.overlays import HostOverlays
from nsnet.testing.hosts import sh
from nsnet.testing.multihost import lab

pytestmark = pytest.mark.root

VNI = 4200


@pytest.fixture
def nst() -> Iterator[NamespaceThread]:
    t = NamespaceThread()
    yield t
    t.close()


def test_two_hosts_reach_each_other_through_host_overlays(nst: NamespaceThread) -> None:
    with lab(2, daemons=False) as the_lab:
        sockets = [nst.iproute(h.path) for h in the_lab.hosts]
        sites = [HostOverlays(nst, ipr, h.root(the_lab.root) / "overlay")
                 for h, ipr in zip(the_lab.hosts, sockets, strict=True)]
        try:
            peers = []
            for i, (h, ov) in enumerate(zip(the_lab.hosts, sites, strict=True)):
                ov.create(VNI, h.address, None)
                with pytest.raises(Invalid):
                    ov.create(VNI, h.address, None)
                assert ov.present() == {VNI} and ov.mtu(VNI) == 1450
                c = the_lab.namespace(f"ho{i}")
                mac = random_mac()
                links = ov.links(VNI)
                master = links.index("ovbr0")
                assert master is not None
                with open_ns_fd(c.path) as fd:
                    links.add_veth_into(random_veth_name(), "eth0", mac, fd, master, 1450)
                sh("ip", "-n", c.name, "addr", "add", f"10.42.0.{i + 2}/24", "dev", "eth0")
                sh("ip", "-n", c.name, "link", "set", "eth0", "up")
                peers.append(OverlayPeer(mac, f"10.42.0.{i + 2}", h.address))
            for i, ov in enumerate(sites):
                assert ov.sync_peers(VNI, [peers[1 - i]]) == (1, 0)
            # A second object over the same pinned namespaces (a daemon restart) reads them.
            again = HostOverlays(nst, sockets[0], sites[0].ns_dir)
            assert again.peers(VNI) == {peers[1]}
            again.close()
            src = the_lab.extra[0]
            sh("ping", "-c", "1", "-W", "2", "10.42.0.3", ns=src.name)
            sites[0].remove_peer(VNI, peers[1].mac, peers[1].ip)
            assert sites[0].peers(VNI) == set()
            for ov in sites:
                ov.remove(VNI)
                ov.remove(VNI)  # idempotent
                assert not ov.exists(VNI)
                with pytest.raises(NotFound):
                    ov.peers(VNI)
        finally:
            for ov in sites:
                ov.close()
            for ipr in sockets:
                ipr.close()
