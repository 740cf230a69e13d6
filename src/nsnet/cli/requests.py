"""The request bodies the docker CLI sends for networks and endpoints, built as pure functions.

They live apart from the commands so `network create`/`connect` and `run`/`create` can share
them without importing each other, and so their shapes (docker-api.md §3.2-3.3) and docker's
client-side refusals (overlapping subnets, a gateway outside every subnet...) are tested
without a daemon. Every ValueError carries docker's own wording.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def parse_kv(values: Iterable[str]) -> dict[str, str]:
    """docker's MapOpts/ConvertKVStringsToMap: `k=v` or a bare `k` (empty value)."""
    out: dict[str, str] = {}
    for item in values:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _parse_cidr_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Go's net.ParseCIDR, keeping only the address part."""
    addr, sep, prefix = text.partition("/")
    try:
        if not sep or not prefix.isdigit():
            raise ValueError(text)
        ip = ipaddress.ip_address(addr)
        if int(prefix) > ip.max_prefixlen:
            raise ValueError(text)
    except ValueError:
        raise ValueError(f"invalid CIDR address: {text}") from None
    return ip


def subnet_matches(subnet: str, data: str) -> bool:
    """docker's subnetMatches: is `data` (an address or CIDR) inside `subnet`?"""
    try:
        _parse_cidr_ip(subnet)
    except ValueError as exc:
        raise ValueError(f"invalid subnet: {exc}") from None
    net = ipaddress.ip_network(subnet, strict=False)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if "/" in data:
        ip = _parse_cidr_ip(data)
    else:
        try:
            ip = ipaddress.ip_address(data)
        except ValueError:
            ip = None
    return ip is not None and ip in net


def _assign_once(
    data: dict[str, dict[str, Any]],
    subnets: Sequence[str],
    key: str,
    value: str,
    clash: str,
    missing: str,
) -> None:
    """Give `value` (a range or gateway) to every subnet holding it; one per subnet, as docker.

    `clash` is formatted with new=, old= and subnet=; `missing` is raised when no subnet holds
    the value.
    """
    match = False
    for s in subnets:
        if not subnet_matches(s, value):
            continue
        if data[s][key]:
            raise ValueError(clash.format(new=value, old=data[s][key], subnet=s))
        data[s][key] = value
        match = True
    if not match:
        raise ValueError(missing)


def _assign_aux(
    data: dict[str, dict[str, Any]], subnets: Sequence[str], key: str, address: str
) -> None:
    match = False
    for s in subnets:
        if subnet_matches(s, address):
            data[s]["AuxiliaryAddresses"][key] = address
            match = True
    if not match:
        raise ValueError(f"no matching subnet for aux-address {address}")


def ipam_config(
    subnets: Sequence[str],
    ip_ranges: Sequence[str],
    gateways: Sequence[str],
    aux_addresses: Mapping[str, str],
) -> list[dict[str, Any]]:
    """IPAM.Config exactly as docker's createIPAMConfig builds it, checks and wording included.

    Each range, gateway and aux address is attached to the subnet that contains it; empty keys
    are left out (the Go type marks them omitempty). Raises ValueError with docker's message.
    """
    if len(subnets) < len(ip_ranges) or len(subnets) < len(gateways):
        raise ValueError("every ip-range or gateway must have a corresponding subnet")
    data: dict[str, dict[str, Any]] = {}
    for s in subnets:
        for k in data:
            if subnet_matches(s, k) or subnet_matches(k, s):
                raise ValueError("multiple overlapping subnet configuration is not supported")
        data[s] = {"Subnet": s, "IPRange": "", "Gateway": "", "AuxiliaryAddresses": {}}
    for r in ip_ranges:
        _assign_once(
            data,
            subnets,
            "IPRange",
            r,
            "cannot configure multiple ranges ({new}, {old}) on the same subnet ({subnet})",
            f"no matching subnet for range {r}",
        )
    for g in gateways:
        _assign_once(
            data,
            subnets,
            "Gateway",
            g,
            "cannot configure multiple gateways ({new}, {old}) for the same subnet ({subnet})",
            f"no matching subnet for gateway {g}",
        )
    for key, aa in aux_addresses.items():
        _assign_aux(data, subnets, key, aa)
    return [{k: v for k, v in entry.items() if v} for entry in data.values()]


