"""Announce a new interface's addresses: gratuitous ARP (IPv4), unsolicited NA (IPv6).

Every join draws a random MAC (as Docker 28 does) while IPAM hands the lowest free address
back out, so after a ``restart`` or an ``rm`` + ``run`` a peer's neighbour entry still names a
MAC that is gone. Until the kernel gives up on it (reachable time, then probes: 28-70 s
measured) the peer's packets go nowhere. A gratuitous ARP request (sender IP = target IP)
overrides an existing entry on every Linux peer even inside its lock time, and an unsolicited
NA with the Override flag does the same for IPv6; both leave the entry STALE with the new MAC,
so the next packet goes to the new container.

The kernel's own ``arp_notify`` sends its gratuitous ARP at NETDEV_UP, before the bridge has
seen the veth's carrier and put the port in forwarding state: measured, it never reached the
peer. So the frames are built here and sent on an ``AF_PACKET`` socket opened inside the
sandbox (protocol 0: it never receives), once right after the link is up and twice more later
(``REPEATS``) from one timer thread, off the request path, in case the first one met a port
that was not forwarding yet. Nothing forks.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
NA_OVERRIDE = 0x20000000
# Seconds after the first announcement; Docker also sends three.
REPEATS = (0.05, 0.5)


def garp_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request for our own address: the form every Linux peer accepts as
    gratuitous (a reply would also need the target MAC to equal the sender's)."""
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip.packed + bytes(6) + ip.packed
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def unsolicited_na_frame(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes, Override set,
    carrying our link-layer address; hop limit 255 or receivers drop it."""
    body = struct.pack("!I", NA_OVERRIDE) + ip.packed + bytes([2, 1]) + mac
    pseudo = ip.packed + ALL_NODES.packed + struct.pack("!I", 4 + len(body)) + b"\0\0\0\x3a"
    csum = _checksum(pseudo + bytes([136, 0, 0, 0]) + body)
    icmp = bytes([136, 0]) + struct.pack("!H", csum) + body
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + ip.packed + ALL_NODES.packed
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + icmp


def announcement_frames(mac: bytes, addresses: Iterable[str]) -> list[bytes]:
    """One frame per address (``addr`` or ``addr/len``)."""
    out = []
    for a in addresses:
        ip = ipaddress.ip_interface(a).ip
        if isinstance(ip, ipaddress.IPv4Address):
            out.append(garp_frame(mac, ip))
        else:
            out.append(unsolicited_na_frame(mac, ip))
    return out


class Announcer:
    """Sends announcements now and again at ``REPEATS``; owns the sockets it is handed.

    A pending repeat holds its socket, and so the sandbox's namespace, for at most the last
    delay (0.5 s); ``close`` drops them all.
    """

    def __init__(self, repeats: Sequence[float] = REPEATS) -> None:
        self._repeats = tuple(repeats)
        self._heap: list[tuple[float, int, socket.socket, list[bytes], int]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nsnet-announce", daemon=True)
        self._thread.start()

    def announce(self, sock: socket.socket, ifname: str, addresses: Iterable[str]) -> None:
        """``sock``: an AF_PACKET socket opened in the interface's namespace (bound here, so
        the name is looked up there). The MAC is the link's own, read back from the socket:
        an ipvlan's is its parent's, not the endpoint's."""
        try:
            sock.bind((ifname, 0))
            mac = sock.getsockname()[4]
            frames = announcement_frames(mac, addresses)
            if not frames or not self._send(sock, frames):
                sock.close()
                return
        except OSError as e:
            log.warning("announcing %s: %s", ifname, e)
            sock.close()
            return
        with self._cv:
            if self._closed or not self._repeats:
                sock.close()
                return
            heapq.heappush(self._heap, (time.monotonic() + self._repeats[0], next(self._seq),
                                        sock, frames, 1))
            self._cv.notify()

    @staticmethod
    def _send(sock: socket.socket, frames: list[bytes]) -> bool:
        """False when the link is gone or down for good: no point in repeating."""
        for f in frames:
            try:
                sock.send(f)
            except OSError as e:
                log.debug("announcement not sent: %s", e)
                return False
        return True

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or
                                            self._heap[0][0] > time.monotonic()):
                    self._cv.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                _, _, sock, frames, n = heapq.heappop(self._heap)
            ok = self._send(sock, frames)
            with self._cv:
                if ok and n < len(self._repeats) and not self._closed:
                    due = time.monotonic() + self._repeats[n] - self._repeats[n - 1]
                    heapq.heappush(self._heap, (due, next(self._seq), sock, frames, n + 1))
                    continue
            sock.close()

    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            socks = [s for _, _, s, _, _ in self._heap]
            self._heap.clear()
            self._cv.notify()
        for s in socks:
            s.close()
        self._thread.join(timeout=2)
