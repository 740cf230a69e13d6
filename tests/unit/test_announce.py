"""Gratuitous ARP / unsolicited NA frames and their repeat schedule (no root, no kernel)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from typing import Any, cast

from nsnet.kernel.announce import Announcer, _checksum, announcement_frames

MAC = bytes.fromhex("02aabbccddee")


def test_gratuitous_arp_is_a_broadcast_request_for_our_own_address() -> None:
    (f,) = announcement_frames(MAC, ["172.18.0.2/16"])
    assert f[:6] == b"\xff" * 6 and f[6:12] == MAC and f[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", f[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    ip = ipaddress.IPv4Address("172.18.0.2").packed
    assert f[22:28] == MAC and f[28:32] == ip and f[32:38] == bytes(6) and f[38:42] == ip


def test_unsolicited_na_is_valid_icmpv6_to_all_nodes() -> None:
    (f,) = announcement_frames(MAC, ["fd00:8a::3/64"])
    assert f[:6] == b"\x33\x33\x00\x00\x00\x01" and f[6:12] == MAC and f[12:14] == b"\x86\xdd"
    ip6 = f[14:54]
    payload_len, nxt, hops = struct.unpack("!HBB", ip6[4:8])
    src, dst = ip6[8:24], ip6[24:40]
    assert nxt == 58 and hops == 255, "receivers drop NAs with a hop limit below 255"
    assert src == ipaddress.IPv6Address("fd00:8a::3").packed
    assert dst == ipaddress.IPv6Address("ff02::1").packed
    icmp = f[54:]
    assert len(icmp) == payload_len == 32
    assert icmp[0] == 136 and icmp[1] == 0
    flags = struct.unpack("!I", icmp[4:8])[0]
    assert flags == 0x20000000, "Override only: not Router, not Solicited"
    assert icmp[8:24] == src and icmp[24:26] == b"\x02\x01" and icmp[26:32] == MAC
    pseudo = src + dst + struct.pack("!I", len(icmp)) + b"\0\0\0\x3a"
    assert _checksum(pseudo + icmp) == 0, "checksum must verify"


def test_checksum_known_value() -> None:
    # RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2, complement 220d.
    assert _checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


class FakeSock:
    def __init__(self, fail_after: int = 99) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.closed = threading.Event()
        self.bound: object = None
        self.fail_after = fail_after

    def bind(self, addr: object) -> None:
        self.bound = addr

    def getsockname(self) -> tuple[Any, ...]:
        return ("eth0", 0, 0, 1, MAC)

    def send(self, data: bytes) -> int:
        if len(self.sent) >= self.fail_after:
            raise OSError("ENETDOWN")
        self.sent.append((time.monotonic(), data))
        return len(data)

    def close(self) -> None:
        self.closed.set()


def test_announcer_sends_now_and_at_each_repeat_then_closes() -> None:
    a = Announcer(repeats=(0.02, 0.06))
    try:
        s = FakeSock()
        t = time.monotonic()
        a.announce(cast(socket.socket, s), "eth0", ["10.0.0.2/24", "fd00::2/64"])
        assert s.bound == ("eth0", 0)
        assert len(s.sent) == 2, "the first announcement goes out before announce returns"
        assert s.closed.wait(2)
        assert len(s.sent) == 6
        times = [ts - t for ts, _ in s.sent[::2]]
        assert times[1] >= 0.02 and times[2] >= 0.06
        assert a.pending() == 0
    finally:
        a.close()


def test_announcer_stops_when_the_link_is_gone() -> None:
    a = Announcer(repeats=(0.01, 0.02))
    try:
        s = FakeSock(fail_after=1)
        a.announce(cast(socket.socket, s), "eth0", ["10.0.0.2/24"])
        assert s.closed.wait(2)
        assert len(s.sent) == 1
    finally:
        a.close()


def test_close_drops_pending_sockets() -> None:
    a = Announcer(repeats=(10.0,))
    s = FakeSock()
    a.announce(cast(socket.socket, s), "eth0", ["10.0.0.2/24"])
    assert a.pending() == 1
    a.close()
    assert s.closed.is_set() and a.pending() == 0