def network_create_body(
    name: str,
    *,
    driver: str = "bridge",
    subnets: Sequence[str] = (),
    gateways: Sequence[str] = (),
    ip_ranges: Sequence[str] = (),
    aux_addresses: Iterable[str] = (),
    ipv4: bool | None = None,
    ipv6: bool | None = None,
    internal: bool = False,
    attachable: bool = False,
    ingress: bool = False,
    scope: str = "",
    config_only: bool = False,
    config_from: str = "",
    options: Iterable[str] = (),
    labels: Iterable[str] = (),
    ipam_driver: str = "default",
    ipam_options: Iterable[str] = (),
) -> dict[str, Any]:
    """The body `docker network create` sends (docker-api.md §3.2), key order included."""
    config = ipam_config(subnets, ip_ranges, gateways, parse_kv(aux_addresses))
    body: dict[str, Any] = {"Driver": driver, "Scope": scope}
    if ipv4 is not None:
        body["EnableIPv4"] = ipv4
    if ipv6 is not None:
        body["EnableIPv6"] = ipv6
    body["IPAM"] = {"Driver": ipam_driver, "Options": parse_kv(ipam_options), "Config": config}
    body.update(
        {
            "Internal": internal,
            "Attachable": attachable,
            "Ingress": ingress,
            "ConfigOnly": config_only,
            "ConfigFrom": {"Network": config_from} if config_from else None,
            "Options": parse_kv(options),
            "Labels": parse_kv(labels),
            "Name": name,
        }
    )
    return body


def endpoint_settings(
    *,
    ipam: Mapping[str, Any] | None = None,
    links: Sequence[str] | None = None,
    aliases: Sequence[str] | None = None,
    driver_opts: Mapping[str, str] | None = None,
    mac_address: str = "",
    gw_priority: int = 0,
) -> dict[str, Any]:
    """A whole EndpointSettings object as the Go client marshals it (operational part zero)."""
    return {
        "IPAMConfig": None if ipam is None else dict(ipam),
        "Links": None if links is None else list(links),
        "Aliases": None if aliases is None else list(aliases),
        "MacAddress": mac_address,
        "DriverOpts": None if driver_opts is None else dict(driver_opts),
        "GwPriority": gw_priority,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


def endpoint_ipam(ipv4: str = "", ipv6: str = "", link_local: Sequence[str] = ()) -> dict[str, Any]:
    """EndpointIPAMConfig with docker's omitempty keys."""
    out: dict[str, Any] = {}
    if ipv4:
        out["IPv4Address"] = ipv4
    if ipv6:
        out["IPv6Address"] = ipv6
    if link_local:
        out["LinkLocalIPs"] = list(link_local)
    return out


def driver_opts_map(values: Iterable[str]) -> dict[str, str]:
    """`--driver-opt k=v`: unlike labels a bare key is an error, and both sides are trimmed."""
    out: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise ValueError("invalid key value pair format in driver options")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def connect_endpoint_config(
    *,
    ip: str = "",
    ip6: str = "",
    aliases: Sequence[str] = (),
    links: Sequence[str] = (),
    link_local_ips: Sequence[str] = (),
    driver_opts: Iterable[str] = (),
    gw_priority: int = 0,
) -> dict[str, Any]:
    """`docker network connect`'s EndpointConfig: IPAMConfig `{}`, Aliases `[]`, Links null
    when no flags were given."""
    return endpoint_settings(
        ipam=endpoint_ipam(ip, ip6, link_local_ips),
        links=list(links) if links else None,
        aliases=list(aliases),
        driver_opts=driver_opts_map(driver_opts),
        gw_priority=gw_priority,
    )
