"""Events without a daemon: Docker's timestamp forms, moby's filter rules, the bounded ring and
queues of the bus, and ``GET /events`` over the API's fake backend."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_api_routes import FakeBackend, serve
from test_engine_usecases import World

from nsnet.engine.containers import ContainerCreate
from nsnet.engine.events import (
    QUEUE_SIZE,
    RING_SIZE,
    Event,
    EventBus,
    check_filters,
    check_range,
    container_attributes,
    event_matches,
    parse_timestamp,
)
from nsnet.errors import Invalid, NsnetError

S = 1_000_000_000
NOW = 1_700_000_000 * S


# -- timestamps -----------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("1700000000", 1_700_000_000 * S),
    ("1700000000.5", 1_700_000_000 * S + 500_000_000),
    ("1700000000.000000001", 1_700_000_000 * S + 1),
    ("10m", NOW - 600 * S),
    ("1h30m", NOW - 5400 * S),
    ("1.5s", NOW - 1_500_000_000),
    ("2023-11-14T22:13:20Z", 1_700_000_000 * S),
    ("2023-11-14T22:13:20.25Z", 1_700_000_000 * S + 250_000_000),
    ("2023-11-15T00:13:20+02:00", 1_700_000_000 * S),
    ("2023-11-14T22:13:20.123456789-00:00", 1_700_000_000 * S + 123_456_789),
])
def test_timestamps_in_every_form_the_docker_cli_sends(value: str, expected: int) -> None:
    assert parse_timestamp(value, NOW) == expected


def test_a_timestamp_without_a_zone_is_local_time() -> None:
    local = datetime(2023, 11, 14, 22, 13).astimezone()
    assert parse_timestamp("2023-11-14T22:13", NOW) == int(local.timestamp()) * S
    day = datetime(2023, 11, 14).astimezone()
    assert parse_timestamp("2023-11-14", NOW) == int(day.timestamp()) * S


def test_no_timestamp_is_no_bound_and_garbage_is_refused() -> None:
    assert parse_timestamp("", NOW) is None
    for bad in ("yesterday", "10x", "2023-13-01", "1e9", "-5", "2023-11-14T25:00Z"):
        with pytest.raises(Invalid):
            parse_timestamp(bad, NOW)


def test_since_after_until_is_refused() -> None:
    check_range(1, 2)
    check_range(None, 2)
    with pytest.raises(Invalid, match="cannot be after"):
        check_range(3, 2)


# -- filters --------------------------------------------------------------------------------

def _c(action: str, cid: str = "abc123", name: str = "web", image: str = "busybox:latest",
       labels: dict[str, str] | None = None, **extra: str) -> Event:
    return Event("container", action, cid,
                 container_attributes(name, image, labels or {}, **extra), NOW)


def _n(action: str, nid: str = "net999", name: str = "front", **extra: str) -> Event:
    return Event("network", action, nid, {"name": name, "type": "bridge", **extra}, NOW)


def test_filters_follow_moby() -> None:
    start, conn = _c("start"), _n("connect", container="abc123")
    assert event_matches(start, {})
    assert event_matches(start, {"type": ["container"]})
    assert not event_matches(conn, {"type": ["container"]})
    assert event_matches(start, {"event": ["start", "die"]})
    assert not event_matches(start, {"event": ["die"]})
    # container: an ID or name prefix, and no other type's event passes it (as in Docker)
    assert event_matches(start, {"container": ["abc"]})
    assert event_matches(start, {"container": ["we"]})
    assert not event_matches(start, {"container": ["xyz"]})
    assert not event_matches(conn, {"container": ["abc"]})
    assert event_matches(conn, {"network": ["front"]})
    assert event_matches(conn, {"network": ["net9"]})
    assert not event_matches(start, {"network": ["front"]})
    # image: exact, with or without the tag
    assert event_matches(start, {"image": ["busybox"]})
    assert event_matches(start, {"image": ["busybox:latest"]})
    assert not event_matches(start, {"image": ["busy"]})
    # labels: all of them, key alone or key=value
    labelled = _c("start", labels={"tier": "web", "x": "1"})
    assert event_matches(labelled, {"label": ["tier=web", "x"]})
    assert not event_matches(labelled, {"label": ["tier=db"]})
    assert not event_matches(labelled, {"label": ["tier=web", "y"]})


def test_exec_actions_match_by_prefix() -> None:
    ev = _c("exec_start: sh -c true", execID="e1")
    assert event_matches(ev, {"event": ["exec_start"]})
    assert not event_matches(ev, {"event": ["exec_create"]})


def test_image_events_match_their_name() -> None:
    ev = Event("image", "import", "sha256:1", {"name": "root:v1"}, NOW)
    assert event_matches(ev, {"image": ["root"]})
    assert event_matches(ev, {"image": ["sha256:1"]})
    assert not event_matches(ev, {"image": ["busybox"]})


def test_unknown_filters_are_refused() -> None:
    check_filters({"type": ["volume"], "event": ["x"], "label": ["a=b"]})
    with pytest.raises(Invalid, match="invalid filter 'colour'"):
        check_filters({"colour": ["red"]})
    with pytest.raises(Invalid, match="type=box"):
        check_filters({"type": ["box"]})


def test_the_message_has_docker_shape() -> None:
    m = _c("die", exitCode="3").message()
    assert m["Type"] == "container" and m["Action"] == "die"
    assert m["Actor"] == {"ID": "abc123", "Attributes": {"image": "busybox:latest",
                                                         "name": "web", "exitCode": "3"}}
    assert (m["status"], m["id"], m["from"]) == ("die", "abc123", "busybox:latest")
    assert m["scope"] == "local" and m["time"] == 1_700_000_000 and m["timeNano"] == NOW
    n = _n("create").message()
    assert "status" not in n and n["Actor"]["Attributes"] == {"name": "front", "type": "bridge"}


def test_labels_cannot_hide_the_name_and_image() -> None:
    attrs = container_attributes("web", "busybox", {"name": "evil", "image": "x", "a": "b"})
    assert attrs == {"name": "web", "image": "busybox", "a": "b"}


# -- the bus --------------------------------------------------------------------------------

def test_the_ring_keeps_the_last_256() -> None:
    bus = EventBus()
    for i in range(RING_SIZE + 50):
        bus.emit("container", "create", f"c{i}")
    assert len(bus.ring) == RING_SIZE
    assert bus.ring[0].actor_id == "c50"
    past, _ = bus.subscribe({}, 0, None)
    assert [e.actor_id for e in past] == [f"c{i}" for i in range(50, RING_SIZE + 50)]


def test_replay_needs_since_or_until_and_respects_both() -> None:
    bus = EventBus()
    evs = [bus.emit("container", "create", f"c{i}") for i in range(5)]
    assert bus.subscribe({}, None, None)[0] == []
    past, _ = bus.subscribe({}, evs[1].time_nano, evs[3].time_nano)
    assert [e.actor_id for e in past] == ["c1", "c2", "c3"]
    past, _ = bus.subscribe({"event": ["destroy"]}, 0, None)
    assert past == []


def test_a_client_that_stops_reading_is_closed_at_a_bounded_queue() -> None:
    async def main() -> None:
        bus = EventBus()
        _, slow = bus.subscribe({}, None, None)
        _, other = bus.subscribe({"type": ["network"]}, None, None)
        for i in range(QUEUE_SIZE):
            bus.emit("container", "create", f"c{i}")
        assert len(slow.queue) == QUEUE_SIZE and not slow.closed
        bus.emit("container", "create", "one-too-many")
        assert slow.closed and slow.overflowed and len(slow.queue) == 0
        assert slow not in bus.subscribers
        assert other in bus.subscribers and not other.queue  # filtered: never queued
        assert await slow.next(1.0) is None  # the stream ends at once

    asyncio.run(main())


def test_a_subscriber_wakes_on_emit_and_times_out_quietly() -> None:
    async def main() -> None:
        bus = EventBus()
        _, sub = bus.subscribe({}, None, None)
        assert await sub.next(0.01) is None and not sub.closed
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, bus.emit, "network", "create", "n1")
        ev = await sub.next(2.0)
        assert ev is not None and ev.actor_id == "n1"
        bus.unsubscribe(sub)
        assert sub not in bus.subscribers

    asyncio.run(main())


# -- GET /events over the fake backend ------------------------------------------------------

def _lines(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line]


def test_route_replays_and_ends_at_an_until_in_the_past() -> None:
    fake = FakeBackend()
    a = fake.events.emit("container", "create", "c1", {"name": "a", "image": "busybox"})
    fake.events.emit("network", "create", "n1", {"name": "front", "type": "bridge"})

    async def body(client: Any) -> list[dict[str, Any]]:
        r = await client.get("/v1.45/events", params={
            "since": str(a.time_nano // S), "until": str(time.time() - 0.0001),
            "filters": json.dumps({"type": {"container": True}})})
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        return _lines(await asyncio.wait_for(r.read(), 5))

    got = serve(fake, body)
    assert [(m["Type"], m["Action"], m["id"]) for m in got] == [("container", "create", "c1")]
    assert fake.seen["subscribe_events"]["filters"] == {"type": ["container"]}
    assert not fake.events.subscribers  # unsubscribed when the stream ended


def test_route_streams_live_events_until_until() -> None:
    fake = FakeBackend()

    async def body(client: Any) -> list[dict[str, Any]]:
        until = time.time() + 0.5
        r = await client.get("/events", params={"until": f"{until:.9f}"})
        assert r.status == 200
        fake.events.emit("image", "import", "sha256:x", {"name": "root:v1"})
        t0 = time.monotonic()
        raw = await asyncio.wait_for(r.read(), 5)
        assert time.monotonic() - t0 < 2.5  # ended at until, not at the next poll or never
        return _lines(raw)

    got = serve(fake, body)
    assert [(m["Type"], m["Action"], m["status"]) for m in got] == [
        ("image", "import", "import")]


def test_route_refuses_bad_input_before_subscribing() -> None:
    fake = FakeBackend()

    async def body(client: Any) -> list[tuple[int, str]]:
        out = []
        for params in ({"since": "soon"}, {"until": "1e5"}, {"since": "20", "until": "10"},
                       {"filters": json.dumps({"colour": ["red"]})},
                       {"filters": "{not json"}):
            r = await client.get("/events", params=params)
            out.append((r.status, (await r.json())["message"]))
        return out

    got = serve(fake, body)
    assert all(status == 400 and msg for status, msg in got), got
    assert "subscribe_events" not in fake.calls


# -- the engine's facade over fakes ---------------------------------------------------------

def _actions(bus: EventBus) -> list[tuple[str, str, str]]:
    return [(e.type, e.action, e.attributes.get("signal", e.attributes.get("exitCode", "")))
            for e in bus.ring]


def test_the_facade_reports_a_lifecycle_in_docker_order(tmp_path: Path) -> None:
    w = World(tmp_path)
    bus = w.engine.events
    net = w.network("front", "10.77.0.0/24")

    async def lifecycle() -> None:
        e = w.engine
        c = e.create_container(ContainerCreate(image="busybox", name="web", cmd=["sleep", "9"],
                                               network_mode="front", labels={"tier": "web"}))
        await e.start_container(c.id)
        await e.stop_container(c.id)
        await e.remove_container(c.id)
        rm = e.create_container(ContainerCreate(image="busybox", name="tmp", cmd=["true"],
                                                auto_remove=True))
        await e.start_container(rm.id)
        await e.kill_container(rm.id)
        await e.wait_container(rm.id, "removed")
        await e.remove_network(net)

    w.run(lifecycle())
    assert _actions(bus)[0] == ("network", "create", "")
    assert _actions(bus)[1:] == [
        ("container", "create", ""), ("network", "connect", ""), ("container", "start", ""),
        ("container", "kill", "15"), ("container", "die", "143"),
        ("network", "disconnect", ""), ("container", "stop", ""),
        ("container", "destroy", ""),
        ("container", "create", ""), ("network", "connect", ""), ("container", "start", ""),
        ("container", "kill", "9"), ("container", "die", "137"),
        ("network", "disconnect", ""),
        ("container", "destroy", ""),  # --rm: reported by the removal itself
        ("network", "destroy", ""),
    ]
    joins = [e for e in bus.ring if e.action in ("connect", "disconnect")]
    assert [e.attributes["name"] for e in joins] == ["front", "front", "bridge", "bridge"]
    web = [e for e in bus.ring if e.attributes.get("name") == "web"]
    assert all(e.attributes["tier"] == "web" and e.attributes["image"] == "busybox"
               for e in web)


def test_a_refused_call_reports_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    bus = w.engine.events
    before = len(bus.ring)

    async def refused() -> None:
        c = w.engine.create_container(ContainerCreate(image="busybox", name="x", cmd=["true"]))
        with pytest.raises(Invalid):
            await w.engine.stop_container(c.id, timeout=float("nan"))
        with pytest.raises(NsnetError):
            await w.engine.kill_container(c.id)  # not running: 409

    w.run(refused())
    assert [e.action for e in list(bus.ring)[before:]] == ["create"]
