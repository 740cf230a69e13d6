"""EtcdKV when answers go missing: a transaction whose answer was lost is settled by reading
back, never reported failed when it landed, never applied twice, and a member that dies or
hangs in the middle of a stream of racing transactions changes no reported outcome.

Two kinds of fault, both against real etcd (Debian's 3.4, ``nsnet.testing.etcd``, loopback
with free ports, no kernel object made):

- a small aiohttp proxy in front of one member that loses the answer of chosen transactions
  in chosen ways (the reply dropped after etcd applied the request, the request dropped
  before etcd saw it, the request held and delivered after the client gave up);
- a 3-member cluster whose leader is killed (SIGKILL) or stopped (SIGSTOP) while two clients
  race for the same keys. The check reads etcd's own history of the keys (a watch from the
  first revision) and matches it one to one with what the clients were told.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from nsnet.errors import Conflict, Unavailable
from nsnet.store.etcd import EtcdKV
from nsnet.store.kv import WatchEvent
from nsnet.testing.etcd import EtcdCluster, etcd_cluster
from nsnet.testing.kv_contract import close_watch

pytestmark = pytest.mark.root  # runs etcd; kept with the integration tier


@pytest.fixture(scope="module")
def one() -> Iterator[EtcdCluster]:
    with etcd_cluster(1) as c:
        yield c


@pytest.fixture
def three() -> Iterator[EtcdCluster]:
    with etcd_cluster(3) as c:
        yield c


# ---- a proxy that loses answers ------------------------------------------------------------


@dataclass
class LossyProxy:
    """Forwards everything to one etcd member, except that the next ``/v3/kv/txn`` requests
    are treated as ``plan`` says, one mode each:

    - ``"reply"``: forwarded, etcd's answer read, then the connection reset (applied, lost);
    - ``"request"``: the connection reset before forwarding (never applied);
    - ``"late"``: the client is left waiting; the request is forwarded ``late_by`` seconds
      later (a member that held a proposal and resumed), its answer kept in ``late_answers``.
    """

    upstream: str
    plan: list[str] = field(default_factory=list)
    late_by: float = 3.0
    late_answers: list[dict[str, object]] = field(default_factory=list)
    dropped: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _late: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        # Forwarded watches wait on etcd until cut: do not wait 60 s for them at the end.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._session = aiohttp.ClientSession()

    async def settled(self) -> None:
        """Every late delivery done."""
        for task in self._late:
            await task

    async def stop(self) -> None:
        await self.settled()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        assert self._session is not None
        return await self._session.post(f"http://{self.upstream}/{path}", data=body,
                                        headers={"Content-Type": "application/json"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path, body = request.match_info["path"], await request.read()
        mode = self.plan.pop(0) if path == "v3/kv/txn" and self.plan else None
        if mode == "request":
            return self._reset(request)
        if mode == "late":
            self._late.append(asyncio.ensure_future(self._deliver_late(path, body)))
            await asyncio.sleep(self.late_by + 1)  # the client gives up long before
            return self._reset(request)
        upstream = await self._forward(path, body)
        if mode == "reply":
            await upstream.read()
            upstream.release()
            return self._reset(request)
        out = web.StreamResponse(status=upstream.status,
                                 headers={"Content-Type": "application/json"})
        await out.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():  # watches stream
                await out.write(chunk)
        except (ConnectionResetError, aiohttp.ClientError):
            pass
        finally:
            upstream.release()
        return out

    def _reset(self, request: web.Request) -> web.StreamResponse:
        self.dropped += 1
        if request.transport is not None:  # None: the client left first
            request.transport.abort()
        return web.Response()

    async def _deliver_late(self, path: str, body: bytes) -> None:
        await asyncio.sleep(self.late_by)
        upstream = await self._forward(path, body)
        self.late_answers.append(await upstream.json())
        upstream.release()


async def proxied(one: EtcdCluster, plan: list[str]) -> tuple[LossyProxy, EtcdKV]:
    proxy = LossyProxy(one.endpoints[0], plan=list(plan))
    await proxy.start()
    return proxy, EtcdKV([proxy.url], deadline=2.0)


def prefix(name: str) -> str:
    return f"/faults/{name}/{time.monotonic_ns()}/"


def test_a_claim_whose_reply_was_lost_is_reported_as_landed(one: EtcdCluster) -> None:
    """etcd applied the create-only put, its reply never came back: the caller gets the
    revision it landed at, not a 503, and not the Conflict a replay would meet."""

    async def body() -> None:
        proxy, kv = await proxied(one, ["reply"])
        k = prefix("reply") + "claim"
        try:
            revision = await kv.put(k, b"node-a/ep-1", expect_mod_revision=0)
            held = await kv.get(k)
            assert held is not None and held.value == b"node-a/ep-1"
            assert held.mod_revision == held.create_revision == revision  # written once
            assert proxy.dropped == 1 and kv.lost_answers == 1
            # Its release, lost the same way, is reported done too.
            proxy.plan.append("reply")
            assert await kv.delete(k, expect_mod_revision=revision)
            assert await kv.get(k) is None and kv.lost_answers == 2
        finally:
            await kv.close()
            await proxy.stop()

    asyncio.run(body())


def test_a_request_lost_before_etcd_saw_it_is_sent_again_once(one: EtcdCluster) -> None:
    async def body() -> None:
        proxy, kv = await proxied(one, ["request", "request"])
        p = prefix("request")
        try:
            assert await kv.txn([(p + "a", 0), (p + "b", 0)],
                                [(p + "a", b"1", 0), (p + "b", b"2", 0)], [])
            a, b = await kv.get(p + "a"), await kv.get(p + "b")
            assert a is not None and b is not None and a.mod_revision == b.mod_revision
            assert a.create_revision == a.mod_revision  # one version: applied exactly once
            assert proxy.dropped == 2 and kv.lost_answers == 2
        finally:
            await kv.close()
            await proxy.stop()

    asyncio.run(body())


def test_a_lost_answer_of_a_failed_compare_is_a_failure(one: EtcdCluster) -> None:
    """The outcome is the compare's, as if the answer had arrived: a taken key stays the
    other writer's, and the caller hears Conflict."""

    async def body() -> None:
        proxy, kv = await proxied(one, [])
        k = prefix("taken") + "claim"
        try:
            first = await kv.put(k, b"node-b/ep-9", expect_mod_revision=0)
            proxy.plan += ["reply", "reply"]
            with pytest.raises(Conflict):
                await kv.put(k, b"node-a/ep-1", expect_mod_revision=0)
            assert not await kv.txn([(k, 0)], [(k, b"node-a/ep-2", 0)], [])
            held = await kv.get(k)
            assert held is not None and held.value == b"node-b/ep-9"
            assert held.mod_revision == first and kv.lost_answers == 2
        finally:
            await kv.close()
            await proxy.stop()

    asyncio.run(body())


