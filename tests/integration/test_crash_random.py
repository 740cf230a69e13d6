"""``kill -9`` at random moments of a concurrent workload; after each restart, store and kernel
agree (nsnet.testing.invariants): nothing leaked, nothing held twice, peers reachable.

Seeded, so a failure can be replayed; bounded to a few short rounds to stay cheap.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator

import pytest
from helpers import ip_of, run, sandbox

from nsnet.testing import invariants
from nsnet.testing.hosts import Daemon, daemon_host

pytestmark = pytest.mark.root

SEED = 8
ROUNDS = 4
WORKERS = 3
QUICK_STOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]


@pytest.fixture
def host() -> Iterator[Daemon]:
    with daemon_host(prefix="nsct") as d:
        yield d


def _worker(d: Daemon, tag: str, rng: random.Random, stop: threading.Event) -> None:
    """run, connect, disconnect, rm, in a loop, until the daemon dies under it."""
    c = d.client()
    i = 0
    while not stop.is_set():
        i += 1
        try:
            cid = run(c, network="chaos", name=f"{tag}-{i}", cmd=QUICK_STOP)
            if rng.random() < 0.7:
                c.networks.connect("chaos2", cid)
                if rng.random() < 0.5:
                    c.networks.disconnect("chaos", cid)
            if rng.random() < 0.5:
                c.containers.remove(cid, force=True)
        except Exception:  # noqa: BLE001 - the daemon is killed under us on purpose
            if stop.is_set():
                return


def test_kill_9_during_a_concurrent_workload(host: Daemon) -> None:
    rng = random.Random(SEED)
    c = host.client()
    nid = str(c.networks.create({"Name": "chaos", "IPAM": {"Config": [
        {"Subnet": "10.82.0.0/24"}]}})["Id"])
    c.networks.create({"Name": "chaos2", "IPAM": {"Config": [{"Subnet": "10.83.0.0/24"}]}})
    peer = run(c, network="chaos", name="peer", cmd=QUICK_STOP)
    peer_ip = ip_of(c, peer, "chaos")
    for r in range(ROUNDS):
        stop = threading.Event()
        threads = [threading.Thread(target=_worker,
                                    args=(host, f"r{r}w{w}", random.Random(rng.random()), stop))
                   for w in range(WORKERS)]
        for t in threads:
            t.start()
        delay = rng.uniform(0.2, 1.5)
        stop.wait(delay)
        host.kill()
        stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive()
        host.start()
        c = host.client()
        problems = invariants.check(host)
        assert not problems, f"round {r}, killed after {delay:.2f} s:\n" + "\n".join(problems)
        probe = run(c, network="chaos", name=f"probe{r}", cmd=QUICK_STOP)
        problems = invariants.check(host) + invariants.reachable(host, sandbox(c, peer), nid)
        assert not problems, f"round {r}, with a new container:\n" + "\n".join(problems)
        assert ip_of(c, peer, "chaos") == peer_ip
        with contextlib.suppress(Exception):
            c.containers.remove(probe, force=True)
