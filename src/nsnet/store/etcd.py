"""``EtcdKV``: the ``KV`` protocol on a real etcd cluster (v3 API, 3.4 or later).

What each ``KV`` call is in etcd's terms; the transport (endpoints, failover, deadlines, TLS)
is ``store.etcd_http``:

- ``put`` with ``expect_mod_revision`` and every ``delete`` are one ``Txn`` (``put``'s compare is
  on the key's ``mod_revision``, an absent key comparing as 0, so ``0`` means "create only");
- a transaction whose answer is lost (a member killed or hung, a leader election) is settled,
  never reported as a failure it may not be: see "Lost answers" below;
- ``get`` and ``get_prefix`` are linearizable ranges (the default): a host never reads older
  state than a write it has been told about;
- ``watch`` keeps the revision after the last one it delivered and, when its stream breaks
  (a member killed, a restart), opens a new one from there on the next endpoint, for up to
  ``watch_retry`` seconds; so a consumer sees every change once, in order, across a member's
  death. Past that it raises ``Unavailable`` and the consumer lists again when etcd is back.
  ``Compacted`` when the revision asked for is gone.

Lost answers. etcd has no request ids, so a transaction sent again after its answer was lost
may apply twice (a second claim of a key the first one took reports a ``Conflict`` for the
caller's own write), and one reported failed may have landed, or may still land: a member
that holds the proposal (a new leader that inherited it, a stopped member resumed) commits it
later. So every transaction also compares one shared fence key (``fence_key``) against the
revision this client last saw it at, and on a failure reads the fence back. On a lost answer
the client:

1. **fences**: a blind put of the fence key (replayed on every member until one takes it).
   From that revision on, the lost transaction can never commit, because its fence compare
   fails; so whether it landed is now settled, and it can only have landed between the
   highest revision this client had seen before sending it and the fence;
2. **reads that history**: a watch from that revision over the keys the transaction writes
   (the fence among them, whose own put ends the search) yields every change in between; the
   transaction landed at revision R if R holds exactly its puts (values and leases) and
   deletes and nothing else of that key range, and its compares held at R - 1 (ranges read at
   that revision);
3. answers as if the answer had arrived (success with R's revision and deletions), or, if it
   did not land, sends it again: fenced, it cannot also land late.

Another client's in-flight transactions fail their fence compare when a fence moves; they see
the new fence revision in the failure answer and are sent again, which is safe since they did
not apply. Costs: nothing on the ordinary path (one compare and a failure-branch read in the
same request, one read of the fence per client lifetime); a lost answer costs a put, a short
watch and a few reads. When the cluster cannot be reached to fence, or the history is already
compacted, the outcome is unknowable and the call is ``Unavailable`` saying so.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nsnet.errors import Conflict, Invalid, NotFound, Unavailable
from nsnet.store.etcd_http import AnswerLost, EtcdError, GatewayClient, TlsFiles
from nsnet.store.kv import Compacted, KeyValue, WatchEvent, prefix_end

if TYPE_CHECKING:
    from nsnet.cluster.config import ClusterConfig

__all__ = ["FENCE_KEY", "EtcdKV"]

# Outside every prefix nsnet lists; written only by fences, never deleted (one key, forever).
FENCE_KEY = "/nsnet/txn-fence"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _key(key: str) -> str:
    return _b64(key.encode())


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(raw.get("key", "")).decode("utf-8", errors="surrogateescape"),
        value=base64.b64decode(raw.get("value", "")),
        mod_revision=int(raw.get("mod_revision", 0)),
        create_revision=int(raw.get("create_revision", 0)),
        lease=int(raw.get("lease", 0)),
    )


def _event(raw: dict[str, Any]) -> WatchEvent:
    if raw.get("type") == "DELETE":
        return WatchEvent("delete", _kv(raw.get("kv", {})))
    return WatchEvent("put", _kv(raw.get("kv", {})))  # PUT is 0, which JSON leaves out


def _put_op(key: str, value: bytes, lease: int) -> dict[str, Any]:
    op: dict[str, Any] = {"key": _key(key), "value": _b64(value)}
    if lease:
        op["lease"] = str(lease)
    return {"request_put": op}


def _compare(key: str, mod_revision: int) -> dict[str, Any]:
    return {"key": _key(key), "target": "MOD", "result": "EQUAL",
            "mod_revision": str(mod_revision)}


@dataclass(frozen=True)
class _Txn:
    """A transaction as the caller meant it (the fence compare is added when sending)."""

    compares: tuple[tuple[str, int], ...]
    puts: tuple[tuple[str, bytes, int], ...]
    deletes: tuple[str, ...]

    def ops(self) -> list[dict[str, Any]]:
        ops = [_put_op(k, v, lease) for k, v, lease in self.puts]
        return ops + [{"request_delete_range": {"key": _key(k)}} for k in self.deletes]

    def is_its_revision(self, events: list[WatchEvent]) -> bool:
        """Whether one revision's changes (within the key range watched) are exactly ours."""
        puts = {(e.kv.key, e.kv.value, e.kv.lease) for e in events if e.kind == "put"}
        deleted = {e.kv.key for e in events if e.kind == "delete"}
        return (puts == set(self.puts) and deleted <= set(self.deletes)
                and len(puts) + len(deleted) == len(events) and bool(events))


