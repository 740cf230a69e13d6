"""Issue 11: the network names Docker accepts (``"my net"``, ``test@#$``) work end to end with
the real docker CLI and the nsnet CLI: create, ls, inspect by name and ID prefix, run, DNS on
the network, the firewall rule's comment, rm; names Docker's own rule would let through but
that would break a log line or ``network ls`` (control characters) are one readable 400."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import wait_for

from nsnet.testing.hosts import Daemon

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI"),
]


def comments(d: Daemon) -> list[str]:
    """Every rule comment in the daemon's host namespace, read with ``nft -j``."""
    out = []
    for item in d.host.nft_json("list", "ruleset"):
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict) and isinstance(rule.get("comment"), str):
            out.append(str(rule["comment"]))
    return out


def test_spaced_and_symbol_names_work_end_to_end(daemon: Daemon) -> None:
    d = daemon
    spaced = d.docker("network", "create", "--subnet", "10.71.0.0/24", "my net").stdout.strip()
    symbol = d.docker("network", "create", "test@#$").stdout.strip()
    listed = d.docker("network", "ls", "--format", "{{.Name}}|{{.ID}}").stdout.splitlines()
    assert f"my net|{spaced[:12]}" in listed and f"test@#$|{symbol[:12]}" in listed, listed
    # By name, by ID prefix, through the nsnet CLI too.
    assert d.docker("network", "inspect", "-f", "{{.Id}}", "my net").stdout.strip() == spaced
    assert d.docker("network", "inspect", "-f", "{{.Name}}", symbol[:6]).stdout.strip() == \
        "test@#$"
    assert d.cli("network", "inspect", "-f", "{{.Name}}", "test@#$").stdout.strip() == "test@#$"
    assert "my net" in d.cli("network", "ls").stdout
    # The bridge's firewall rules name the network in their comments, spaces and all.
    assert any(c == f"nsnet network my net {spaced[:12]}" for c in comments(d)), comments(d)
    assert any(c == f"nsnet network test@#$ {symbol[:12]}" for c in comments(d)), comments(d)

    # Containers on it resolve each other by name and talk.
    d.docker("run", "-d", "--name", "srv", "--network", "my net", "busybox", "sleep", "3600")
    d.docker("run", "-d", "--name", "cli", "--network", "my net", "busybox", "sleep", "3600")
    assert wait_for(lambda: d.docker("exec", "cli", "ping", "-c1", "-W1", "srv",
                                     check=False).returncode == 0, timeout=5)
    nets = json.loads(d.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                               "srv").stdout)
    assert list(nets) == ["my net"] and nets["my net"]["IPAddress"].startswith("10.71.0.")
    d.docker("network", "connect", "test@#$", "srv")
    d.docker("network", "disconnect", "test@#$", "srv")
    d.docker("rm", "-f", "srv", "cli")
    d.docker("network", "rm", "my net", symbol[:12])
    assert "my net" not in d.docker("network", "ls").stdout
    assert not any("my net" in c or "test@#$" in c for c in comments(d))


def test_names_refused_as_one_readable_line(daemon: Daemon) -> None:
    d = daemon
    for name, text in (("a\tb", "control characters"), ("line\nbreak", "control characters"),
                       ("   ", "name is empty"), ("host", "predefined host network")):
        p = d.docker("network", "create", name, check=False)
        assert p.returncode != 0 and text in p.stderr, (name, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    d.docker("network", "create", "dup name")
    p = d.docker("network", "create", "dup name", check=False)
    assert p.returncode != 0 and "already exists" in p.stderr, p.stderr
    # Container names keep Docker's stricter rule.
    p = d.docker("create", "--name", "my box", "busybox", "true", check=False)
    assert p.returncode != 0 and "Invalid container name" in p.stderr, p.stderr
    d.docker("network", "rm", "dup name")
    log = (d.root / "nsnetd.log").read_text(errors="replace")
    assert "Traceback" not in log, d.log_tail(40)
    # The access log (the fixture runs the daemon at --log-level debug) shows each call: the
    # refusals at INFO, the successes at DEBUG, never a request body.
    tag = " nsnet.api.server: "
    access = [ln.split(tag, 1) for ln in log.splitlines() if tag in ln]
    seen = {(head.split()[-1], line.split()[0], line.split()[1].split("/", 2)[-1],
             line.split()[2]) for head, line in access}
    assert ("INFO", "POST", "networks/create", "409") in seen, seen
    assert ("INFO", "POST", "networks/create", "400") in seen, seen
    assert ("DEBUG", "DELETE", "networks/dup%20name", "204") in seen, seen
    assert '"Name"' not in "".join(line for _, line in access)
