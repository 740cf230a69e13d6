"""Probing overlay containers from inside their namespaces, without forking anything.

A convergence figure of a few milliseconds cannot be measured with ``docker exec ping``: an
exec costs tens of milliseconds and a fork of ``ping`` 3-10 ms, more than what is measured.
So the benchmarks open their sockets *inside* a container's network namespace (the way the
daemon opens its own, ``NamespaceThread.call_in``) and then use them from the benchmark
process: an ICMP echo sent on such a socket leaves from the container's ``eth0`` exactly as
one from a process in the container would (same stack, same neighbour cache, same ARP).

- ``first_reply_ms``: send an echo every ``interval`` until the first reply, the elapsed
  time from the call. Its own overhead is measured by calling it on an address that is
  already reachable (one round trip plus the loop).
- ``probe_pairs``: many (socket, destination) pairs at once with one selector, resending
  the unanswered ones, for the scale run (500 containers x 5 targets in about a second).
- ``NeighbourWatch``: RTM_NEWNEIGH events of one namespace (an overlay namespace of a host)
  stamped on arrival by a reader thread, so "the peer entry exists on host B" is an instant
  in the same clock as the rest, not a poll.
"""

from __future__ import annotations

import os
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nsnet.kernel.netns import NamespaceThread

ICMP_ECHO_REPLY, ICMP_ECHO = 0, 8
RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH = 28
NDA_DST = 1
NLMSG_HDR = struct.Struct("=IHHII")
NDMSG = struct.Struct("=BxxxiHBB")
RTATTR = struct.Struct("=HH")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"nsnet-bench"
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(head + payload), ident,
                       seq) + payload


def parse_echo_reply(packet: bytes) -> tuple[str, int, int] | None:
    """(source, ident, seq) of an echo reply read from a raw ICMP socket (IP header first)."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if len(icmp) < 8 or icmp[0] != ICMP_ECHO_REPLY:
        return None
    ident, seq = struct.unpack("!HH", icmp[4:8])
    return socket.inet_ntoa(packet[12:16]), ident, seq


def icmp_socket(nst: NamespaceThread, ns_path: str) -> socket.socket:
    """A raw ICMP socket born in ``ns_path`` (raw, not ping sockets: a new namespace's
    ``ping_group_range`` admits no one)."""
    sock = nst.call_in(ns_path, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                       socket.IPPROTO_ICMP))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return


def _ident() -> int:
    return int.from_bytes(os.urandom(2), "big")


def first_reply_ms(sock: socket.socket, dst: str, *, interval: float = 0.001,
                   timeout: float = 3.0) -> float:
    """Milliseconds from the call to the first echo reply from ``dst`` (an echo every
    ``interval`` s until then); ``inf`` after ``timeout``."""
    drain(sock)
    ident, seq = _ident(), 0
    start = time.perf_counter()
    next_send, deadline = start, start + timeout
    while True:
        now = time.perf_counter()
        if now >= deadline:
            return float("inf")
        if now >= next_send:
            try:
                sock.sendto(echo_request(ident, seq & 0xFFFF), (dst, 0))
            except OSError:
                pass  # no route yet, or the neighbour queue is full: keep trying
            seq += 1
            next_send += interval
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_send, deadline) - now))
        if not ready:
            continue
        while True:
            try:
                packet = sock.recv(65535)
            except BlockingIOError:
                break
            got = parse_echo_reply(packet)
            if got is not None and got[0] == dst and got[1] == ident:
                return (time.perf_counter() - start) * 1000


SEND_ERRORS: dict[int, int] = {}  # errno -> count, over every probe_pairs call


@dataclass
class _Pair:
    sock: socket.socket
    dst: str
    ident: int
    answered_ms: float | None = None


def probe_pairs(pairs: Sequence[tuple[socket.socket, str]], *, timeout: float = 5.0,
                resend: float = 0.2) -> list[float | None]:
    """For each (socket, destination): ms until its first echo reply, None if none came
    within ``timeout``. Unanswered pairs are resent every ``resend`` s (a first ARP may be
    in flight). Idents are unique per pair, so one socket can carry several pairs."""
    state = [_Pair(s, d, i + 1) for i, (s, d) in enumerate(pairs)]
    by_sock: dict[int, list[_Pair]] = {}
    for p in state:
        by_sock.setdefault(p.sock.fileno(), []).append(p)
    sel = selectors.DefaultSelector()
    for group in by_sock.values():
        drain(group[0].sock)
        sel.register(group[0].sock, selectors.EVENT_READ, group)
    start = time.perf_counter()
    deadline, next_send, seq = start + timeout, start, 0
    try:
        while any(p.answered_ms is None for p in state):
            now = time.perf_counter()
            if now >= deadline:
                break
            if now >= next_send:
                _send_unanswered(state, seq)
                seq += 1
                next_send += resend
            for key, _ in sel.select(max(0.0, min(next_send, deadline) - now)):
                _take_replies(key.data, start)
    finally:
        sel.close()
    return [p.answered_ms for p in state]


def _send_unanswered(state: list[_Pair], seq: int) -> None:
    for p in state:
        if p.answered_ms is None:
            try:
                p.sock.sendto(echo_request(p.ident, seq & 0xFFFF), (p.dst, 0))
            except OSError as e:
                SEND_ERRORS[e.errno] = SEND_ERRORS.get(e.errno, 0) + 1


def _take_replies(group: list[_Pair], start: float) -> None:
    """Read one socket dry, marking the pairs of ``group`` (all on that socket) answered."""
    sock = group[0].sock
    while True:
        try:
            packet = sock.recv(65535)
        except BlockingIOError:
            return
        got = parse_echo_reply(packet)
        if got is None:
            continue
        for p in group:
            if p.answered_ms is None and (p.dst, p.ident) == got[:2]:
                p.answered_ms = (time.perf_counter() - start) * 1000


class NeighbourWatch:
    """When each IPv4 neighbour entry of one namespace first appeared (perf_counter time).

    A netlink socket subscribed to RTMGRP_NEIGH, opened in the namespace, read by a thread
    that only stamps and parses: the cost to the measured system is one multicast copy per
    entry. FDB entries (AF_BRIDGE) are ignored; a peer's neighbour and FDB entries are made
    back to back, so the neighbour's time stands for the pair.
    """

    def __init__(self, nst: NamespaceThread, ns_path: str) -> None:
        self._sock = nst.call_in(ns_path, lambda: socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE))
        self._sock.bind((0, RTMGRP_NEIGH))
        self._sock.settimeout(0.2)
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-neigh", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.perf_counter()
            for ip in _new_neighbours(data):
                self.seen.setdefault(ip, now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def _new_neighbours(data: bytes) -> list[str]:
    """IPv4 destinations of the RTM_NEWNEIGH messages in one netlink datagram."""
    out: list[str] = []
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind, _, _, _ = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size:
            break
        body = off + NLMSG_HDR.size
        if kind == RTM_NEWNEIGH and length >= NLMSG_HDR.size + NDMSG.size:
            family = NDMSG.unpack_from(data, body)[0]
            a = body + NDMSG.size
            end = off + length
            while family == socket.AF_INET and a + RTATTR.size <= end:
                alen, atype = RTATTR.unpack_from(data, a)
                if alen < RTATTR.size:
                    break
                if atype == NDA_DST and alen == RTATTR.size + 4:
                    out.append(socket.inet_ntoa(data[a + 4:a + 8]))
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return out
