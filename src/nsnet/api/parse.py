"""Reading requests the way moby does: booleans, filters, JSON bodies.

Everything a client sends is checked here for shape (type, characters, length) before any
use-case runs, so a wrong value is a 400 naming the field rather than a 500 from deep inside,
or worse a value accepted now that makes every later start fail. Strings that end up in files
or command lines inside a container (``/etc/hosts``, ``resolv.conf``, the OCI spec) never hold
newlines or NUL bytes.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from aiohttp import web

from nsnet.errors import Invalid, NsnetError
from nsnet.model import EndpointRequest
from nsnet.nameservers import parse_nameserver

# aiohttp's default client_max_size: bodies beyond it are refused before they are read.
MAX_BODY = 1024 * 1024
# Linux's HOST_NAME_MAX: sethostname(2) refuses longer names, so runc would fail every start.
HOST_NAME_MAX = 64
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
# A DNS name as a resolver or /etc/hosts sees it: no blanks, no control characters.
_DNS_NAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")


class GoObject(dict[str, Any]):
    """A JSON object of a request body, whose fields are looked up as moby's Go decoder fills
    a struct: a key names a field if it equals the field's name in any case, and of several
    such keys the last wins. ``{"HostConfig": {"privileged": true}}`` is a privileged
    container on Docker; read by exact spelling, nsnet would drop it silently. Iteration keeps
    the keys as sent: maps (labels, options, network names) stay case-sensitive, as Go's are.
    """

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> GoObject:
        """A repeated key takes its last position too, so "last wins" holds across cases."""
        obj = cls()
        for k, v in pairs:
            obj.pop(k, None)
            obj[k] = v
        return obj

    def _key(self, name: str) -> str | None:
        folded = name.casefold()
        found = None
        for k in self:
            if k.casefold() == folded:
                found = k
        return found

    def get(self, name: str, default: Any = None) -> Any:
        k = self._key(name)
        return default if k is None else dict.__getitem__(self, k)

    def __getitem__(self, name: str) -> Any:
        k = self._key(name)
        if k is None:
            raise KeyError(name)
        return dict.__getitem__(self, k)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) is not None


class BodyTooLarge(NsnetError):
    """HTTP 413: the request body is beyond what any nsnet request needs."""

    status = 413


def qbool(request: web.BaseRequest, key: str, default: bool = False) -> bool:
    """moby's httputils.BoolValue: false iff "", 0, no, false, none (trimmed, any case)."""
    if key not in request.query:
        return default
    return request.query[key].strip().lower() not in ("", "0", "no", "false", "none")


def filters(request: web.BaseRequest) -> dict[str, list[str]]:
    """Both encodings: the CLI's {"k": {"v": true}} and docker-py's {"k": ["v"]}."""
    raw = request.query.get("filters", "")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise Invalid(f"invalid filter: {e}") from None
    except RecursionError:
        raise Invalid("invalid filter: nested too deeply") from None
    if not isinstance(data, dict):
        raise Invalid("invalid filter: must be a JSON object")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out[k] = [str(x) for x, on in v.items() if on]
        elif isinstance(v, list):
            out[k] = [str(x) for x in v]
        elif isinstance(v, str):
            out[k] = [v]
        else:
            raise Invalid(f"invalid filter value for {k!r}")
    return out


async def json_body(request: web.BaseRequest, required: bool = True) -> dict[str, Any]:
    size = request.content_length
    if size is not None and size > MAX_BODY:
        # Refused from the header, before a byte of it is read.
        raise BodyTooLarge(f"request body too large: {size} bytes (at most {MAX_BODY})")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body too large (at most {MAX_BODY} bytes)") from None
    if not raw.strip():
        if required:
            raise Invalid("missing request body: a JSON object is required")
        return {}
    ctype = request.headers.get("Content-Type", "")
    if ctype and not ctype.startswith("application/json"):
        raise Invalid(f"unsupported Content-Type header ({ctype}): must be 'application/json'")
    try:
        decoder = json.JSONDecoder(object_pairs_hook=GoObject.from_pairs)
        text = raw.decode()
        obj, end = decoder.raw_decode(text.lstrip())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Invalid(f"invalid JSON: {e}") from None
    except RecursionError:
        raise Invalid("invalid JSON: nested too deeply") from None
    if text.lstrip()[end:].strip():
        raise Invalid("unexpected content after JSON")
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise Invalid("invalid JSON: expected an object")
    return obj


