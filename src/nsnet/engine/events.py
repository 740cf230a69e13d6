"""Docker's event stream: what happened to containers, networks and images, live and recent.

One ``EventBus`` per daemon. The facade (``engine/core.py``) calls ``emit`` after each
successful use-case, the container service after a process exits (``die``); ``GET /events``
subscribes. As in moby (``daemon/events``) the last 256 events are kept in a ring for a
``since`` that reaches back, and each subscriber gets a queue of at most 1024 events. moby skips
an event for a subscriber that did not take it within 100 ms; here a subscriber whose queue is
full is closed instead: its stream ends, the client sees the end (and can reconnect with
``since``) rather than a silent gap, and a client that stopped reading costs at most one full
queue, never the loop's time. ``emit`` never awaits, so no client can delay a use-case.

Filters and timestamps follow moby's ``events.Filter`` and ``timetypes.GetTimestamp``; both
are pure functions here, tested without a daemon.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from nsnet.errors import Invalid

RING_SIZE = 256  # moby's eventsLimit
QUEUE_SIZE = 1024  # moby's per-subscriber bufferSize

# Docker's event types; only the first three are ever produced by nsnet, the rest are
# accepted in a filter (as Docker does) and simply match nothing.
TYPES = ("container", "network", "image", "volume", "daemon", "plugin", "service", "node",
         "secret", "config", "builder")
FILTER_KEYS = ("type", "event", "container", "network", "image", "label", "scope")
# moby #25798: these actions carry the command ("exec_start: sh -c ..."), so a filter naming
# the bare action matches by prefix.
_PREFIX_ACTIONS = {"health_status", "exec_create", "exec_start"}


@dataclass(frozen=True)
class Event:
    """One event, in the fields Docker's ``events.Message`` carries."""

    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    time_nano: int

    def message(self) -> dict[str, Any]:
        """The JSON object ``GET /events`` sends. Container and image events also carry the
        pre-1.22 ``status``/``id``/``from`` fields, which docker-py and old scripts still
        read (moby filled them until API 1.52)."""
        msg: dict[str, Any] = {}
        if self.type in ("container", "image"):
            msg["status"] = self.action
            msg["id"] = self.actor_id
            if self.type == "container" and "image" in self.attributes:
                msg["from"] = self.attributes["image"]
        msg.update({
            "Type": self.type, "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": "local", "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        })
        return msg


# -- timestamps -----------------------------------------------------------------------------

_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}
_UNIX = re.compile(r"(\d{1,12})(?:\.(\d{0,9}))?")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})"
                   r"(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
                   r"([zZ]|[+-]\d{2}:\d{2})?")
_MAX_NS = (1 << 63) - 1


def _duration_ns(value: str) -> int:
    sign = -1 if value.startswith("-") else 1
    total = 0.0
    for num, unit in _DURATION_PART.findall(value):
        total += float(num) * _UNIT_NS[unit]
    return sign * int(total)


def parse_timestamp(value: str, now_ns: int | None = None) -> int | None:
    """Unix nanoseconds of a ``since``/``until`` value in any form the docker CLI accepts:
    unix seconds (``1700000000``, ``1700000000.5``), RFC3339 and its shorter forms (a date,
    date and hour, ...; local time without a zone), or a Go duration (``10m``, ``1h30m``)
    counted back from now. Empty is no bound (None)."""
    value = value.strip()
    if not value:
        return None
    now = time.time_ns() if now_ns is None else now_ns
    if value != "0" and _DURATION.fullmatch(value):
        return max(0, now - _duration_ns(value))
    m = _UNIX.fullmatch(value)
    if m:
        frac = (m.group(2) or "").ljust(9, "0")
        return int(m.group(1)) * 1_000_000_000 + int(frac)
    m = _DATE.fullmatch(value)
    if m is None:
        raise Invalid(f"failed to parse value as time or duration: {value[:60]!r}")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    if zone is None:
        tz: timezone | None = None
    elif zone in ("z", "Z"):
        tz = UTC
    else:
        off = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = timezone(-off if zone[0] == "-" else off)
    try:
        dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                      tzinfo=tz)
        if tz is None:
            dt = dt.astimezone()  # local time, as Docker's ParseInLocation
    except (ValueError, OverflowError) as e:
        raise Invalid(f"failed to parse value as time: {value[:60]!r}: {e}") from None
    ns = int(dt.timestamp()) * 1_000_000_000 + int((frac or "").ljust(9, "0"))
    if ns < 0:
        raise Invalid(f"invalid time {value[:60]!r}: before 1970")
    return ns


def check_range(since: int | None, until: int | None) -> None:
    for v in (since, until):
        if v is not None and v > _MAX_NS:
            raise Invalid("time out of range")
    if since is not None and until is not None and until < since:
        raise Invalid("`since` time cannot be after `until` time")


# -- filters --------------------------------------------------------------------------------