@dataclass(frozen=True)
class _Outcome:
    succeeded: bool
    revision: int
    deleted: int = 0


class EtcdKV:
    """``KV`` over etcd's JSON gateway; one instance per daemon, shared by all its users."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        tls: TlsFiles | None = None,
        deadline: float = 2.5,
        watch_retry: float = 5.0,
        txn_deadline: float = 6.0,
        stream_probe: float = 5.0,
        fence_key: str = FENCE_KEY,
    ) -> None:
        self._gw = GatewayClient(endpoints, tls=tls, deadline=deadline,
                                 stream_probe=stream_probe)
        self.watch_retry = watch_retry
        self.txn_deadline = txn_deadline
        self.fence_key = fence_key
        self._fence: int | None = None  # the fence's mod_revision as last seen
        self.lost_answers = 0  # settled by reading back: for tests and the curious

    @classmethod
    def from_config(cls, config: ClusterConfig) -> EtcdKV:
        """The store of ``--cluster-store``/``--cluster-store-opt`` as nsnet.cluster.config
        parsed and checked them (the one parser of those flags)."""
        tls = None
        if config.tls is not None:
            t = config.tls
            tls = TlsFiles(cacertfile=str(t.cacert) if t.cacert else None,
                           certfile=str(t.cert) if t.cert else None,
                           keyfile=str(t.key) if t.key else None)
        return cls([str(e) for e in config.endpoints], tls=tls)

    @property
    def endpoints(self) -> list[str]:
        return list(self._gw.endpoints)

    async def get(self, key: str) -> KeyValue | None:
        answer = await self._gw.call("/v3/kv/range", {"key": _key(key)})
        kvs = answer.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        body = {"key": _key(prefix), "range_end": _b64(prefix_end(prefix))}
        answer = await self._gw.call("/v3/kv/range", body)
        return [_kv(k) for k in answer.get("kvs") or []], _revision(answer)

    async def put(
        self, key: str, value: bytes, *, lease: int = 0, expect_mod_revision: int | None = None
    ) -> int:
        if expect_mod_revision is None:
            # Safe to replay: the key ends up holding this value either way.
            answer = await self._gw.call("/v3/kv/put", _put_op(key, value, lease)["request_put"])
            return _revision(answer)
        outcome = await self._apply(_Txn(((key, expect_mod_revision),), ((key, value, lease),),
                                         ()))
        if not outcome.succeeded:
            raise Conflict(f"{key}: changed by another writer (expected revision "
                           f"{expect_mod_revision})")
        return outcome.revision

    async def delete(self, key: str, *, expect_mod_revision: int | None = None) -> bool:
        # A transaction even when blind: replaying a delete that landed would report False.
        compares = () if expect_mod_revision is None else ((key, expect_mod_revision),)
        outcome = await self._apply(_Txn(compares, (), (key,)))
        if not outcome.succeeded:
            raise Conflict(f"{key}: changed by another writer (expected revision "
                           f"{expect_mod_revision})")
        return outcome.deleted > 0

    async def txn(
        self,
        compares: Sequence[tuple[str, int]],
        puts: Sequence[tuple[str, bytes, int]],
        deletes: Sequence[str],
    ) -> bool:
        outcome = await self._apply(_Txn(tuple(compares), tuple(puts), tuple(deletes)))
        return outcome.succeeded

    async def _apply(self, t: _Txn) -> _Outcome:
        """Send ``t`` until its outcome is known: answered, or settled after a lost answer."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.txn_deadline
        while True:
            fence = await self._fence_revision()
            floor = self._gw.revision  # ``t`` can only commit above this
            body = {"compare": [*(_compare(k, r) for k, r in t.compares),
                                _compare(self.fence_key, fence)],
                    "success": t.ops(),
                    "failure": [{"request_range": {"key": _key(self.fence_key)}}]}
            try:
                answer = await self._gw.call("/v3/kv/txn", body, idempotent=False)
            except NotFound as e:
                raise NotFound(f"{e.message} (lease expired or revoked)") from e
            except AnswerLost as lost:
                self.lost_answers += 1
                settled = await self._settle(t, fence, floor, lost)
                if settled is not None:
                    return settled
                # It did not land, and the fence keeps it from landing late: send it again.
            else:
                if answer.get("succeeded"):
                    return _Outcome(True, _revision(answer), _deleted(answer))
                now = _fence_in(answer)
                if now == fence:
                    return _Outcome(False, _revision(answer))  # one of the caller's compares
                self._fence = now  # someone fenced meanwhile: nothing applied, send again
            if loop.time() >= end:
                raise Unavailable("cluster store: a transaction was not applied: every attempt "
                                  "within the deadline was lost (none of them landed)")

    async def _fence_revision(self) -> int:
        if self._fence is None:
            held = await self.get(self.fence_key)  # also gives the client a revision floor
            self._fence = held.mod_revision if held else 0
        return self._fence

    async def _settle(self, t: _Txn, fence: int, floor: int, lost: AnswerLost) -> _Outcome | None:
        """The outcome of ``t``, whose answer was lost: None if it did not land."""
        try:
            fenced = _revision(await self._gw.call(
                "/v3/kv/put", {"key": _key(self.fence_key), "value": ""}))
        except Unavailable as e:
            raise Unavailable(f"{lost.message}; the cluster cannot be reached to learn whether "
                              f"the write landed ({e.message}): read before retrying") from e
        self._fence = max(self._fence or 0, fenced)
        names = [k for k, _, _ in t.puts] + list(t.deletes) + [self.fence_key]
        start, end = min(n.encode() for n in names), max(n.encode() for n in names) + b"\0"
        try:
            history = await asyncio.wait_for(self._history(start, end, floor + 1, fenced),
                                             self._gw.deadline)
            for revision in sorted(history):
                if t.is_its_revision(history[revision]) and \
                        await self._held_at((*t.compares, (self.fence_key, fence)),
                                            revision - 1):
                    deleted = sum(1 for e in history[revision] if e.kind == "delete")
                    return _Outcome(True, revision, deleted)
        except (TimeoutError, Unavailable, EtcdError) as e:
            raise Unavailable(f"{lost.message}; whether the write landed could not be read "
                              f"back ({e}): read before retrying") from e
        return None

    async def _history(self, start: bytes, end: bytes, first: int,
                       fenced: int) -> dict[int, list[WatchEvent]]:
        """Every change to keys in [start, end) from revision ``first`` to before ``fenced``,
        by revision. The fence's own put at ``fenced`` is in the range and ends the read."""
        create = {"key": _b64(start), "range_end": _b64(end), "start_revision": str(first)}
        found: dict[int, list[WatchEvent]] = {}
        stream = self._gw.stream("/v3/watch", {"create_request": create})
        try:
            async for msg in stream:
                compacted = int(msg.get("compact_revision", 0))
                if compacted:
                    raise Compacted(compacted)
                for event in (_event(e) for e in msg.get("events") or []):
                    if event.kv.mod_revision >= fenced:
                        return found
                    found.setdefault(event.kv.mod_revision, []).append(event)
        finally:
            await stream.aclose()
        raise Unavailable("cluster store: the history stream ended early")

    async def _held_at(self, compares: Sequence[tuple[str, int]], revision: int) -> bool:
        for key, expected in compares:
            answer = await self._gw.call("/v3/kv/range",
                                         {"key": _key(key), "revision": str(revision)})
            kvs = answer.get("kvs") or []
            if (_kv(kvs[0]).mod_revision if kvs else 0) != expected:
                return False
        return True

    async def grant(self, ttl: int) -> int:
        if ttl <= 0:
            raise Invalid(f"lease TTL must be positive, not {ttl}")
        answer = await self._gw.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    async def keepalive_once(self, lease: int) -> int:
        answer = await self._gw.call("/v3/lease/keepalive", {"ID": str(lease)})
        ttl = int(answer.get("TTL", 0))
        if ttl <= 0:
            raise NotFound(f"lease {lease:x} not found (expired or revoked)")
        return ttl

    async def revoke(self, lease: int) -> None:
        try:
            await self._gw.call("/v3/lease/revoke", {"ID": str(lease)})
        except NotFound:
            pass  # already gone: revoking is idempotent

    async def time_to_live(self, lease: int) -> int:
        """Seconds left on ``lease``, -1 once it has expired or been revoked (read only: unlike
        ``keepalive_once`` it does not extend the lease)."""
        answer = await self._gw.call("/v3/lease/timetolive", {"ID": str(lease)})
        return int(answer.get("TTL", 0))  # the gateway omits a 0

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (etcd's own auto-compaction does this in
        production; tests use it to provoke ``Compacted``)."""
        await self._gw.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        loop = asyncio.get_running_loop()
        next_rev = max(start_revision, 0)
        failing_since: float | None = None
        while True:
            try:
                async for events, resume_at in self._watch_stream(prefix, next_rev):
                    failing_since = None
                    next_rev = resume_at
                    if events:
                        yield events
            except Compacted:
                raise
            except Unavailable:
                now = loop.time()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self.watch_retry:
                    raise
                await asyncio.sleep(0.1)

    async def _watch_stream(
        self, prefix: str, start: int
    ) -> AsyncIterator[tuple[list[WatchEvent], int]]:
        """(events, the revision to resume from) for each message of one watch stream."""
        create: dict[str, Any] = {"key": _key(prefix), "range_end": _b64(prefix_end(prefix)),
                                  "progress_notify": True}
        if start > 0:
            create["start_revision"] = str(start)
        resume_at = start
        async for msg in self._gw.stream("/v3/watch", {"create_request": create}):
            compacted = int(msg.get("compact_revision", 0))
            if compacted:
                raise Compacted(compacted)
            if msg.get("canceled"):
                raise Unavailable(f"etcd canceled the watch: {msg.get('cancel_reason', '')}")
            events = [_event(e) for e in msg.get("events") or []]
            if events:
                resume_at = events[-1].kv.mod_revision + 1
            elif not msg.get("created") or resume_at == 0:
                # A progress notice (etcd sends them only once nothing is pending) or the
                # creation of a watch "from now": nothing to miss up to the header's revision.
                # A creation from a past revision says nothing: its replay is still to come.
                resume_at = max(resume_at, _revision(msg) + 1)
            yield events, resume_at

    async def close(self) -> None:
        await self._gw.close()


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


def _deleted(answer: dict[str, Any]) -> int:
    return sum(int(r.get("response_delete_range", {}).get("deleted", 0))
               for r in answer.get("responses") or [])


def _fence_in(answer: dict[str, Any]) -> int:
    """The fence's mod_revision as a failed transaction's failure branch read it."""
    for r in answer.get("responses") or []:
        kvs = r.get("response_range", {}).get("kvs") or []
        return _kv(kvs[0]).mod_revision if kvs else 0
    return 0
