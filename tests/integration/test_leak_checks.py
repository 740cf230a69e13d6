"""The leak check sees this run's leaks and nothing else on a shared machine.

The machine's own namespace is never touched: a namespace made here stands in for it (the
check's ``machine``), and what Docker or a buggy nsnetd would do there is done in it. A
second engineer's run is played by another process making namespaces through the same
helpers, so they are named exactly like this run's.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsnet.testing import leaks
from nsnet.testing.hosts import Daemon, TestHost, _force_cleanup, daemon_host, sh

pytestmark = pytest.mark.root

OTHER_RUN = """
import sys
from nsnet.testing.hosts import TestHost
print(TestHost.create(sys.argv[1]).name)
"""


@pytest.fixture
def machine() -> Iterator[TestHost]:
    """The stand-in for the machine's own namespace."""
    m = TestHost.create("nslkm")
    try:
        yield m
    finally:
        m.destroy()


def other_run_namespace(prefix: str) -> str:
    """A namespace made by another process of this suite (another engineer's run)."""
    out = subprocess.run([sys.executable, "-c", OTHER_RUN, prefix], capture_output=True,
                         text=True, check=True, timeout=30)
    return out.stdout.strip()


def test_docker_and_another_run_working_meanwhile_are_not_reported(machine: TestHost,
                                                                  tmp_path: Path) -> None:
    before = leaks.LeakSnapshot.take(machine.name)
    theirs = [other_run_namespace("nsnt"), f"nsnt-{secrets.token_hex(3)}"]
    subprocess.run(["ip", "netns", "add", theirs[1]], check=True)  # another run's: not noted
    container = theirs[0]
    try:
        # Docker on the machine: its bridges (one named as nsnet names its own) and a
        # container's veth on each, the peer in the container's namespace; its own table.
        m = machine.name
        docker_net = "br-" + secrets.token_hex(6)
        for bridge in ("docker0", docker_net):
            sh("ip", "-n", m, "link", "add", bridge, "type", "bridge")
        for port, bridge, ifname in (("veth" + secrets.token_hex(4)[:7], "docker0", "eth0"),
                                     ("veth" + secrets.token_hex(4)[:7], docker_net, "eth1")):
            sh("ip", "-n", m, "link", "add", port, "master", bridge, "type", "veth", "peer",
               "name", ifname, "netns", container)
        sh("nft", "add", "table", "ip", "nat", ns=m)
        assert len(leaks.machine_links(m)) == 1 + 4
        assert leaks.check_leaks(before, tmp_path, [], wait=0) == []
    finally:
        for ns in theirs:
            sh("ip", "netns", "del", ns, check=False)


def test_a_daemon_working_in_the_machines_namespace_and_our_namespace_are_reported(
        machine: TestHost, tmp_path: Path) -> None:
    """nsnetd started in the machine's namespace by mistake leaves its bridge (a network
    made, then kill -9) and its table there; a namespace this run made is left too."""
    before = leaks.LeakSnapshot.take(machine.name)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    d = Daemon(host=machine, root=tmp_path, resolv_conf=resolv)
    ours = TestHost.create("nslko")
    theirs = other_run_namespace("nslko")
    try:
        d.start()
        nid = str(d.client().networks.create({"Name": "leaky"})["Id"])
        d.kill()
        problems = leaks.check_leaks(before, tmp_path, [], wait=0)
        assert problems == [
            f"links left in the root namespace: ['br-{nid[:12]}', 'nsnet0']",
            f"namespaces left: ['{ours.name}']",
            "an nsnet nftables table appeared in the root namespace: ['inet nsnet']",
        ], problems
    finally:
        d.kill()
        _force_cleanup(d)
        ours.destroy()
        sh("ip", "netns", "del", theirs, check=False)


def test_a_veth_into_a_namespace_of_this_run_is_reported(machine: TestHost,
                                                         tmp_path: Path) -> None:
    """A fixture's veth born on the machine's side (``ns=`` forgotten): its other end is in
    a namespace this run made, so it is ours whatever its name."""
    lan = TestHost.create("nslkl")
    theirs = other_run_namespace("nslkl")
    try:
        before = leaks.LeakSnapshot.take(machine.name)
        sh("ip", "-n", machine.name, "link", "add", "lan0", "type", "veth", "peer", "name",
           "lan0p", "netns", lan.name)
        sh("ip", "-n", machine.name, "link", "add", "lan1", "type", "veth", "peer", "name",
           "lan1p", "netns", theirs)
        links = json.loads(sh("ip", "-n", machine.name, "-j", "link", "show").stdout)
        assert {x["ifname"] for x in links} >= {"lan0", "lan1"}
        assert leaks.check_leaks(before, tmp_path, [], wait=0) == [
            "links left in the root namespace: ['lan0']"]
    finally:
        lan.destroy()
        sh("ip", "netns", "del", theirs, check=False)


def test_daemon_host_passes_while_another_run_makes_namespaces() -> None:
    """The real check after a real test: a namespace appearing meanwhile is not this test's."""
    theirs = ""
    try:
        with daemon_host() as d:
            theirs = other_run_namespace("nsnt")
            assert d.client().ping()
    finally:
        if theirs:
            sh("ip", "netns", "del", theirs, check=False)


def test_namespaces_left_names_only_this_runs_undeleted_ones() -> None:
    """What every test's closing check (tests/conftest.py) reads."""
    mark = leaks.namespaces_mark()
    gone = TestHost.create("nslkg")
    gone.destroy()
    kept = TestHost.create("nslkk")
    theirs = other_run_namespace("nslkk")
    try:
        assert leaks.namespaces_left(mark) == [kept.name]
    finally:
        kept.destroy()
        sh("ip", "netns", "del", theirs, check=False)
    assert leaks.namespaces_left(mark) == []
