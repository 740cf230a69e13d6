"""Accepts for nsnet's bridges in another firewall's FORWARD chain (iptables-nft ``filter``).

nftables runs every base chain on a hook: an ``accept`` in ``inet nsnet`` only ends that chain,
while a ``drop`` anywhere is final. A host running Docker has ``ip filter FORWARD`` with policy
DROP (made by iptables-nft), and with ``br_netfilter`` even packets bridged between two
containers pass through it, so nsnet's networks would be dead there. Docker solves the same
problem by inserting its own accepts into that chain; so does nsnet, per network::

    table ip filter / table ip6 filter     (someone else's; never created by nsnet)
      chain FORWARD
        iifname "<bridge>" counter accept comment "nsnet:<id12>"   (inserted at the top)
        oifname "<bridge>" counter accept comment "nsnet:<id12>"

The accepts are deliberately broad: they hand the decision to ``inet nsnet``, which runs too
and still drops what isolation, ``--internal`` and ``enable_icc=false`` forbid. Only these
expressions are used because iptables-nft must be able to decode every rule of a chain it
manages: an nft-native ``ct state`` there makes ``iptables -S FORWARD`` (and Docker's own
iptables calls) fail with "chain is incompatible". ``ip6 filter`` gets rules only for networks
with an IPv6 subnet, as Docker does.

The comment names the network, so a rule is recognised as ours, rewritten when it differs from
what the network wants (a re-create is idempotent) and removed when no network owns it.
Nothing is done when the chain does not exist: nsnet never creates iptables tables.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from nsnet.kernel.nft import Nft, NftError

log = logging.getLogger(__name__)

FAMILIES = ("ip", "ip6")
CHAIN = "filter FORWARD"
COMMENT_PREFIX = "nsnet:"

# (direction, bridge): ("iifname", "br-x") accepts what leaves the bridge's network.
Rule = tuple[str, str]
# A rule of ours in the chain: its handle (None: inserted by this process, not read back; a
# delete reads the chain afresh) and what it does (None: not a shape we write).
Present = tuple[int | None, Rule | None]


def _q(s: str) -> str:
    return '"' + s.replace('"', "") + '"'


def comment_of(short_id: str) -> str:
    return COMMENT_PREFIX + short_id


def wanted_rules(bridge: str, subnets: tuple[str, ...], family: str) -> list[Rule]:
    """The accepts one network needs in ``family filter FORWARD``: none in a family it has no
    subnet of."""
    version = 4 if family == "ip" else 6
    if not any(ipaddress.ip_network(s).version == version for s in subnets):
        return []
    return [("iifname", bridge), ("oifname", bridge)]


def insert_command(family: str, short_id: str, rule: Rule) -> str:
    """Inserted at the top: a chain may end in a catch-all drop or reject, so an appended
    accept would never be reached."""
    key, bridge = rule
    return (f"insert rule {family} {CHAIN} {key} {_q(bridge)} counter accept "
            f"comment {_q(comment_of(short_id))}")


def delete_command(family: str, handle: int) -> str:
    return f"delete rule {family} {CHAIN} handle {handle}"


def _signature(expr: list[dict[str, Any]]) -> Rule | None:
    """The (direction, bridge) of a rule shaped like ours, read from nft's JSON."""
    match: Rule | None = None
    verdict = False
    for e in expr:
        if "match" in e:
            m = e["match"]
            key = (m.get("left") or {}).get("meta", {}).get("key")
            right = m.get("right")
            if match is not None or m.get("op") != "==" or key not in ("iifname", "oifname") \
                    or not isinstance(right, str):
                return None
            match = (key, right)
        elif "counter" in e:
            continue
        elif "accept" in e and not verdict:
            verdict = True
        else:
            return None
    return match if verdict else None


def ours_in(chain: list[dict[str, Any]]) -> dict[str, list[Present]]:
    """nsnet's rules in a listed chain (``nft -j`` items), by network short ID."""
    out: dict[str, list[Present]] = {}
    for item in chain:
        rule = item.get("rule")
        if not isinstance(rule, dict):
            continue
        comment = rule.get("comment")
        if not isinstance(comment, str) or not comment.startswith(COMMENT_PREFIX):
            continue
        sid = comment[len(COMMENT_PREFIX):]
        out.setdefault(sid, []).append((int(rule["handle"]), _signature(rule.get("expr", []))))
    return out


def sync_changes(wanted: list[Rule], present: list[Present]) -> tuple[list[Present], list[Rule]]:
    """What to delete and insert so one network's rules are exactly ``wanted``: nothing when
    they already are (a reconcile that changes nothing writes nothing), else all of ours out
    and the wanted ones in (a duplicate, a stranger shape or a renamed bridge all end here)."""
    have = [sig for _h, sig in present if sig is not None]
    if len(have) == len(present) and sorted(have) == sorted(wanted):
        return [], []
    return list(present), list(wanted)


def commands(family: str, deletes: list[tuple[str, Present]],
             inserts: list[tuple[str, Rule]]) -> list[str]:
    """One batch; every delete must carry a handle read from the kernel."""
    cmds = []
    for _sid, (handle, _sig) in deletes:
        assert handle is not None
        cmds.append(delete_command(family, handle))
    cmds += [insert_command(family, sid, r) for sid, r in inserts]
    return cmds


# A plan over one family's rules of ours: (short ID, rule) pairs to delete and to insert.
Plan = Callable[[str, dict[str, list[Present]]],
                tuple[list[tuple[str, Present]], list[tuple[str, Rule]]]]