def check_filters(filters: Mapping[str, list[str]]) -> None:
    """Refuse what nsnet would otherwise drop: unknown keys and types, label filters that
    are not ``key`` or ``key=value``."""
    for k in filters:
        if k not in FILTER_KEYS:
            raise Invalid(f"invalid filter '{k}'")
    for t in filters.get("type", []):
        if t not in TYPES:
            raise Invalid(f"invalid filter 'type={t}'")
    for s in filters.get("scope", []):
        if s not in ("local", "swarm"):
            raise Invalid(f"invalid filter 'scope={s}'")


def _exact(filters: Mapping[str, list[str]], key: str, *values: str) -> bool:
    wanted = filters.get(key)
    return not wanted or any(v in wanted for v in values)


def _fuzzy(filters: Mapping[str, list[str]], key: str, *values: str) -> bool:
    wanted = filters.get(key)
    return not wanted or any(v and v.startswith(w) for w in wanted for v in values)


def _strip_tag(ref: str) -> str:
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


def _labels_match(filters: Mapping[str, list[str]], attrs: Mapping[str, str]) -> bool:
    for want in filters.get("label", []):
        k, eq, v = want.partition("=")
        if k not in attrs or (eq and attrs[k] != v):
            return False
    return True


def event_matches(ev: Event, filters: Mapping[str, list[str]]) -> bool:
    """moby's ``Filter.Include``: each key is an AND, the values of one key an OR. A
    ``container`` or ``network`` filter matches an ID or name prefix, and, as in Docker, holds
    for every event, so ``container=web`` shows no network events."""
    events = filters.get("event")
    if events and any(e in _PREFIX_ACTIONS for e in events):
        if not any(ev.action.startswith(e) for e in events):
            return False
    elif not _exact(filters, "event", ev.action):
        return False
    if not _exact(filters, "type", ev.type) or not _exact(filters, "scope", "local"):
        return False
    name = ev.attributes.get("name", "")
    for kind in ("container", "network"):
        if kind in filters and not (ev.type == kind and _fuzzy(filters, kind, ev.actor_id,
                                                                name)):
            return False
    if "image" in filters:
        image = ev.attributes.get("name" if ev.type == "image" else "image", "")
        ids = ev.actor_id if ev.type == "image" else ""
        if not _exact(filters, "image", *(x for x in (ids, image, _strip_tag(image)) if x)):
            return False
    return _labels_match(filters, ev.attributes)


# -- the bus --------------------------------------------------------------------------------

@dataclass(eq=False)
class Subscription:
    """One ``GET /events`` client: a bounded queue the bus fills and the route drains."""

    filters: Mapping[str, list[str]]
    since: int | None = None
    until: int | None = None
    queue: deque[Event] = field(default_factory=deque)
    overflowed: bool = False
    closed: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, ev: Event) -> bool:
        if self.since is not None and ev.time_nano < self.since:
            return False
        if self.until is not None and ev.time_nano > self.until:
            return False
        return event_matches(ev, self.filters)

    def offer(self, ev: Event) -> None:
        if self.closed or not self.wants(ev):
            return
        if len(self.queue) >= QUEUE_SIZE:
            self.overflowed = True
            self.closed = True
            self.queue.clear()  # the memory goes now, not when the client reads again
        else:
            self.queue.append(ev)
        self._wake.set()

    async def next(self, timeout: float | None) -> Event | None:
        """The next event, or None once closed (overflowed) or after ``timeout`` seconds."""
        if not self.queue and not self.closed:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        if self.closed or not self.queue:
            return None
        return self.queue.popleft()


class EventBus:
    """The ring of recent events and the live subscribers."""

    def __init__(self, ring_size: int = RING_SIZE) -> None:
        self.ring: deque[Event] = deque(maxlen=ring_size)
        self.subscribers: set[Subscription] = set()

    def emit(self, type_: str, action: str, actor_id: str,
             attributes: Mapping[str, str] | None = None) -> Event:
        """Record and publish one event; never blocks, never raises for a slow client."""
        ev = Event(type_, action, actor_id, dict(attributes or {}), time.time_ns())
        self.ring.append(ev)
        for sub in list(self.subscribers):
            sub.offer(ev)
            if sub.closed:
                self.subscribers.discard(sub)
        return ev

    def subscribe(self, filters: Mapping[str, list[str]], since: int | None,
                  until: int | None) -> tuple[list[Event], Subscription]:
        """The ring's events in [since, until] that pass the filters (none without either
        bound, as moby) and a subscription for what comes next; taken together so nothing
        falls between them."""
        sub = Subscription(filters=filters, since=since, until=until)
        past: list[Event] = []
        if since is not None or until is not None:
            past = [e for e in self.ring if sub.wants(e)]
        self.subscribers.add(sub)
        return past, sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        self.subscribers.discard(sub)


# -- what each event carries ----------------------------------------------------------------

def container_attributes(name: str, image: str, labels: Mapping[str, str],
                         **extra: str) -> dict[str, str]:
    """Docker's container actor: its labels, then ``image`` and ``name`` (which win over a
    label of the same key), then the action's own (exitCode, signal, execID, ...)."""
    return {**labels, "image": image, "name": name, **extra}
