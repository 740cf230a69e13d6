"""The crash-point registry matches the code, and only a daemon started for tests arms one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import nsnet
from nsnet.engine import crashpoints

SRC = Path(nsnet.__file__).parent


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    crashpoints.arm(None)


def test_every_called_point_is_registered_and_every_registered_one_called() -> None:
    called: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.name == "crashpoints.py":
            continue
        called |= set(re.findall(r'crash_point\("([^"]+)"\)', path.read_text()))
    assert called == set(crashpoints.POINTS)


def test_points_are_op_dot_step_and_grouped_in_order() -> None:
    for name in crashpoints.POINTS:
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", name), name
    ops = crashpoints.operations()
    assert ops["disconnect"] == ["disconnect.kernel_left", "disconnect.saved"]
    assert sum(len(v) for v in ops.values()) == len(crashpoints.POINTS)


def test_environment_arms_only_for_tests(caplog: pytest.LogCaptureFixture) -> None:
    assert crashpoints.arm_from_env({}) is None
    # Without NSNET_TESTING=1 the point is ignored, and says so.
    assert crashpoints.arm_from_env({"NSNET_TEST_CRASH_AT": "connect.saved"}) is None
    assert crashpoints.armed() is None
    assert "ignored" in caplog.text
    assert crashpoints.arm_from_env({"NSNET_TEST_CRASH_AT": "connect.saved",
                                     "NSNET_TESTING": "1"}) == "connect.saved"
    assert crashpoints.armed() == "connect.saved"
    with pytest.raises(ValueError, match="unknown crash point"):
        crashpoints.arm_from_env({"NSNET_TEST_CRASH_AT": "connect.typo", "NSNET_TESTING": "1"})


def test_an_unarmed_or_other_point_does_nothing() -> None:
    crashpoints.crash_point("connect.saved")  # disarmed: returns
    crashpoints.arm("disconnect.saved")
    crashpoints.crash_point("connect.saved")  # another point: returns
