"""The ``--cluster-store``, ``--cluster-advertise`` and ``--cluster-store-opt`` flags, checked.

Docker's pre-Swarm spelling is kept on purpose (operators who ran overlay networks before 23.0
type these flags from memory), with three deliberate differences, all refusals rather than
guesses:

- only ``etcd://`` is a store (Consul and ZooKeeper are refused by name), and a path after the
  endpoints (Docker's key prefix) is refused: nsnet's keys live under ``/nsnet/v1/``;
- ``--cluster-advertise`` names the address peers send VXLAN to (the VTEP), not an API port:
  nsnet's API is a unix socket that never leaves the host. The optional ``:port`` is therefore
  the UDP port this host's VXLAN device listens on (4789, IANA's, by default); peers address
  their forwarding entries to it;
- every flag needs the others it makes sense with: an advertise address or store options
  without a store, or a store without an advertise address, is an error at start, not a
  half-configured cluster discovered at the first ``network create -d overlay``.

Everything is parsed once at start into frozen dataclasses; nothing here talks to the store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import re
import socket
import stat
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nsnet.errors import Invalid

DEFAULT_ETCD_PORT = 2379
DEFAULT_VXLAN_PORT = 4789
TLS_OPTIONS = ("kv.cacertfile", "kv.certfile", "kv.keyfile")
STORE_NAMES = {"consul": "Consul", "zk": "ZooKeeper"}

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Linux's IFNAMSIZ is 16 with the terminating NUL; '/' and whitespace are never allowed, ':'
# here separates the port.
_IFNAME = re.compile(r"[^\s/:]{1,15}")
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class StoreEndpoint:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    """Paths for TLS to etcd. A CA alone verifies the server; a certificate and key pair also
    authenticates this daemon (etcd's ``--client-cert-auth``)."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class ClusterConfig:
    endpoints: tuple[StoreEndpoint, ...]
    # The resolved VTEP address (never an interface name: peers need an address) and the UDP
    # port of this host's VXLAN device.
    advertise: str
    vxlan_port: int = DEFAULT_VXLAN_PORT
    tls: TlsFiles | None = None

    @property
    def store_url(self) -> str:
        """The store as the operator would write it, for `nsnet info` and logs."""
        return "etcd://" + ",".join(str(e) for e in self.endpoints)


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise Invalid(f"invalid {what} port {text!r}: must be a number from 1 to 65535")
    return int(text)


def _check_host(host: str) -> str:
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_LABEL.fullmatch(lb) for lb in labels):
        raise Invalid(f"invalid cluster store host {host!r}: not an IP address or host name")
    return host


def _split_host_port(item: str, default_port: int, what: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a bare IPv6 address has no port."""
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise Invalid(f"invalid {what} {item!r}: expected [IPv6 address]:port")
        return host, _port(rest[1:], what) if rest else default_port
    if item.count(":") > 1:
        return item, default_port
    host, sep, port = item.partition(":")
    return host, _port(port, what) if sep else default_port


def parse_store_url(text: str) -> tuple[StoreEndpoint, ...]:
    """``etcd://host[:port][,host[:port]...]`` → the endpoints, in the order given (the client
    tries them in that order and fails over to the next)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise Invalid(f"invalid --cluster-store {text!r}: expected etcd://host:2379[,host:2379...]")
    if scheme != "etcd":
        name = STORE_NAMES.get(scheme, scheme)
        raise Invalid(f"unsupported cluster store {name!r}: nsnet supports etcd only "
                      "(etcd://host:2379[,host:2379...])")
    if "/" in rest or "?" in rest or "@" in rest:
        raise Invalid(f"invalid --cluster-store {text!r}: a path, query or user is not "
                      "supported (nsnet keeps its keys under /nsnet/v1/; TLS client "
                      "certificates go in --cluster-store-opt)")
    endpoints: list[StoreEndpoint] = []
    for item in rest.split(","):
        if not item:
            raise Invalid(f"invalid --cluster-store {text!r}: empty endpoint")
        host, port = _split_host_port(item, DEFAULT_ETCD_PORT, "cluster store")
        endpoint = StoreEndpoint(_check_host(host), port)
        if endpoint in endpoints:
            raise Invalid(f"invalid --cluster-store {text!r}: {endpoint} is given twice")
        endpoints.append(endpoint)
    return tuple(endpoints)