class ForeignForward:
    """Keeps nsnet's accepts in ``ip/ip6 filter FORWARD`` in line with the networks.

    Listing a chain costs ~40 us a rule in JSON (84 ms at 2,000), so the rules of ours are
    read once and kept for deciding what to insert; the copy is dropped when the chain's handle
    changes (re-made), a batch fails, or on ``invalidate`` (reconcile, which so reads each
    chain once however many networks it restores). What the copy cannot see is a flush of the
    chain: reconcile repairs that. Deletes always work from a fresh listing: a table re-made by
    someone else restarts its handles, and a remembered handle could then name their rule.
    """

    def __init__(self, nft: Nft) -> None:
        self._nft = nft
        self._json = Nft(json_output=True)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, dict[str, list[Present]]]] = {}
        # Networks ensured by this process and not removed since: a reconcile running beside
        # a network create must not take the new network's rules for leftovers.
        self._live: set[str] = set()
        self._warned_legacy = False

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def _items(self, what: str) -> list[dict[str, Any]] | None:
        try:
            out = self._json.run(f"list {what}")
        except NftError:
            return None
        items: list[dict[str, Any]] = json.loads(out or '{"nftables": []}').get("nftables", [])
        return items

    def _chain_handle(self, family: str) -> int | None:
        """The handle of ``filter FORWARD`` from a header-only listing (~0.15 ms; ``list
        tables`` would read every rule), or None when there is no such chain: nothing to do."""
        for item in self._items(f"chains {family}") or []:
            c = item.get("chain")
            if isinstance(c, dict) and c.get("table") == "filter" and c.get("name") == "FORWARD":
                return int(c["handle"])
        return None

    def _view(self, family: str, fresh: bool) -> dict[str, list[Present]] | None:
        handle = self._chain_handle(family)
        if handle is None:
            self._cache.pop(family, None)
            return None
        cached = self._cache.get(family)
        if not fresh and cached is not None and cached[0] == handle:
            return cached[1]
        items = self._items(f"chain {family} {CHAIN}")
        if items is None:
            self._cache.pop(family, None)
            return None
        ours = ours_in(items)
        self._cache[family] = (handle, ours)
        return ours

    def _sync(self, family: str, plan: Plan) -> list[tuple[str, Present]]:
        """Apply ``plan``; once more over a fresh listing if the batch fails (the chain changed
        underneath); nothing if the chain does not exist. Returns what was deleted."""
        for attempt in range(2):
            fresh = attempt > 0
            ours = self._view(family, fresh)
            if ours is None:
                return []
            deletes, inserts = plan(family, ours)
            if deletes and not fresh:
                fresh = True
                ours = self._view(family, fresh)
                if ours is None:
                    return []
                deletes, inserts = plan(family, ours)
            if not deletes and not inserts:
                return []
            try:
                self._nft.run("\n".join(commands(family, deletes, inserts)) + "\n")
            except NftError:
                self._cache.pop(family, None)
                if attempt == 1:
                    raise
                continue
            for sid, p in deletes:
                ours[sid].remove(p)
                if not ours[sid]:
                    del ours[sid]
            for sid, r in inserts:
                ours.setdefault(sid, []).append((None, r))
            return deletes
        return []

    def ensure(self, short_id: str, bridge: str, subnets: tuple[str, ...]) -> None:
        def plan(family: str, ours: dict[str, list[Present]]
                 ) -> tuple[list[tuple[str, Present]], list[tuple[str, Rule]]]:
            deletes, inserts = sync_changes(wanted_rules(bridge, subnets, family),
                                            ours.get(short_id, []))
            return [(short_id, p) for p in deletes], [(short_id, r) for r in inserts]

        self._warn_legacy()
        with self._lock:
            self._live.add(short_id)
            for family in FAMILIES:
                self._sync(family, plan)

    def remove(self, short_id: str) -> None:
        def plan(_family: str, ours: dict[str, list[Present]]
                 ) -> tuple[list[tuple[str, Present]], list[tuple[str, Rule]]]:
            return [(short_id, p) for p in ours.get(short_id, [])], []

        with self._lock:
            self._live.discard(short_id)
            for family in FAMILIES:
                try:
                    self._sync(family, plan)
                except NftError as e:
                    # A delete must not fail a network rm; reconcile removes what is left.
                    log.warning("removing nsnet:%s from %s %s: %s", short_id, family, CHAIN, e)

    def remove_unowned(self, known: set[str]) -> list[str]:
        """Remove our rules whose network is neither ``known`` nor made since; their IDs."""
        def plan(_family: str, ours: dict[str, list[Present]]
                 ) -> tuple[list[tuple[str, Present]], list[tuple[str, Rule]]]:
            return [(sid, p) for sid, ps in ours.items()
                    if sid not in known and sid not in self._live for p in ps], []

        removed: set[str] = set()
        with self._lock:
            for family in FAMILIES:
                removed.update(sid for sid, _p in self._sync(family, plan))
        return sorted(removed)

    def _warn_legacy(self) -> None:
        """A legacy (x_tables) ``filter`` table is invisible to nftables: say so once, since
        its FORWARD policy may drop nsnet's traffic and nsnet cannot add accepts there."""
        if self._warned_legacy:
            return
        self._warned_legacy = True
        for path in ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"):
            try:
                with open(path) as f:
                    names = f.read().split()
            except OSError:
                continue
            if "filter" in names:
                log.warning("a legacy iptables filter table exists (%s): nsnet adds its "
                            "FORWARD accepts only to iptables-nft tables; see "
                            "docs/kernel-names.md", path)
                return

    def close(self) -> None:
        self._json.close()
