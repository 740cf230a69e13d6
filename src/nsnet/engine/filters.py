"""Docker's list filters for networks and containers, as pure functions over the model.

Both listings live here, beside each other, so they share one grammar (``label``, ``name``,
``id``) and one time budget for client patterns (engine/filter_regex.py). A filter key nsnet
does not know is a 400, never silently ignored: a script that filters on it would otherwise act
on every object.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from nsnet.engine.filter_regex import FilterRegex, filter_regex
from nsnet.errors import Invalid
from nsnet.model import PREDEFINED_NETWORKS, Container, Network

CONTAINER_FILTERS = ("name", "id", "status", "network", "label", "exited", "ancestor")


def parse_duration(value: str) -> float:
    """Docker's ``until`` filter: a Go duration (``24h``, ``1h30m``) or a timestamp."""
    m = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:h|m|s|ms))+)", value)
    if m:
        total = 0.0
        for num, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", value):
            total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return time.time() - total
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise Invalid(f"invalid filter 'until={value}': not a duration or a timestamp") from None


def created_ts(net: Network) -> float:
    s = net.created
    if "." in s:
        head, frac = s.rstrip("Z").split(".", 1)
        s = f"{head}.{frac[:6]}+00:00"
    else:
        s = s.replace("Z", "+00:00")
    return datetime.fromisoformat(s).timestamp()


def label_match(labels: dict[str, str], f: str) -> bool:
    if "=" in f:
        k, v = f.split("=", 1)
        return labels.get(k) == v
    return f in labels


# -- networks (moby daemon/network/filter.go) ------------------------------------------------


def _net_type(net: Network, values: list[str], in_use: bool) -> bool:
    for v in values:
        if v not in ("custom", "builtin"):
            raise Invalid(f"invalid filter: 'type'='{v}'")
    kind = "builtin" if net.name in PREDEFINED_NETWORKS else "custom"
    return kind in values


def _net_dangling(net: Network, values: list[str], in_use: bool) -> bool:
    want = []
    for v in values:
        if v.lower() in ("true", "1"):
            want.append(True)
        elif v.lower() in ("false", "0"):
            want.append(False)
        else:
            raise Invalid(f"invalid filter 'dangling={v}'")
    return (not net.predefined and not in_use) in want


NetworkTest = Callable[[Network, list[str], bool], bool]

_NETWORK_TESTS: dict[str, NetworkTest] = {
    "driver": lambda n, vs, _: n.driver in vs,
    "scope": lambda n, vs, _: n.scope in vs,
    "name": lambda n, vs, _: any(v == n.name or _re_search(v, n.name, "name") for v in vs),
    "id": lambda n, vs, _: any(v == n.id or _re_search(v, n.id, "id") for v in vs),
    "label": lambda n, vs, _: all(label_match(n.labels, v) for v in vs),
    "type": _net_type,
    "dangling": _net_dangling,
}


def network_matches(net: Network, filters: dict[str, list[str]], in_use: bool) -> bool:
    """Docker's ``GET /networks`` filters; ``in_use``: the network has live endpoints."""
    for key, values in filters.items():
        if not values:
            continue
        test = _NETWORK_TESTS.get(key)
        if test is None:
            raise Invalid(f"invalid filter '{key}'")
        if not test(net, values, in_use):
            return False
    return True


def _re_search(pattern: str, text: str, key: str) -> bool:
    return filter_regex(pattern, key).search(text)


# -- containers -------------------------------------------------------------------------------


def check_container_filters(filters: dict[str, list[str]]) -> list[FilterRegex]:
    """Refuse unknown keys up front (a 400 whether or not any container exists) and compile
    the name patterns once per listing."""
    for k in filters:
        if k not in CONTAINER_FILTERS:
            raise Invalid(f"invalid filter '{k}'")
    for v in filters.get("status", []):
        if v not in CONTAINER_STATES:
            raise Invalid(f"Invalid filter 'status={v}'")
    return [filter_regex(v.lstrip("/"), "name") for v in filters.get("name", [])]


def _network_names(c: Container, networks: Mapping[str, Network]) -> set[str]:
    names: set[str] = set()
    for a in c.attachments:
        n = networks.get(a.network_id)
        if n:
            names.update((n.name, n.id))
    if c.network_mode in ("host", "none"):
        names.add(c.network_mode)
    return names


# moby's container states, as ``status=`` accepts them (anything else is a 400).
CONTAINER_STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _status_name(c: Container) -> str:
    """The state ``docker ps`` shows: a frozen container is "paused", not "running" (moby
    filters on the same word it renders)."""
    return "paused" if c.state.status == "running" and c.state.paused else c.state.status


def _container_test(c: Container, k: str, vals: list[str], name_patterns: list[FilterRegex],
                    networks: Mapping[str, Network]) -> bool:
    if k == "name":
        return any(rx.search(c.name) for rx in name_patterns)
    if k == "id":
        return any(c.id.startswith(v) for v in vals)
    if k == "status":
        return _status_name(c) in vals
    if k == "network":
        names = _network_names(c, networks)
        return any(v in names or any(x.startswith(v) for x in names) for v in vals)
    if k == "label":
        return all(label_match(c.labels, v) for v in vals)
    if k == "exited":
        return c.state.status == "exited" and str(c.state.exit_code) in vals
    if k == "ancestor":
        return any(v in (c.image, c.image_id) for v in vals)
    raise Invalid(f"invalid filter '{k}'")


def container_matches(c: Container, filters: dict[str, list[str]],
                      name_patterns: list[FilterRegex],
                      networks: Mapping[str, Network]) -> bool:
    """Docker's ``GET /containers/json`` filters (``name_patterns`` from
    ``check_container_filters``)."""
    return all(_container_test(c, k, vals, name_patterns, networks)
               for k, vals in filters.items() if vals)
