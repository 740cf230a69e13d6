"""Endpoint records: an overlay endpoint as every host reads it from ``endpoints/``.

The host that runs an endpoint writes its record on join and deletes it on leave
(``engine/peers.py``); every other host decodes it to program a peer entry and to answer the
endpoint's names. A record crosses hosts, so reading one trusts nothing: the network and
endpoint ids come from the key, never the value, and every field is checked (addresses, MAC,
names) before it can reach the kernel or the resolver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import Any

from nsnet.cluster import keys
from nsnet.errors import Invalid
from nsnet.model import Endpoint
from nsnet.store.kv import KeyValue

log = logging.getLogger("nsnet.cluster.endpoints")

MAX_NAMES = 64


def _ipv4(v: Any) -> str | None:
    if v is None:
        return None
    return str(ipaddress.IPv4Address(str(v)))


def _ipv6(v: Any) -> str | None:
    if v is None:
        return None
    return str(ipaddress.IPv6Address(str(v)))


def _mac(v: Any) -> str:
    text = str(v).lower()
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        raise ValueError(f"bad MAC {text!r}")
    return text


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > MAX_NAMES:
        raise ValueError("dns_names must be a short list")
    out = tuple(str(n) for n in v)
    if not all(0 < len(n) <= 255 and n.isprintable() and " " not in n for n in out):
        raise ValueError("bad DNS name")
    return out


@dataclass(frozen=True)
class EndpointRecord:
    """An overlay endpoint as every host sees it (the value of its ``endpoints/`` key).

    ``dns_names`` are the names the embedded DNS answers for it on its network (container
    name, aliases, short id), as ``Endpoint.dns_names`` holds them on its own host.
    """

    network_id: str
    endpoint_id: str
    node_id: str
    vtep: str
    mac: str
    ipv4: str | None
    ipv6: str | None = None
    container_id: str = ""
    container_name: str = ""
    dns_names: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return keys.endpoint(self.network_id, self.endpoint_id)

    def encode(self) -> bytes:
        # "node" is the field other readers (network removal's host list) look for.
        return json.dumps({
            "node": self.node_id, "vtep": self.vtep, "mac": self.mac, "ipv4": self.ipv4,
            "ipv6": self.ipv6, "container": self.container_id,
            "container_name": self.container_name, "dns_names": list(self.dns_names),
        }, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, kv: KeyValue) -> EndpointRecord | None:
        """None for a record that is not ours to trust (damaged, another version's, written
        by hand): network and endpoint ids come from the key, never from the value, and every
        field is checked before it reaches the kernel or the resolver."""
        try:
            rest = kv.key[len(keys.ENDPOINTS):] if kv.key.startswith(keys.ENDPOINTS) else ""
            network_id, _, endpoint_id = rest.partition("/")
            keys.endpoint(network_id, endpoint_id)  # both safe key components
            raw = json.loads(kv.value)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            rec = cls(network_id=network_id, endpoint_id=endpoint_id,
                      node_id=keys.component(str(raw["node"]), "node id"),
                      vtep=str(ipaddress.IPv4Address(str(raw["vtep"]))), mac=_mac(raw["mac"]),
                      ipv4=_ipv4(raw.get("ipv4")), ipv6=_ipv6(raw.get("ipv6")),
                      container_id=str(raw.get("container", ""))[:128],
                      container_name=str(raw.get("container_name", ""))[:255],
                      dns_names=_names(raw.get("dns_names", [])))
        except (ValueError, TypeError, KeyError, Invalid):
            log.warning("ignoring unreadable endpoint record %s", kv.key)
            return None
        return rec


def endpoint_record(node_id: str, vtep: str, container_id: str, container_name: str,
                    ep: Endpoint) -> EndpointRecord:
    """The record of a local endpoint, as ``publish_endpoint`` writes it."""
    return EndpointRecord(network_id=ep.network_id, endpoint_id=ep.id, node_id=node_id,
                          vtep=vtep, mac=ep.mac.lower(), ipv4=ep.ipv4, ipv6=ep.ipv6,
                          container_id=container_id, container_name=container_name,
                          dns_names=tuple(ep.dns_names))


def ids_of(key: str) -> tuple[str, str] | None:
    """(network id, endpoint id) of an ``endpoints/`` key; None for anything else."""
    if not key.startswith(keys.ENDPOINTS):
        return None
    network_id, sep, endpoint_id = key[len(keys.ENDPOINTS):].partition("/")
    if not sep or not network_id or not endpoint_id or "/" in endpoint_id:
        return None
    return network_id, endpoint_id


def node_of(kv: KeyValue) -> str | None:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        raw = json.loads(kv.value)
        if isinstance(raw, dict):
            return str(raw.get("node", ""))
    return None