def _readable_file(option: str, value: str) -> Path:
    if not value:
        raise Invalid(f"--cluster-store-opt {option}: empty path")
    path = Path(value)
    try:
        st = path.stat()
    except OSError as e:
        raise Invalid(f"--cluster-store-opt {option}={value}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.R_OK):
        raise Invalid(f"--cluster-store-opt {option}={value}: not a readable file")
    return path


def parse_store_opts(values: Iterable[str]) -> TlsFiles | None:
    """Each value is ``key=value[,key=value...]`` (the flag may also be repeated). Unknown
    keys are refused: a mistyped ``kv.certfile`` silently dropped would mean a daemon talking
    to etcd without the client certificate its operator asked for."""
    found: dict[str, Path] = {}
    for value in values:
        for item in value.split(","):
            key, sep, path = item.partition("=")
            key = key.strip()
            if not sep:
                raise Invalid(f"invalid --cluster-store-opt {item!r}: expected key=value")
            if key not in TLS_OPTIONS:
                raise Invalid(f"unknown --cluster-store-opt {key!r} (known: "
                              f"{', '.join(TLS_OPTIONS)})")
            if key in found:
                raise Invalid(f"--cluster-store-opt {key} is given twice")
            found[key] = _readable_file(key, path)
    if not found:
        return None
    if ("kv.certfile" in found) != ("kv.keyfile" in found):
        raise Invalid("--cluster-store-opt kv.certfile and kv.keyfile go together: a client "
                      "certificate needs its key")
    return TlsFiles(cacert=found.get("kv.cacertfile"), cert=found.get("kv.certfile"),
                    key=found.get("kv.keyfile"))


def _usable_vtep(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, given: str) -> str:
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback or (
            isinstance(addr, ipaddress.IPv4Address) and addr == ipaddress.IPv4Address(
                "255.255.255.255")):
        raise Invalid(f"invalid --cluster-advertise {given!r}: {addr} cannot be reached by "
                      "other hosts (it must be a unicast address of this host)")
    return str(addr)


def interface_address(name: str) -> str:
    """The address of interface ``name`` in the caller's network namespace: its primary IPv4
    address, else its first global IPv6 one. Stdlib only (an ioctl and /proc/net), since this
    runs once at start, before the kernel layer exists, in whatever namespace nsnetd runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16s16x", name.encode())
        try:
            reply = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
            return socket.inet_ntoa(reply[20:24])
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise Invalid(f"--cluster-advertise: no interface named {name!r}") from None
            if e.errno != errno.EADDRNOTAVAIL:
                raise Invalid(f"--cluster-advertise: cannot read the address of {name!r}: "
                              f"{e.strerror}") from None
    with contextlib.suppress(FileNotFoundError), open("/proc/net/if_inet6") as f:
        for line in f:
            fields = line.split()
            # address, ifindex, prefix length, scope (00: global), flags, name
            if len(fields) == 6 and fields[5] == name and fields[3] == "00":
                return str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    raise Invalid(f"--cluster-advertise: interface {name!r} has no usable address")


def parse_advertise(text: str,
                    lookup: Callable[[str], str] = interface_address) -> tuple[str, int]:
    """``<ip|interface>[:port]`` → (VTEP address, VXLAN UDP port)."""
    host, port = _split_host_port(text, DEFAULT_VXLAN_PORT, "--cluster-advertise")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if not _IFNAME.fullmatch(host):
            raise Invalid(f"invalid --cluster-advertise {text!r}: not an IP address or "
                          "interface name") from None
        addr = ipaddress.ip_address(lookup(host))
    return _usable_vtep(addr, text), port


def from_flags(store: str | None, advertise: str | None, store_opts: Iterable[str] = (),
               lookup: Callable[[str], str] = interface_address) -> ClusterConfig | None:
    """The cluster configuration, or None when no cluster flag is given (nsnetd then works
    alone, as before, and refuses overlay networks)."""
    opts = list(store_opts)
    if not store:
        if advertise:
            raise Invalid("--cluster-advertise needs --cluster-store (the etcd endpoints to "
                          "register with)")
        if opts:
            raise Invalid("--cluster-store-opt needs --cluster-store")
        return None
    endpoints = parse_store_url(store)
    if not advertise:
        raise Invalid("--cluster-store needs --cluster-advertise <ip|interface>[:port]: the "
                      "address other hosts send this host's VXLAN traffic to")
    tls = parse_store_opts(opts)
    vtep, port = parse_advertise(advertise, lookup)
    return ClusterConfig(endpoints=endpoints, advertise=vtep, vxlan_port=port, tls=tls)