def as_dict(v: Any, what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Invalid(f"invalid {what}: expected an object")
    return v


def as_str_dict(v: Any, what: str) -> dict[str, str]:
    d = as_dict(v, what)
    out = {}
    for k, x in d.items():
        if x is None:
            x = ""
        if not isinstance(x, str | int | float | bool):
            raise Invalid(f"invalid {what}: values must be strings")
        out[str(k)] = str(x).lower() if isinstance(x, bool) else str(x)
    return out


def as_str(v: Any, what: str) -> str:
    """A string field; null means empty. No NUL bytes: no path, name or argument holds one."""
    if v is None:
        return ""
    if not isinstance(v, str):
        raise Invalid(f"invalid {what}: expected a string, got {type(v).__name__}")
    if "\x00" in v:
        raise Invalid(f"invalid {what}: contains a NUL byte")
    return v


def as_str_list(v: Any, what: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [as_str(v, what)]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Invalid(f"invalid {what}: expected a list of strings")
    for x in v:
        as_str(x, what)
    return list(v)


def as_bool(v: Any, what: str) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    raise Invalid(f"invalid {what}: expected a boolean")


def as_int(v: Any, what: str, lo: int = -(1 << 63), hi: int = (1 << 63) - 1) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise Invalid(f"invalid {what}: expected an integer")
    if not lo <= v <= hi:
        raise Invalid(f"invalid {what}: {v} is out of range [{lo}, {hi}]")
    return v


def hostname(v: Any, what: str = "Hostname") -> str:
    """RFC 1123 labels within HOST_NAME_MAX: the name goes to sethostname(2) and /etc/hosts."""
    name = as_str(v, what)
    if not name:
        return ""
    if len(name) > HOST_NAME_MAX:
        raise Invalid(f"invalid {what}: longer than {HOST_NAME_MAX} characters")
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise Invalid(f"invalid {what} {name!r}: only letters, digits, '-' and '_' in "
                      "dot-separated labels of at most 63 characters")
    return name


def dns_name(v: Any, what: str) -> str:
    name = as_str(v, what)
    if not _DNS_NAME.fullmatch(name):
        raise Invalid(f"invalid {what} {name!r}: a DNS name of letters, digits, '.', '-' and "
                      "'_' is expected")
    return name


def mac_address(v: Any, what: str) -> str | None:
    """Six colon-separated octets of a unicast address: the kernel refuses a multicast MAC
    on a veth, which would only surface when the container starts."""
    mac = as_str(v, what)
    if not mac:
        return None
    if not _MAC.fullmatch(mac):
        raise Invalid(f"invalid {what}: {mac!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    if int(mac[:2], 16) & 1:
        raise Invalid(f"invalid {what}: {mac} is a multicast address")
    if mac.replace(":", "") == "0" * 12:
        raise Invalid(f"invalid {what}: {mac} is the zero address")
    return mac


def env_list(v: Any, what: str = "Env") -> list[str]:
    """``KEY=value`` (or a bare ``KEY``, which Docker keeps as it is); never an empty key."""
    out = as_str_list(v, what)
    for item in out:
        if item.startswith("=") or not item:
            raise Invalid(f"invalid {what}: {item!r} has no variable name")
    return out


def abs_path(v: Any, what: str) -> str:
    path = as_str(v, what)
    if path and not path.startswith("/"):
        raise Invalid(f"invalid {what}: the working directory {path!r} is invalid, it needs "
                      "to be an absolute path")
    return path


def nameserver_list(v: Any, what: str) -> list[str]:
    """``--dns`` values: an address, or nsnet's ``ip:port`` / ``[v6]:port`` forms."""
    out = as_str_list(v, what)
    for x in out:
        if parse_nameserver(x) is None:
            raise Invalid(f"invalid {what}: {x!r} is not an IP address (or ip:port)")
    return out


def word_list(v: Any, what: str) -> list[str]:
    """Search domains and resolver options: single words on a resolv.conf line."""
    out = as_str_list(v, what)
    for x in out:
        if not x or any(ch.isspace() or not ch.isprintable() for ch in x):
            raise Invalid(f"invalid {what}: {x!r} must be one word")
    return out


def extra_hosts(v: Any, what: str = "ExtraHosts") -> list[str]:
    """``host:ip`` lines for /etc/hosts (``host=ip`` as newer CLIs also write it)."""
    out = []
    for item in as_str_list(v, what):
        sep = "=" if "=" in item else ":"
        host, _, ip = item.partition(sep)
        dns_name(host, f"{what} host")
        if ip == "host-gateway":
            raise Invalid(f"invalid {what}: host-gateway is not supported by nsnet")
        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise Invalid(f"invalid {what}: {item!r}: {ip!r} is not an IP address") from None
        out.append(f"{host}:{ip.strip('[]')}")
    return out


def links_list(v: Any, what: str) -> list[str]:
    """``name:alias`` (a bare ``name`` is its own alias), both valid names."""
    out = []
    for ln in as_str_list(v, what):
        name, _, alias = ln.partition(":")
        dns_name(name.lstrip("/"), what)
        dns_name(alias or name.lstrip("/"), what)
        out.append(f"{name}:{alias or name}")
    return out


def endpoint_request(v: Any, what: str) -> EndpointRequest:
    d = as_dict(v, what)
    ipam = as_dict(d.get("IPAMConfig"), f"{what}.IPAMConfig")
    gw = as_int(d.get("GwPriority"), f"{what}.GwPriority", -(1 << 31), (1 << 31) - 1)
    aliases = as_str_list(d.get("Aliases"), f"{what}.Aliases")
    for a in aliases:
        dns_name(a, f"{what}.Aliases")
    links = links_list(d.get("Links"), f"{what}.Links")
    return EndpointRequest(
        ipv4_address=as_str(ipam.get("IPv4Address"), f"{what}.IPAMConfig.IPv4Address") or None,
        ipv6_address=as_str(ipam.get("IPv6Address"), f"{what}.IPAMConfig.IPv6Address") or None,
        aliases=aliases or None,
        links=links or None,
        driver_opts=as_str_dict(d.get("DriverOpts"), f"{what}.DriverOpts") or None,
        mac_address=mac_address(d.get("MacAddress"), f"{what}.MacAddress"),
        gw_priority=gw,
        link_local_ips=link_local_ips(ipam.get("LinkLocalIPs"),
                                      f"{what}.IPAMConfig.LinkLocalIPs") or None,
    )


def link_local_ips(v: Any, what: str) -> list[str]:
    """``IPAMConfig.LinkLocalIPs``: each one link-local (169.254.0.0/16 or fe80::/10), as
    moby checks them; kept in canonical text, duplicates dropped."""
    out: list[str] = []
    for raw in as_str_list(v, what):
        try:
            ip = ipaddress.ip_address(raw)
        except ValueError:
            raise Invalid(f"invalid link-local IP address: {raw}") from None
        if not ip.is_link_local or ip.is_multicast or (
                isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.scope_id)):
            raise Invalid(f"invalid link-local IP address: {raw}")
        if str(ip) not in out:
            out.append(str(ip))
    return out


# -- published ports (issue 12) --------------------------------------------------------------

_PORT_KEY = re.compile(r"([0-9]{1,5})(?:/(tcp|udp|sctp))?")
_HOST_PORT = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def port_key(v: Any, what: str) -> str:
    """``"80/tcp"`` as moby's nat.NewPort reads it: a bare ``"80"`` is tcp."""
    m = _PORT_KEY.fullmatch(v) if isinstance(v, str) else None
    if m is None or not 0 < int(m.group(1)) < 65536:
        raise Invalid(f"invalid {what}: {str(v)[:40]!r} is not port[/tcp|udp|sctp]")
    return f"{int(m.group(1))}/{m.group(2) or 'tcp'}"


def _host_port(v: Any, what: str) -> str:
    """"" (any free port), ``"8080"`` or ``"8000-8010"``; the SDK may send a number."""
    if v is None or v == "":
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    m = _HOST_PORT.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise Invalid(f"invalid {what}: {str(v)[:40]!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if not 0 < lo <= hi < 65536:
        raise Invalid(f"invalid {what}: {v!r}")
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _host_ip(v: Any, what: str) -> str:
    s = as_str(v, what)
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    if s == "":
        return ""
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        raise Invalid(f"invalid {what}: {s[:40]!r} is not an IP address") from None


def port_bindings(v: Any, what: str = "HostConfig.PortBindings") -> dict[str, list[dict[str, str]]]:
    """``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`` checked to shape, keys and
    values in moby's canonical forms; ``null`` for a key is one binding to any free port."""
    out: dict[str, list[dict[str, str]]] = {}
    for key, bindings in as_dict(v, what).items():
        k = port_key(key, f"{what} key")
        if bindings is None:
            bindings = [{}]
        if not isinstance(bindings, list):
            raise Invalid(f"invalid {what}[{k}]: must be a list of bindings")
        got = out.setdefault(k, [])
        for b in bindings:
            b = as_dict(b, f"{what}[{k}]")
            got.append({"HostIp": _host_ip(b.get("HostIp"), f"{what}[{k}].HostIp"),
                        "HostPort": _host_port(b.get("HostPort"), f"{what}[{k}].HostPort")})
    return out


def exposed_ports(v: Any, what: str = "ExposedPorts") -> list[str]:
    """Config.ExposedPorts' keys (``{"80/tcp": {}}``), canonical and sorted."""
    return sorted({port_key(k, f"{what} key") for k in as_dict(v, what)})
