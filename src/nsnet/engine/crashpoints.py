"""Named steps of every state-changing use-case, where a test can make the daemon die.

A crash between two writes is where stores go wrong: an address freed while a stored endpoint
still uses it, a link nobody owns, a namespace left behind. Each use-case calls
``crash_point("<op>.<step>")`` between its steps; the test suite arms one name at a time
(``NSNET_TESTING=1 NSNET_TEST_CRASH_AT=<op>.<step>`` in the daemon's environment, read once at
start), runs the operation, and the daemon SIGKILLs itself at that step, exactly as a
``kill -9`` or an OOM kill would. The test then restarts the daemon and checks the store against
the kernel (``nsnet.testing.invariants``).

Nothing arms a point but the environment of a daemon started for tests: no API route, no CLI
flag. Disarmed (always, in production) a call costs one string comparison with ``None``.

Every name lives in ``POINTS`` so the test can walk them all; a name that a use-case calls but
this table lacks fails a unit test, and one in the table that its operation never reaches fails
the walk (the daemon does not die).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping

log = logging.getLogger("nsnet.engine")

ENV_POINT = "NSNET_TEST_CRASH_AT"
ENV_TESTING = "NSNET_TESTING"

# name -> the state the store and the kernel are in when the daemon dies there.
POINTS: dict[str, str] = {
    "network_create.kernel_made": "bridge and firewall chains made, network not stored",
    "network_create.saved": "network stored, reply not sent",
    "network_rm.kernel_removed": "firewall chains gone, bridge queued for deletion, network "
                                 "and its allocations still stored",
    "network_rm.forgotten": "network and its allocations gone from the store (one "
                            "transaction), reply not sent",
    "create.saved": "container stored (created), reply not sent",
    "start.namespace_made": "sandbox namespace made, nothing stored",
    "start.endpoint_joined": "first endpoint's address claimed and its link made in the "
                             "sandbox, container not stored as running",
    "start.sandbox_ready": "sandbox complete (routes, /etc files, resolver), runc not started",
    "start.runc_started": "container process running, not stored as running",
    "start.saved": "container stored as running with its endpoints, reply not sent",
    "connect.endpoint_joined": "address claimed and link made in the sandbox, endpoint not "
                               "stored",
    "connect.sandbox_updated": "default route, resolver and /etc files updated, endpoint not "
                               "stored",
    "connect.saved": "endpoint and its address stored (one transaction with the claim), reply "
                     "not sent",
    "disconnect.kernel_left": "endpoint's links down and queued for deletion, endpoint and "
                              "address still stored",
    "disconnect.saved": "container stored without the endpoint and its address freed (one "
                        "transaction), resolver and /etc files not updated",
    "stop.signalled": "stop signal sent to the container, its exit not handled",
    "exit.sandbox_removed": "container exited; its namespace and links are gone, it is still "
                            "stored as running with its endpoints and addresses",
    "exit.saved": "container stored as exited without endpoints, addresses freed (one "
                  "transaction), runc state not deleted",
    "exit.runc_deleted": "runc state and bundle deleted after the exit",
    "rm.runc_deleted": "runc state and bundle of a stopped container deleted, still stored",
    "rm.data_removed": "writable layer, logs and /etc files removed, still stored",
    "rm.forgotten": "container gone from the store, reply not sent",
}

_armed: str | None = None


def operations() -> dict[str, list[str]]:
    """Points grouped by operation, in the order the operation reaches them."""
    out: dict[str, list[str]] = {}
    for name in POINTS:
        out.setdefault(name.split(".", 1)[0], []).append(name)
    return out


def arm(name: str | None) -> None:
    global _armed
    if name is not None and name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(POINTS)}")
    _armed = name


def armed() -> str | None:
    return _armed


def arm_from_env(env: Mapping[str, str]) -> str | None:
    """Arm the point named in the environment, only for a daemon started for tests."""
    name = env.get(ENV_POINT, "")
    if not name:
        return None
    if env.get(ENV_TESTING) != "1":
        log.warning("%s=%s ignored: crash points are honoured only with %s=1 (tests)",
                    ENV_POINT, name, ENV_TESTING)
        return None
    arm(name)
    log.warning("test crash point armed: the daemon will SIGKILL itself at %s", name)
    return name


def crash_point(name: str) -> None:
    """Die here, abruptly, if this step is the armed one (tests only)."""
    if _armed is not None and name == _armed:
        # SIGKILL, not exit: no finally blocks, no atexit, no flush: a real crash.
        os.kill(os.getpid(), signal.SIGKILL)