def test_a_request_delivered_after_the_client_gave_up_cannot_land(one: EtcdCluster) -> None:
    """The proposal a hung member held reaches etcd after the client fenced and resent: it
    fails its fence compare, so the claim is written once, by the resend."""

    async def body() -> None:
        proxy, kv = await proxied(one, ["late"])
        proxy.late_by = 2.0
        k = prefix("late") + "claim"
        try:
            revision = await kv.put(k, b"node-a/ep-1", expect_mod_revision=0)
            await proxy.settled()
            assert len(proxy.late_answers) == 1
            assert not proxy.late_answers[0].get("succeeded"), proxy.late_answers
            held = await kv.get(k)
            assert held is not None and held.value == b"node-a/ep-1"
            assert held.mod_revision == held.create_revision == revision
            assert kv.lost_answers == 1
        finally:
            await kv.close()
            await proxy.stop()

    asyncio.run(body())


def test_another_clients_fence_costs_an_in_flight_transaction_nothing(
        one: EtcdCluster) -> None:
    """A fence moved by client A fails B's next transaction's fence compare; B sees it in the
    failure branch and sends again: B's caller sees its claim succeed, no loss counted."""

    async def body() -> None:
        proxy, a = await proxied(one, ["reply"])
        b = EtcdKV(one.endpoints)
        p = prefix("fence")
        try:
            assert await b.txn([(p + "b1", 0)], [(p + "b1", b"b", 0)], [])  # B knows the fence
            await a.put(p + "a1", b"a", expect_mod_revision=0)  # A's reply lost: A fences
            assert a.lost_answers == 1
            assert await b.txn([(p + "b2", 0)], [(p + "b2", b"b", 0)], [])
            assert b.lost_answers == 0
            assert (await b.get(p + "b2")) is not None
        finally:
            await a.close()
            await b.close()
            await proxy.stop()

    asyncio.run(body())


# ---- a cluster member dying or hanging under racing clients --------------------------------


