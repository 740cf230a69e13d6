"""The user's tour from the README, through the ``nsnet`` command against a real daemon."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import wait_for

from nsnet.testing.hosts import VENV_BIN, Daemon

pytestmark = pytest.mark.root


def make_rootfs_tar(tmp: Path) -> Path:
    root = tmp / "rootfs"
    (root / "bin").mkdir(parents=True)
    busybox = Path("/usr/bin/busybox").resolve()
    (root / "bin" / "busybox").write_bytes(busybox.read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "echo", "ip", "ping", "wget", "httpd", "sleep", "cat", "true",
                   "hostname"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("etc", "proc", "sys", "dev", "tmp"):
        (root / d).mkdir()
    tar = tmp / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    return tar


def test_readme_tour(daemon: Daemon, tmp_path: Path) -> None:
    n = daemon.cli
    assert "busybox" in n("images").stdout
    tar = make_rootfs_tar(tmp_path)
    n("image", "import", str(tar), "bb")
    assert any(line.startswith("bb ") for line in n("images").stdout.splitlines())

    appnet = n("network", "create", "appnet").stdout.strip()
    assert len(appnet) == 64
    n("network", "create", "--subnet", "10.30.0.0/24", "--gateway", "10.30.0.254",
      "--ip-range", "10.30.0.128/25", "--aux-address", "reserved=10.30.0.200",
      "--label", "team=a", "-o", "com.docker.network.bridge.enable_icc=true", "lab")
    ls = n("network", "ls").stdout.splitlines()
    assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert {line.split()[1] for line in ls[1:]} == {"appnet", "bridge", "host", "lab", "none"}
    assert n("network", "ls", "-q", "-f", "label=team=a").stdout.strip() == \
        json.loads(n("network", "inspect", "lab").stdout)[0]["Id"][:12]
    assert [json.loads(x)["Name"] for x in
            n("network", "ls", "-f", "driver=bridge", "--format", "json").stdout.splitlines()] \
        == ["appnet", "bridge", "lab"]
    inspected = json.loads(n("network", "inspect", "appnet", "lab").stdout)
    assert [x["Name"] for x in inspected] == ["appnet", "lab"]
    assert inspected[1]["IPAM"]["Config"][0]["AuxiliaryAddresses"] == {"reserved": "10.30.0.200"}

    web = n("run", "-d", "--name", "web", "--network", "appnet", "bb", "httpd", "-f", "-p",
            "80", "-h", "/etc").stdout.strip()
    n("run", "-d", "--name", "db", "--network", "lab", "--ip", "10.30.0.10", "bb", "sleep",
      "3600")
    bad = n("run", "-d", "--network", "appnet", "--ip", "10.30.0.11", "bb", "true",
            check=False)
    assert bad.returncode != 0 and "user configured subnets" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 3
    info = json.loads(n("inspect", "web").stdout)[0]
    web_ip = info["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
    assert info["State"]["Running"] and info["State"]["Pid"] > 0
    got = n("run", "--rm", "--network", "appnet", "bb", "wget", "-qO-",
            f"http://{web_ip}/hostname")
    assert got.stdout.strip() == web[:12]
    iso = n("run", "--rm", "--network", "lab", "bb", "ping", "-c1", "-W1", web_ip, check=False)
    assert iso.returncode == 1

    n("network", "connect", "lab", "web")
    out = n("exec", "web", "ip", "-o", "addr").stdout
    assert " eth1 " in out and " eth0 " in out
    n("network", "disconnect", "appnet", "web")
    assert wait_for(lambda: " eth0 " not in n("exec", "web", "ip", "-o", "addr").stdout)
    assert json.loads(n("inspect", "web").stdout)[0]["State"]["Running"]

    ps = n("ps").stdout.splitlines()
    assert ps[0].split()[:2] == ["CONTAINER", "ID"] and len(ps) == 3
    assert len(n("ps", "-a", "-q").stdout.split()) == 2
    assert "exit 7" not in n("logs", "web").stdout
    assert n("run", "--network", "appnet", "bb", "sh", "-c", "echo hi; exit 7",
             check=False).returncode == 7
    host = n("run", "--rm", "--network", "host", "bb", "ip", "-o", "link").stdout
    assert "nsnet0" in host
    none = n("run", "--rm", "--network", "none", "bb", "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in none.splitlines()] == ["lo"]

    assert n("stop", "-t", "1", "web").stdout.strip() == "web"
    assert n("rm", "-f", "web").stdout.strip() == "web"
    rm = n("network", "rm", "lab", check=False)
    assert rm.returncode == 1 and "has active endpoints" in rm.stderr
    n("rm", "-f", "db")
    assert n("network", "rm", "lab").stdout.strip() == "lab"
    pruned = n("network", "prune", "-f").stdout
    assert "appnet" in pruned
    assert n("version").returncode == 0 and "nsnet" in n("version").stdout
    assert "Containers:" in n("info").stdout


def test_cli_errors_are_one_line(daemon: Daemon) -> None:
    n = daemon.cli
    for args in (["network", "rm", "nosuch"], ["network", "create", "--subnet", "10.0.0.1/33",
                                                 "x"], ["inspect", "nosuch"],
                 ["network", "create", "bridge"], ["exec", "nosuch", "true"]):
        p = n(*args, check=False)
        assert p.returncode != 0, args
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, (args, p.stderr)
        assert "Traceback" not in p.stderr
    env = dict(daemon.env, NSNET_HOST=f"unix://{daemon.root}/nothing.sock")
    p = subprocess.run([str(VENV_BIN / "nsnet"), "network", "ls"], capture_output=True,
                       text=True, env=env, check=False)
    assert p.returncode != 0 and "is nsnetd running" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
