"""``EtcdKV``: the ``KV`` protocol on a real etcd cluster (v3 API, 3.4 or later).

What each ``KV`` call is in etcd's terms; the transport (endpoints, failover, deadlines, TLS)
is ``store.etcd_http``:

- ``put``/``delete`` with ``expect_mod_revision`` are one ``Txn`` comparing the key's
  ``mod_revision`` (an absent key compares as 0, so ``0`` means "create only");
- ``get`` and ``get_prefix`` are linearizable ranges (the default): a host never reads older
  state than a write it has been told about;
- ``watch`` keeps the revision after the last one it delivered and, when its stream breaks
  (a member killed, a restart), opens a new one from there on the next endpoint, for up to
  ``watch_retry`` seconds; so a consumer sees every change once, in order, across a member's
  death. Past that it raises ``Unavailable`` and the consumer lists again when etcd is back.
  ``Compacted`` when the revision asked for is gone.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from nsnet.errors import Conflict, Invalid, NotFound, Unavailable
from nsnet.store.etcd_http import GatewayClient, TlsFiles
from nsnet.store.kv import Compacted, KeyValue, WatchEvent, prefix_end

if TYPE_CHECKING:
    from nsnet.cluster.config import ClusterConfig

__all__ = ["EtcdKV"]


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


class EtcdKV:
    """``KV`` over etcd's JSON gateway; one instance per daemon, shared by all its users."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        tls: TlsFiles | None = None,
        deadline: float = 2.5,
        watch_retry: float = 5.0,
    ) -> None:
        self._gw = GatewayClient(endpoints, tls=tls, deadline=deadline)
        self.watch_retry = watch_retry

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
            answer = await self._gw.call("/v3/kv/put", _put_op(key, value, lease)["request_put"])
            return _revision(answer)
        answer = await self._txn([_compare(key, expect_mod_revision)], [_put_op(key, value, lease)])
        if not answer.get("succeeded"):
            raise Conflict(f"{key}: changed by another writer (expected revision "
                           f"{expect_mod_revision})")
        return _revision(answer)

    async def delete(self, key: str, *, expect_mod_revision: int | None = None) -> bool:
        if expect_mod_revision is None:
            answer = await self._gw.call("/v3/kv/deleterange", {"key": _key(key)})
            return int(answer.get("deleted", 0)) > 0
        op = {"request_delete_range": {"key": _key(key)}}
        answer = await self._txn([_compare(key, expect_mod_revision)], [op])
        if not answer.get("succeeded"):
            raise Conflict(f"{key}: changed by another writer (expected revision "
                           f"{expect_mod_revision})")
        deleted = answer["responses"][0].get("response_delete_range", {}).get("deleted", 0)
        return int(deleted) > 0

    async def txn(
        self,
        compares: Sequence[tuple[str, int]],
        puts: Sequence[tuple[str, bytes, int]],
        deletes: Sequence[str],
    ) -> bool:
        ops = [_put_op(k, v, lease) for k, v, lease in puts]
        ops += [{"request_delete_range": {"key": _key(k)}} for k in deletes]
        answer = await self._txn([_compare(k, r) for k, r in compares], ops)
        return bool(answer.get("succeeded"))

    async def _txn(
        self, compares: list[dict[str, Any]], success: list[dict[str, Any]]
    ) -> dict[str, Any]:
        try:
            body = {"compare": compares, "success": success}
            return await self._gw.call("/v3/kv/txn", body, idempotent=False)
        except NotFound as e:
            raise NotFound(f"{e.message} (lease expired or revoked)") from e

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