async def leader_of(cluster: EtcdCluster) -> int:
    """Index of the raft leader, from the maintenance status API of each live member."""
    for _ in range(100):
        for i, server in enumerate(cluster.members):
            if not server.running:
                continue
            kv = EtcdKV([server.member.endpoint])
            try:
                status = await kv._gw.call("/v3/maintenance/status", {})
            except Unavailable:
                continue
            finally:
                await kv.close()
            if status.get("leader") == status["header"]["member_id"]:
                return i
        await asyncio.sleep(0.05)
    raise AssertionError("no leader elected")


@dataclass
class Told:
    """What one client's caller was told about one operation."""

    op: str  # "claim" or "release"
    key: str
    value: bytes  # the claim's value (unique), or the released claim's
    ok: bool
    revision: int = 0  # a successful claim's revision, or the released claim's


async def racer(kv: EtcdKV, name: str, keys: list[str], ops: int, told: list[Told],
                seed: int) -> None:
    """Claims free-looking keys with create-only puts and releases its own claims with
    compare-and-delete, in a random order, as global IPAM does with addresses."""
    rng = random.Random(seed)
    mine: dict[str, tuple[bytes, int]] = {}
    for seq in range(ops):
        key = rng.choice(keys)
        if key in mine:
            value, revision = mine.pop(key)
            try:
                ok = await kv.delete(key, expect_mod_revision=revision)
            except Conflict:
                ok = False
            told.append(Told("release", key, value, ok, revision))
        else:
            value = f"{name}/{seq}".encode()
            try:
                revision = await kv.put(key, value, expect_mod_revision=0)
            except Conflict:
                told.append(Told("claim", key, value, False))
                continue
            mine[key] = (value, revision)
            told.append(Told("claim", key, value, True, revision))


async def history(kv: EtcdKV, prefix: str, start: int, end: int) -> list[WatchEvent]:
    """Every change under ``prefix`` from ``start`` to ``end``, as etcd recorded it."""
    out: list[WatchEvent] = []
    watch: AsyncIterator[list[WatchEvent]] = kv.watch(prefix, start)
    while not out or out[-1].kv.mod_revision < end:
        # Room for the client's failover: a member just resumed from SIGSTOP may hold the
        # stream until the quiet-stream probe moves it (seen once past 10 s on a loaded CI).
        out += await asyncio.wait_for(anext(watch), 30)
    await close_watch(watch)
    return out


def check_told_matches_history(told: list[Told], events: list[WatchEvent]) -> None:
    """One to one: every put in etcd's history is a claim its caller was told succeeded (same
    key, value and revision) and every delete a release told succeeded; every operation told
    it failed left no trace."""
    claims = {(t.key, t.value): t for t in told if t.op == "claim"}
    releases = {(t.key, t.revision): t for t in told if t.op == "release"}
    seen_claims, seen_releases = set(), set()
    last_put: dict[str, WatchEvent] = {}
    for e in events:
        if e.kind == "put":
            t = claims.get((e.kv.key, e.kv.value))
            assert t is not None, f"a put nobody made: {e}"
            assert t.ok and t.revision == e.kv.mod_revision, (t, e)
            assert (t.key, t.value) not in seen_claims, f"claim applied twice: {t}"
            seen_claims.add((t.key, t.value))
            last_put[e.kv.key] = e
        else:
            put = last_put.pop(e.kv.key)
            r = releases.get((e.kv.key, put.kv.mod_revision))
            assert r is not None and r.ok, f"a delete nobody was told of: {e}, {r}"
            seen_releases.add((r.key, r.revision))
    told_ok = {(t.key, t.value) for t in told if t.op == "claim" and t.ok}
    assert told_ok == seen_claims, f"told succeeded, not in etcd: {told_ok - seen_claims}"
    released_ok = {(t.key, t.revision) for t in told if t.op == "release" and t.ok}
    assert released_ok == seen_releases, released_ok - seen_releases


