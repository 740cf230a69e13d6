"""Who may see which names: the embedded resolver's tables.

Pure data, no I/O. The engine feeds it endpoints as containers join and leave networks; the server
asks it one question per query. Lookups are the resolver's hot path (docs/architecture.md asks for
tens of thousands of queries a second from one Python thread), so every structure is shaped for the
read:

* per network, ``{name: _Name}`` where ``_Name`` holds the endpoints carrying that name and lazily
  built, cached answers for A and AAAA;
* per sandbox, the tuple of networks it is attached to (its *scope*);
* per network, ``{reverse-pointer name: endpoint}`` for PTR.

Endpoints come in two kinds that share those tables. *Local* ones belong to a sandbox served here
and so widen that sandbox's scope. *Remote* ones (``set_remote_endpoint``: containers on other
hosts of an overlay network, told by the peer service) have no sandbox: they are only ever
answered, never asked from, so they can add names to a network but can never change who sees
which network. They are keyed by (network, endpoint) in a table of their own, so a record
written by another host cannot replace or remove a local endpoint, nor one of another network,
whatever ids it carries.

A lookup for a name held by one endpoint on one network therefore costs two dict reads and returns
a pre-built ``Answer`` without allocating. Writers pay for the bookkeeping instead; they are rare.

Mutate from the event-loop thread only: the tables are not locked.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from nsnet.errors import Invalid

QTYPE_A: Final = 1
QTYPE_PTR: Final = 12
QTYPE_AAAA: Final = 28

HIT: Final = 0
NODATA: Final = 1
MISS: Final = 2


class Answer:
    """The local verdict for one question.

    ``kind`` is HIT, NODATA or MISS. For a HIT on A/AAAA, ``addresses`` holds the text form and
    ``packed`` the wire form (so the server never converts per query); for a HIT on PTR, ``ptr``
    holds the target name without the trailing dot. Instances may be shared between lookups:
    treat them as read-only.
    """

    __slots__ = ("addresses", "kind", "packed", "ptr")

    def __init__(
        self,
        kind: int,
        addresses: tuple[str, ...] = (),
        packed: tuple[bytes, ...] = (),
        ptr: str | None = None,
    ) -> None:
        self.kind = kind
        self.addresses = addresses
        self.packed = packed
        self.ptr = ptr

    def __repr__(self) -> str:
        kind = ("HIT", "NODATA", "MISS")[self.kind]
        if self.ptr is not None:
            return f"Answer({kind}, ptr={self.ptr!r})"
        return f"Answer({kind}, {list(self.addresses)!r})"


ANSWER_MISS: Final = Answer(MISS)
ANSWER_NODATA: Final = Answer(NODATA)


class _Endpoint:
    __slots__ = (
        "id",
        "ipv4",
        "ipv4_packed",
        "ipv6",
        "ipv6_packed",
        "names",
        "network",
        "ptr_answer",
        "ptr_keys",
        "sandbox_id",
    )

    def __init__(
        self,
        endpoint_id: str,
        network: _Network,
        sandbox_id: str | None,
        names: tuple[str, ...],
        ipv4: str | None,
        ipv6: str | None,
    ) -> None:
        self.id = endpoint_id
        self.network = network
        self.sandbox_id = sandbox_id
        self.names = names
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.ipv4_packed = ipaddress.IPv4Address(ipv4).packed if ipv4 else None
        self.ipv6_packed = ipaddress.IPv6Address(ipv6).packed if ipv6 else None
        keys = []
        if ipv4:
            keys.append(ipaddress.IPv4Address(ipv4).reverse_pointer)
        if ipv6:
            keys.append(ipaddress.IPv6Address(ipv6).reverse_pointer)
        self.ptr_keys = tuple(keys)
        self.ptr_answer: Answer | None = None


class _Name:
    """One name on one network; answers are rebuilt lazily after the endpoint list changes."""

    __slots__ = ("a", "aaaa", "endpoints")

    def __init__(self) -> None:
        self.endpoints: list[_Endpoint] = []
        self.a: Answer | None = None
        self.aaaa: Answer | None = None

    def invalidate(self) -> None:
        self.a = None
        self.aaaa = None

    def answer(self, qtype: int) -> Answer:
        if qtype == QTYPE_A:
            ans = self.a
            if ans is None:
                ans = self.a = _build(self.endpoints, QTYPE_A)
            return ans
        ans = self.aaaa
        if ans is None:
            ans = self.aaaa = _build(self.endpoints, QTYPE_AAAA)
        return ans


def _build(endpoints: list[_Endpoint], qtype: int) -> Answer:
    texts: list[str] = []
    packed: list[bytes] = []
    for ep in endpoints:
        if qtype == QTYPE_A:
            text, raw = ep.ipv4, ep.ipv4_packed
        else:
            text, raw = ep.ipv6, ep.ipv6_packed
        if text is not None and raw is not None and text not in texts:
            texts.append(text)
            packed.append(raw)
    if not texts:
        return ANSWER_NODATA
    return Answer(HIT, tuple(texts), tuple(packed))


class _Network:
    __slots__ = ("id", "name", "names", "ptrs")

    def __init__(self, network_id: str) -> None:
        self.id = network_id
        self.name: str | None = None
        self.names: dict[str, _Name] = {}
        # Several endpoints may claim one address for a moment (a restart racing a removal);
        # the first one keeps the PTR, as in Docker's ipMap.
        self.ptrs: dict[str, list[_Endpoint]] = {}


def _clean_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def dns_name_ok(name: str) -> bool:
    """Whether a cleaned name can go on the wire as it is: ASCII labels of 1 to 63 bytes, 253
    in all. Local names are checked by the API; a remote host's are filtered with this, so a
    name no query could ask for never reaches a PTR answer."""
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(0 < len(label) <= 63 for label in name.split("."))


def _clean_names(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    clean: list[str] = []
    for n in names:
        c = _clean_name(n)
        if c and c not in clean:
            clean.append(c)
    return tuple(clean)


def _clean_addr(addr: str | None, version: int) -> str | None:
    if addr is None or addr == "":
        return None
    try:
        ip = ipaddress.ip_interface(addr).ip
    except ValueError as e:
        raise Invalid(f"invalid IP address {addr!r}") from e
    if ip.version != version:
        raise Invalid(f"expected an IPv{version} address, got {addr!r}")
    return str(ip)


class Records:
    """Scoped name tables for every sandbox the daemon serves."""

    def __init__(self) -> None:
        self._networks: dict[str, _Network] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        # (network id, endpoint id) -> an endpoint on another host; never in a scope
        self._remote: dict[tuple[str, str], _Endpoint] = {}
        self._links: dict[str, dict[str, str]] = {}
        # sandbox id -> endpoints of that sandbox (any network)
        self._sandbox_eps: dict[str, dict[str, _Endpoint]] = {}
        # sandbox id -> networks it can see, in attach order; rebuilt on change
        self._scope: dict[str, tuple[_Network, ...]] = {}
        # lowercased network name -> networks with that name (Docker names are case-sensitive,
        # DNS is not, so two networks can collide here)
        self._by_name: dict[str, list[_Network]] = {}

    # ---- writers -------------------------------------------------------------------------

    def set_network_name(self, network_id: str, name: str) -> None:
        """Makes ``<container>.<name>`` resolve; also names the PTR targets of the network."""
        net = self._network(network_id)
        self._unindex_network_name(net)
        net.name = _clean_name(name) or None
        if net.name:
            self._by_name.setdefault(net.name, []).append(net)
        for ep_list in net.ptrs.values():
            for ep in ep_list:
                ep.ptr_answer = None

    def set_endpoint(
        self,
        endpoint_id: str,
        network_id: str,
        sandbox_id: str,
        names: list[str],
        ipv4: str | None,
        ipv6: str | None,
    ) -> None:
        """Adds or replaces a local endpoint. The first name is the one PTR answers with."""
        v4 = _clean_addr(ipv4, 4)
        v6 = _clean_addr(ipv6, 6)
        if endpoint_id in self._endpoints:
            self.remove_endpoint(endpoint_id)
        ep = _Endpoint(endpoint_id, self._network(network_id), sandbox_id, _clean_names(names),
                       v4, v6)
        self._endpoints[endpoint_id] = ep
        self._index(ep)
        eps = self._sandbox_eps.setdefault(sandbox_id, {})
        eps[endpoint_id] = ep
        self._rebuild_scope(sandbox_id)

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Idempotent, like every delete in nsnet."""
        ep = self._endpoints.pop(endpoint_id, None)
        if ep is None:
            return
        self._unindex(ep)
        sandbox_id = ep.sandbox_id
        if sandbox_id is not None:
            eps = self._sandbox_eps.get(sandbox_id)
            if eps is not None:
                eps.pop(endpoint_id, None)
                if not eps:
                    del self._sandbox_eps[sandbox_id]
            self._rebuild_scope(sandbox_id)
        self._drop_if_empty(ep.network)

    def set_remote_endpoint(
        self,
        network_id: str,
        endpoint_id: str,
        names: list[str] | tuple[str, ...],
        ipv4: str | None,
        ipv6: str | None,
    ) -> None:
        """Adds or replaces an endpoint of another host on ``network_id``: its names answer for
        the sandboxes attached to that network here, like a local endpoint's, and it joins the
        round robin of every name it shares with others. Names that cannot go on the wire are
        left out (``dns_name_ok``)."""
        v4 = _clean_addr(ipv4, 4)
        v6 = _clean_addr(ipv6, 6)
        key = (network_id, endpoint_id)
        self.remove_remote_endpoint(network_id, endpoint_id)
        names_ok = tuple(n for n in _clean_names(names) if dns_name_ok(n))
        ep = _Endpoint(endpoint_id, self._network(network_id), None, names_ok, v4, v6)
        self._remote[key] = ep
        self._index(ep)

    def remove_remote_endpoint(self, network_id: str, endpoint_id: str) -> None:
        """Idempotent; touches nothing local, whatever the ids."""
        ep = self._remote.pop((network_id, endpoint_id), None)
        if ep is None:
            return
        self._unindex(ep)
        self._drop_if_empty(ep.network)

    def remove_network(self, network_id: str) -> None:
        """Drops the network, its name and every endpoint still on it."""
        net = self._networks.get(network_id)
        if net is None:
            return
        for ep in [e for e in self._endpoints.values() if e.network is net]:
            self.remove_endpoint(ep.id)
        for key in [k for k, e in self._remote.items() if e.network is net]:
            self.remove_remote_endpoint(*key)
        self._unindex_network_name(net)
        net.name = None
        self._networks.pop(network_id, None)

    def remove_sandbox(self, sandbox_id: str) -> None:
        self._links.pop(sandbox_id, None)
        self._remove_sandbox_endpoints(sandbox_id)

    def _remove_sandbox_endpoints(self, sandbox_id: str) -> None:
        """Convenience for the engine's container teardown."""
        for ep_id in list(self._sandbox_eps.get(sandbox_id, {})):
            self.remove_endpoint(ep_id)

    # ---- readers -------------------------------------------------------------------------

    def set_links(self, sandbox_id: str, links: dict[str, str]) -> None:
        """Link aliases (``--link name:alias``) seen only by the sandbox that declared them,
        looked up before anything else (Docker's order). An empty map removes them."""
        clean = {_clean_name(a): _clean_name(t) for a, t in links.items() if a and t}
        if clean:
            self._links[sandbox_id] = clean
        else:
            self._links.pop(sandbox_id, None)

    def lookup(self, sandbox_id: str, qname: str, qtype: int) -> Answer:
        """``qname`` must already be lowercased and carry no trailing dot (the wire parser does)."""
        scope = self._scope.get(sandbox_id)
        if not scope:
            return ANSWER_MISS
        if self._links:
            links = self._links.get(sandbox_id)
            if links is not None:
                qname = links.get(qname, qname)
        if qtype == QTYPE_PTR:
            return self._lookup_ptr(scope, qname)
        if len(scope) == 1:
            entry = scope[0].names.get(qname)
            if entry is not None:
                if qtype in (QTYPE_A, QTYPE_AAAA):
                    return entry.answer(qtype)
                return ANSWER_NODATA
        else:
            found = [e for e in (net.names.get(qname) for net in scope) if e is not None]
            if found:
                return _merge(found, qtype)
        if "." in qname:
            return self._lookup_qualified(scope, qname, qtype)
        return ANSWER_MISS

    def _lookup_qualified(self, scope: tuple[_Network, ...], qname: str, qtype: int) -> Answer:
        # Docker's Sandbox.ResolveName: "a.b.c" is tried as "a.b" on network "c", then "a" on
        # network "b.c" (network names may contain dots too).
        end = len(qname)
        while True:
            dot = qname.rfind(".", 0, end)
            if dot <= 0:
                return ANSWER_MISS
            nets = self._by_name.get(qname[dot + 1 :])
            if nets:
                name = qname[:dot]
                found = [
                    e
                    for e in (net.names.get(name) for net in nets if net in scope)
                    if e is not None
                ]
                if found:
                    return _merge(found, qtype)
            end = dot

    def _lookup_ptr(self, scope: tuple[_Network, ...], qname: str) -> Answer:
        for net in scope:
            holders = net.ptrs.get(qname)
            if holders:
                ep = holders[0]
                ans = ep.ptr_answer
                if ans is None:
                    target = ep.names[0] if ep.names else None
                    if target is None:
                        continue
                    # Docker answers "<container>.<network>" (Network.ResolveIP).
                    if net.name:
                        target = f"{target}.{net.name}"
                    ans = ep.ptr_answer = Answer(HIT, ptr=target)
                return ans
        return ANSWER_MISS

    def networks_of(self, sandbox_id: str) -> list[str]:
        """The ids of the networks a sandbox can resolve names on (for tests and inspection)."""
        return [n.id for n in self._scope.get(sandbox_id, ())]

    def __len__(self) -> int:
        """Local endpoints; ``remote_count`` says how many others answer beside them."""
        return len(self._endpoints)

    @property
    def remote_count(self) -> int:
        return len(self._remote)

    def snapshot(self) -> dict[str, object]:
        """Everything the tables hold, as plain sorted data: two ``Records`` fed the same final
        set of endpoints in any order compare equal (the order of holders of one name or one
        address is left out: it decides only which of two claimants of an address answers a
        PTR). For tests and inspection; costs a walk over every table."""
        def who(ep: _Endpoint) -> str:
            return f"local:{ep.id}" if ep.sandbox_id is not None else f"remote:{ep.id}"

        networks = {
            net.id: {
                "name": net.name,
                "names": {n: sorted(who(e) for e in entry.endpoints)
                          for n, entry in sorted(net.names.items())},
                "ptrs": {k: sorted(who(e) for e in holders)
                         for k, holders in sorted(net.ptrs.items())},
            }
            for net in sorted(self._networks.values(), key=lambda n: n.id)
        }

        def endpoint(ep: _Endpoint) -> tuple[object, ...]:
            return (ep.network.id, ep.sandbox_id, ep.names, ep.ipv4, ep.ipv6)

        return {
            "networks": networks,
            "by_name": {n: sorted(net.id for net in nets)
                        for n, nets in sorted(self._by_name.items())},
            "local": {i: endpoint(e) for i, e in sorted(self._endpoints.items())},
            "remote": {f"{k[0]}/{k[1]}": endpoint(e) for k, e in sorted(self._remote.items())},
            "sandboxes": {s: sorted(eps) for s, eps in sorted(self._sandbox_eps.items())},
            "scopes": {s: sorted(n.id for n in scope) for s, scope in sorted(self._scope.items())},
            "links": {s: dict(sorted(m.items())) for s, m in sorted(self._links.items())},
        }

    # ---- internals -----------------------------------------------------------------------

    def _network(self, network_id: str) -> _Network:
        net = self._networks.get(network_id)
        if net is None:
            net = self._networks[network_id] = _Network(network_id)
        return net

    def _index(self, ep: _Endpoint) -> None:
        net = ep.network
        for name in ep.names:
            entry = net.names.get(name)
            if entry is None:
                entry = net.names[name] = _Name()
            entry.endpoints.append(ep)
            entry.invalidate()
        for key in ep.ptr_keys:
            net.ptrs.setdefault(key, []).append(ep)

    def _unindex(self, ep: _Endpoint) -> None:
        net = ep.network
        for name in ep.names:
            entry = net.names.get(name)
            if entry is None:
                continue
            if ep in entry.endpoints:
                entry.endpoints.remove(ep)
            if entry.endpoints:
                entry.invalidate()
            else:
                del net.names[name]
        for key in ep.ptr_keys:
            holders = net.ptrs.get(key)
            if holders is None:
                continue
            if ep in holders:
                holders.remove(ep)
            if not holders:
                del net.ptrs[key]

    def _drop_if_empty(self, net: _Network) -> None:
        if not net.names and not net.ptrs and net.name is None:
            self._networks.pop(net.id, None)

    def _unindex_network_name(self, net: _Network) -> None:
        if net.name is None:
            return
        nets = self._by_name.get(net.name)
        if nets is not None:
            if net in nets:
                nets.remove(net)
            if not nets:
                del self._by_name[net.name]

    def _rebuild_scope(self, sandbox_id: str) -> None:
        eps = self._sandbox_eps.get(sandbox_id)
        if not eps:
            self._scope.pop(sandbox_id, None)
            return
        nets: list[_Network] = []
        for ep in eps.values():
            if ep.network not in nets:
                nets.append(ep.network)
        self._scope[sandbox_id] = tuple(nets)


def _merge(found: list[_Name], qtype: int) -> Answer:
    if qtype != QTYPE_A and qtype != QTYPE_AAAA:
        return ANSWER_NODATA
    if len(found) == 1:
        return found[0].answer(qtype)
    texts: list[str] = []
    packed: list[bytes] = []
    for entry in found:
        ans = entry.answer(qtype)
        for text, raw in zip(ans.addresses, ans.packed, strict=True):
            if text not in texts:
                texts.append(text)
                packed.append(raw)
    if not texts:
        return ANSWER_NODATA
    return Answer(HIT, tuple(texts), tuple(packed))
