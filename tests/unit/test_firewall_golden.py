"""Golden files: the exact nftables text nsnet generates, over the bridge option matrix.

A change to the plans shows up here as a diff of the text nftables is given, to be read in
review, not as a few substring checks that miss a moved or doubled rule. After an intended
change, regenerate and read the diff::

    NSNET_REGOLD=1 .venv/bin/python -m pytest -q tests/unit/test_firewall_golden.py
    git diff tests/unit/golden/

Each network is built the way the bridge driver builds it (``BridgeDriver.firewall_of`` over
a ``Network`` with the options a user passes), so the options' parsing is covered as well.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nsnet.drivers.bridge import BridgeDriver
from nsnet.kernel.firewall import base_plan, network_plan, network_remove_plan
from nsnet.model import IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel

GOLDEN = Path(__file__).parent / "golden"
NET_ID = "0123456789ab" + "cd" * 26
V4 = IPAMPool(subnet="172.20.0.0/16", gateway="172.20.0.1")
V6 = IPAMPool(subnet="fd00:20::/64", gateway="fd00:20::1")

B = "com.docker.network.bridge."
CASES: dict[str, tuple[dict[str, str], bool, list[IPAMPool]]] = {
    # name: (options, internal, pools)
    "default": ({}, False, [V4]),
    "icc_off": ({B + "enable_icc": "false"}, False, [V4]),
    "masquerade_off": ({B + "enable_ip_masquerade": "false"}, False, [V4]),
    "icc_off_masquerade_off": ({B + "enable_icc": "false",
                                B + "enable_ip_masquerade": "false"}, False, [V4]),
    "internal": ({}, True, [V4]),
    "internal_icc_off": ({B + "enable_icc": "false"}, True, [V4]),
    "dual_stack": ({}, False, [V4, V6]),
    "routed4": ({B + "gateway_mode_ipv4": "routed"}, False, [V4]),
    "routed4_nat6": ({B + "gateway_mode_ipv4": "routed"}, False, [V4, V6]),
    "routed6_nat4": ({B + "gateway_mode_ipv6": "routed"}, False, [V4, V6]),
    "routed_both": ({B + "gateway_mode_ipv4": "routed", B + "gateway_mode_ipv6": "routed"},
                    False, [V4, V6]),
    "routed4_icc_off": ({B + "gateway_mode_ipv4": "routed", B + "enable_icc": "false"},
                        False, [V4]),
    "routed4_internal": ({B + "gateway_mode_ipv4": "routed"}, True, [V4]),
    "named_bridge": ({B + "name": "lab0", "com.docker.network.driver.mtu": "1400"}, False,
                     [V4]),
    "nat_unprotected4": ({B + "gateway_mode_ipv4": "nat-unprotected"}, False, [V4]),
    "nat_unprotected6_routed4": ({B + "gateway_mode_ipv6": "nat-unprotected",
                                  B + "gateway_mode_ipv4": "routed"}, False, [V4, V6]),
    "isolated_internal": ({B + "gateway_mode_ipv4": "isolated"}, True, [V4]),
}


def _network(options: dict[str, str], internal: bool, pools: list[IPAMPool]) -> Network:
    return Network(id=NET_ID, name="app", driver="bridge", created="", internal=internal,
                   pools=list(pools), options=dict(options))


def _check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.nft"
    if os.environ.get("NSNET_REGOLD") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with NSNET_REGOLD=1"
    assert text == path.read_text(), f"{path.name} differs (NSNET_REGOLD=1 to regenerate)"


def test_base_plan_golden() -> None:
    _check("base", base_plan())


@pytest.mark.parametrize("case", sorted(CASES))
def test_network_plan_golden(case: str) -> None:
    options, internal, pools = CASES[case]
    net = _network(options, internal, pools)
    drv = BridgeDriver(FakeKernel())
    drv.validate(net)  # every option of the matrix is one a user may pass
    fw = drv.firewall_of(net)
    remove = "\n".join(network_remove_plan(fw.short_id, fw.bridge, fw.subnets)) + "\n"
    _check(f"network_{case}", network_plan(fw) + "# removal\n" + remove)


def test_no_golden_file_is_stale() -> None:
    """A case taken out of the matrix takes its file along."""
    wanted = {"base.nft"} | {f"network_{c}.nft" for c in CASES}
    assert {p.name for p in GOLDEN.glob("*.nft")} == wanted
