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
# A rule of ours found in the chain: its handle and what it does (None: not a shape we write).
Present = tuple[int, Rule | None]


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


def sync_plan(family: str, short_id: str, wanted: list[Rule],
              present: list[Present]) -> list[str]:
    """Commands that make one network's rules exactly ``wanted``; none when they already are
    (so a reconcile that changes nothing writes nothing)."""
    have = [sig for _h, sig in present if sig is not None]
    if len(have) == len(present) and sorted(have) == sorted(wanted):
        return []
    cmds = [delete_command(family, h) for h, _sig in present]
    cmds += [insert_command(family, short_id, r) for r in wanted]
    return cmds


class ForeignForward:
    """Keeps nsnet's accepts in ``ip/ip6 filter FORWARD`` in line with the networks.

    Each change lists the chain (~0.3 ms through libnftables, no fork) and applies one batch
    per family; it runs at network create/remove and reconcile, never per container.
    """

    def __init__(self, nft: Nft) -> None:
        self._nft = nft
        self._json = Nft(json_output=True)
        self._lock = threading.Lock()
        # Networks ensured by this process and not removed since: a reconcile running beside
        # a network create must not take the new network's rules for leftovers.
        self._live: set[str] = set()
        self._warned_legacy = False

    def _chain(self, family: str) -> list[dict[str, Any]] | None:
        """The chain's items, or None when there is no such chain (nothing to do)."""
        try:
            out = self._json.run(f"list chain {family} {CHAIN}")
        except NftError:
            return None
        items: list[dict[str, Any]] = json.loads(out or '{"nftables": []}').get("nftables", [])
        return items

    def _sync(self, family: str,
              plan: Callable[[str, dict[str, list[Present]]], list[str]]) -> None:
        """Apply ``plan`` over a fresh listing; once more if the chain changed underneath (an
        admin flushing it at the same moment); nothing if the chain has gone."""
        for attempt in range(2):
            chain = self._chain(family)
            if chain is None:
                return
            cmds = plan(family, ours_in(chain))
            if not cmds:
                return
            try:
                self._nft.run("\n".join(cmds) + "\n")
                return
            except NftError:
                if attempt == 1:
                    raise

    def ensure(self, short_id: str, bridge: str, subnets: tuple[str, ...]) -> None:
        def plan(family: str, ours: dict[str, list[Present]]) -> list[str]:
            wanted = wanted_rules(bridge, subnets, family)
            return sync_plan(family, short_id, wanted, ours.get(short_id, []))

        self._warn_legacy()
        with self._lock:
            self._live.add(short_id)
            for family in FAMILIES:
                self._sync(family, plan)

    def remove(self, short_id: str) -> None:
        def plan(family: str, ours: dict[str, list[Present]]) -> list[str]:
            return [delete_command(family, h) for h, _s in ours.get(short_id, [])]

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
        removed: set[str] = set()

        def plan(family: str, ours: dict[str, list[Present]]) -> list[str]:
            gone = [sid for sid in ours if sid not in known and sid not in self._live]
            removed.update(gone)
            return [delete_command(family, h) for sid in gone for h, _s in ours[sid]]

        with self._lock:
            for family in FAMILIES:
                self._sync(family, plan)
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