async def race_through(cluster: EtcdCluster, fault: str) -> tuple[list[Told], int]:
    """Two clients (three workers each) race for eight keys; ``fault`` hits the leader once
    a third of the operations are done. The leader is every client's first endpoint, so
    requests are in flight on it when it goes. Returns what callers were told, and answers
    lost."""
    p = prefix(fault)
    keys = [f"{p}k{i}" for i in range(8)]
    leader = await leader_of(cluster)
    order = [cluster.endpoints[leader]] + [e for i, e in enumerate(cluster.endpoints)
                                           if i != leader]
    clients = [EtcdKV(order, stream_probe=1.0) for _ in range(2)]
    told: list[Told] = []
    pid = cluster.members[leader].pid
    assert pid is not None
    try:
        _, start = await clients[0].get_prefix(p)
        ops = 60
        workers = [asyncio.ensure_future(racer(clients[c], f"c{c}w{w}", keys, ops, told,
                                               seed=c * 10 + w))
                   for c in range(2) for w in range(3)]
        while len(told) < 2 * 3 * ops // 3:
            await asyncio.sleep(0.005)
        if fault == "kill":
            cluster.members[leader].kill()
        else:
            os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        await asyncio.gather(*workers)
        print(f"{fault}: {len(told)} operations, the last {time.monotonic() - t0:.2f}s "
              f"after the fault, {sum(c.lost_answers for c in clients)} lost answers settled")
        if fault == "stop":
            os.kill(pid, signal.SIGCONT)  # its held proposals must not land now
            await asyncio.sleep(1.5)
        held, end = await clients[1].get_prefix(p)
        check_told_matches_history(told, await history(clients[1], p, start + 1, end))
        # The final state is what the callers were told: the claims told done and not told
        # released (``told`` is in completion order, not commit order, so no replay).
        released = {(t.key, t.revision) for t in told if t.op == "release" and t.ok}
        live = [(t.key, t.value, t.revision) for t in told
                if t.op == "claim" and t.ok and (t.key, t.revision) not in released]
        assert sorted((h.key, h.value, h.mod_revision) for h in held) == sorted(live)
        return told, sum(c.lost_answers for c in clients)
    finally:
        if fault == "stop" and cluster.members[leader].running:
            os.kill(pid, signal.SIGCONT)
        for kv in clients:
            await kv.close()


def test_racing_claims_through_the_leaders_death(three: EtcdCluster) -> None:
    told, lost = asyncio.run(race_through(three, "kill"))
    assert len(told) == 360  # nobody was told 503
    assert any(t.ok for t in told) and any(not t.ok for t in told)  # they did race
    assert lost >= 1, "no answer was lost: the test did not test the fault"


def test_racing_claims_through_a_hung_leader(three: EtcdCluster) -> None:
    """SIGSTOP: connections stay open and TCP keepalives are answered by the kernel, so only
    the client's own timeouts notice. Held proposals resumed afterwards do not land."""
    told, lost = asyncio.run(race_through(three, "stop"))
    assert len(told) == 360
    assert lost >= 1


def test_a_hung_member_costs_each_call_a_bounded_delay(three: EtcdCluster) -> None:
    """Reads, writes, transactions and a watch whose stream sits on a stopped member: each
    call returns within its attempt timeout plus an election, and the watch moves to another
    member within its probe interval and loses nothing."""

    async def body() -> None:
        leader = await leader_of(three)
        victim = next(i for i in range(3) if i != leader)  # a follower: no election needed
        order = [three.endpoints[victim]] + [e for i, e in enumerate(three.endpoints)
                                             if i != victim]
        kv = EtcdKV(order, stream_probe=1.0)
        writer = EtcdKV([three.endpoints[leader]])
        p = prefix("hung")
        pid = three.members[victim].pid
        assert pid is not None
        try:
            _, rev = await kv.get_prefix(p)
            watch = kv.watch(p, rev + 1)
            await writer.put(p + "before", b"1")
            first = await asyncio.wait_for(anext(watch), 5)
            assert [e.kv.key for e in first] == [p + "before"]
            os.kill(pid, signal.SIGSTOP)
            pending = asyncio.ensure_future(anext(watch))
            await writer.put(p + "during", b"2")
            t0 = time.monotonic()
            got = await asyncio.wait_for(pending, 5)
            moved = time.monotonic() - t0
            assert [e.kv.key for e in got] == [p + "during"]
            timings = {}
            for name, call in (("get", kv.get(p + "during")),
                               ("cas", kv.put(p + "cas", b"x", expect_mod_revision=0)),
                               ("txn", kv.txn([(p + "t", 0)], [(p + "t", b"y", 0)], [])),
                               ("lease", kv.grant(5))):
                t0 = time.monotonic()
                assert await call
                timings[name] = time.monotonic() - t0
            print(f"hung follower: watch moved in {moved:.2f}s, calls {timings}")
            assert moved < 1.0 + 0.8 + 1.0  # probe interval + attempt timeout + slack
            assert max(timings.values()) < 0.8 + 1.0
            cas = await writer.get(p + "cas")
            assert cas is not None and cas.mod_revision == cas.create_revision
            await close_watch(watch)
        finally:
            os.kill(pid, signal.SIGCONT)
            await kv.close()
            await writer.close()

    asyncio.run(body())
