"""Driver capabilities are typed protocols: the engine asks ``isinstance``, not ``getattr``."""

from __future__ import annotations

import pytest

from nsnet.drivers.base import (
    HasStalePorts,
    OwnsLinks,
    ProgramsPeers,
    PublishesPorts,
    Restorable,
    UniqueValidator,
)
from nsnet.drivers.bridge import BridgeDriver
from nsnet.drivers.macvlan import MacvlanDriver
from nsnet.drivers.null import HostDriver, NullDriver
from nsnet.testing.fake_kernel import FakeKernel


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


def test_bridge_has_restore_stale_ports_and_unique_names(kernel: FakeKernel) -> None:
    drv = BridgeDriver(kernel)
    assert isinstance(drv, Restorable)
    assert isinstance(drv, HasStalePorts)
    assert isinstance(drv, UniqueValidator)
    # The bridge itself is found by its name in driver_state, not through owned_links.
    assert not isinstance(drv, OwnsLinks)


@pytest.mark.parametrize("kind", ["macvlan", "ipvlan"])
def test_macvlan_owns_its_private_parent_and_shim(kernel: FakeKernel, kind: str) -> None:
    drv = MacvlanDriver(kernel, list, kind)
    assert isinstance(drv, OwnsLinks)
    assert not isinstance(drv, Restorable)
    assert not isinstance(drv, HasStalePorts)


@pytest.mark.parametrize("drv", [NullDriver(), HostDriver()])
def test_null_and_host_have_no_capability(drv: NullDriver) -> None:
    for cap in (Restorable, OwnsLinks, HasStalePorts, UniqueValidator, PublishesPorts,
                ProgramsPeers):
        assert not isinstance(drv, cap), cap.__name__


def test_only_the_bridge_publishes_ports(kernel: FakeKernel) -> None:
    """Published ports are the bridge's (issue 12); no local driver programs peers."""
    assert isinstance(BridgeDriver(kernel), PublishesPorts)
    assert not isinstance(MacvlanDriver(kernel, list), PublishesPorts)
    for drv in (BridgeDriver(kernel), MacvlanDriver(kernel, list)):
        assert not isinstance(drv, ProgramsPeers)


def test_a_half_implementation_is_not_a_capability() -> None:
    """isinstance wants every method of the protocol: a driver with ``publish`` alone does not
    claim to publish ports (it would fail on the first unpublish)."""

    class Half:
        def publish(self, *_a: object) -> None:
            pass

    assert not isinstance(Half(), PublishesPorts)
