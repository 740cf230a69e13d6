"""rename, pause/unpause, top and resize (issue 11) through the docker CLI, the Docker SDK and
the nsnet CLI, read back independently: names from the embedded resolver with the host's dig
inside the sandbox, /etc/hosts from inside the container, the freezer from the container's
cgroup (v1 freezer.state or v2 cgroup.events), pids from /proc.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import APIError
from helpers import in_sandbox, wait_for

from nsnet.testing.hosts import Daemon

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [pytest.mark.root]
needs_docker = pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI")


def dk(d: Daemon, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    p = d.docker(*args, check=False)
    assert p.returncode == code, (f"docker {' '.join(args)}: exit {p.returncode}, wanted {code}"
                                  f"\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def names_of(d: Daemon, asker: str, name: str) -> list[str]:
    """What the embedded resolver answers ``asker`` for ``name`` (host dig in its sandbox)."""
    p = in_sandbox(d.client(), asker, "dig", "+time=2", "+tries=1", "@127.0.0.11", "+short",
                   name)
    return p.stdout.split()


def frozen(d: Daemon, ref: str) -> bool:
    """The freezer's own word on the container's cgroup: v1's freezer.state where the host
    has the v1 freezer controller, else v2's cgroup.events."""
    pid = d.client().containers.inspect(ref)["State"]["Pid"]
    paths = dict(ln.split(":", 2)[1:] for ln in
                 Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    if "freezer" in paths:
        state = Path(f"/sys/fs/cgroup/freezer{paths['freezer']}/freezer.state").read_text()
        return state.strip() == "FROZEN"
    events = Path(f"/sys/fs/cgroup{paths['']}/cgroup.events").read_text()
    return "frozen 1" in events.splitlines()


def state(d: Daemon, ref: str) -> dict[str, object]:
    st: dict[str, object] = d.client().containers.inspect(ref)["State"]
    return st


@pytest.fixture
def sdk(daemon: Daemon) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=f"unix://{daemon.socket}")
    try:
        yield c
    finally:
        c.close()


@needs_docker
def test_docker_rename_moves_dns_names_and_links(daemon: Daemon) -> None:
    d = daemon
    dk(d, "network", "create", "--subnet", "10.71.0.0/24", "n1")
    dk(d, "run", "-d", "--name", "web", "--network", "n1", "--network-alias", "www",
       "busybox", "sleep", "3600")
    dk(d, "run", "-d", "--name", "cl", "--network", "n1", "busybox", "sleep", "3600")
    ip = d.client().containers.inspect("web")["NetworkSettings"]["Networks"]["n1"]["IPAddress"]
    assert names_of(d, "cl", "web") == [ip]

    assert dk(d, "rename", "web", "web2").stdout == ""
    assert names_of(d, "cl", "web2") == [ip]
    assert names_of(d, "cl", "web") == []
    assert names_of(d, "cl", "www") == [ip]  # aliases stay
    info = d.client().containers.inspect("web2")
    assert info["Name"] == "/web2"
    assert "web2" in info["NetworkSettings"]["Networks"]["n1"]["DNSNames"]

    err = dk(d, "rename", "web2", "cl", code=1).stderr
    assert ('Error response from daemon: Error when allocating new name: Conflict. The '
            'container name "/cl" is already in use by container') in err
    err = dk(d, "rename", "web2", "bad name", code=1).stderr
    assert "Invalid container name (/bad name), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed" \
        in err
    err = dk(d, "rename", "web2", "web2", code=1).stderr
    assert "Renaming a container with the same name as its current name" in err
    assert "No such container: nope" in dk(d, "rename", "nope", "x", code=1).stderr

    # A stopped container renamed comes back under its new name at the next start.
    dk(d, "stop", "-t", "0", "web2")
    dk(d, "rename", "web2", "web3")
    dk(d, "start", "web3")
    ip3 = d.client().containers.inspect("web3")["NetworkSettings"]["Networks"]["n1"]["IPAddress"]
    assert names_of(d, "cl", "web3") == [ip3]
    assert names_of(d, "cl", "web2") == []

    # --link on the default bridge: the holder's /etc/hosts follows the renamed target.
    dk(d, "run", "-d", "--name", "db", "busybox", "sleep", "3600")
    dk(d, "run", "-d", "--name", "app", "--link", "db:database", "busybox", "sleep", "3600")
    dk(d, "rename", "db", "db2")
    hosts = dk(d, "exec", "app", "cat", "/etc/hosts").stdout
    line = next(ln for ln in hosts.splitlines() if "database" in ln).split()
    assert "db2" in line
    dk(d, "rm", "-f", "web3", "cl", "db2", "app")
    dk(d, "network", "rm", "n1")


@needs_docker
def test_docker_pause_unpause_and_what_a_paused_container_allows(daemon: Daemon) -> None:
    d = daemon
    dk(d, "run", "-d", "--name", "p", "busybox", "sleep", "3600")
    assert dk(d, "pause", "p").stdout.strip() == "p"
    assert frozen(d, "p")
    st = state(d, "p")
    assert (st["Status"], st["Paused"], st["Running"]) == ("paused", True, True)
    ps = dk(d, "ps", "--format", "{{.Names}} {{.State}} {{.Status}}").stdout.strip()
    assert ps.startswith("p paused Up ") and ps.endswith("(Paused)")
    assert "is already paused" in dk(d, "pause", "p", code=1).stderr
    top = dk(d, "top", "p").stdout  # top works on a paused container
    assert "sleep 3600" in top

    assert dk(d, "unpause", "p").stdout.strip() == "p"
    assert not frozen(d, "p")
    assert state(d, "p")["Status"] == "running"
    assert "is not paused" in dk(d, "unpause", "p", code=1).stderr

    # stop of a paused container: signalled, then resumed, so it ends.
    dk(d, "pause", "p")
    dk(d, "stop", "-t", "1", "p")
    st = state(d, "p")
    assert (st["Status"], st["Paused"], st["Running"]) == ("exited", False, False)
    assert "is not running" in dk(d, "pause", "p", code=1).stderr

    # rm of a paused container needs -f, and -f works.
    dk(d, "start", "p")
    dk(d, "pause", "p")
    err = dk(d, "rm", "p", code=1).stderr
    assert ('cannot remove container "/p": container is paused: unpause and then stop the '
            "container before removing or force remove") in err
    dk(d, "rm", "-f", "p")
    assert d.docker("inspect", "p", check=False).returncode == 1

    # kill of a paused container leaves it exited, not frozen.
    dk(d, "run", "-d", "--name", "k", "busybox", "sleep", "3600")
    dk(d, "pause", "k")
    dk(d, "kill", "k")
    assert wait_for(lambda: state(d, "k")["Status"] == "exited")
    dk(d, "rm", "k")


@needs_docker
def test_docker_top_lists_the_containers_processes_only(daemon: Daemon) -> None:
    d = daemon
    dk(d, "run", "-d", "--name", "t", "busybox", "sleep", "3600")
    dk(d, "exec", "-d", "t", "sleep", "777")
    pid = state(d, "t")["Pid"]
    assert wait_for(lambda: "sleep 777" in dk(d, "top", "t").stdout)
    lines = dk(d, "top", "t").stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    rows = [ln.split() for ln in lines[1:]]
    assert sorted(" ".join(r[7:]) for r in rows) == ["sleep 3600", "sleep 777"]
    assert str(pid) in [r[1] for r in rows]
    for r in rows:  # every pid listed is a real process in the container's cgroup
        assert Path(f"/proc/{r[1]}/cgroup").read_text() == \
            Path(f"/proc/{pid}/cgroup").read_text()

    custom = dk(d, "top", "t", "-o", "pid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert sorted(ln.split()[1] for ln in custom[1:]) == ["sleep", "sleep"]

    # ps_args never reach a shell; a renamed PID column is refused.
    marker = d.root / "top-injected"
    dk(d, "top", "t", "-o", f"pid;touch {marker}", code=1)
    assert not marker.exists()
    err = dk(d, "top", "t", "-o", "user=PID", code=1).stderr
    assert 'specifying "user=PID" is not allowed' in err

    dk(d, "stop", "-t", "0", "t")
    assert "is not running" in dk(d, "top", "t", code=1).stderr
    dk(d, "rm", "t")


def test_sdk_rename_pause_top_resize(daemon: Daemon, sdk: docker.DockerClient) -> None:
    c = sdk.containers.run("busybox", ["sleep", "3600"], name="s1", detach=True)
    c.rename("s2")
    c.reload()
    assert c.name == "s2"
    with pytest.raises(APIError) as info:
        sdk.containers.run("busybox", ["sleep", "3600"], name="s3", detach=True).rename("s2")
    assert info.value.status_code == 409

    c.pause()
    c.reload()
    assert c.status == "paused" and c.attrs["State"]["Paused"] is True
    assert frozen(daemon, c.id)
    top = c.top()
    assert top["Titles"][1] == "PID"
    assert [p[-1] for p in top["Processes"]] == ["sleep 3600"]
    assert c.top(ps_args="-o pid,comm")["Titles"] == ["PID", "COMMAND"]
    c.unpause()
    c.reload()
    assert c.status == "running" and not frozen(daemon, c.id)

    c.resize(24, 80)  # no TTY: accepted, nothing to size
    e = sdk.api.exec_create(c.id, ["true"])
    sdk.api.exec_resize(e["Id"], height=24, width=80)
    with pytest.raises(APIError) as info:
        sdk.api.exec_resize("nope", height=24, width=80)
    assert info.value.status_code == 404
    for bad in ("x", "-1"):
        r = sdk.api._post(sdk.api._url("/containers/{0}/resize", c.id),
                          params={"h": bad, "w": "80"})
        assert r.status_code == 400, r.text
    c.stop(timeout=0)
    with pytest.raises(APIError) as info:
        c.resize(24, 80)
    assert info.value.status_code == 409
    for x in sdk.containers.list(all=True):
        x.remove(force=True)


def test_nsnet_cli_rename_pause_unpause_top(daemon: Daemon) -> None:
    d = daemon
    d.cli("run", "-d", "--name", "n1", "busybox", "sleep", "3600")
    assert d.cli("rename", "n1", "n2").stdout == ""
    assert d.client().containers.inspect("n2")["Name"] == "/n2"
    p = d.cli("rename", "n2", "bad name", check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "Invalid container name" in p.stderr
    p = d.cli("rename", "n2", " ", check=False)
    assert (p.returncode, p.stderr.strip()) == (1, "Error: Neither old nor new names may be "
                                                   "empty")

    assert d.cli("pause", "n2").stdout.strip() == "n2"
    assert frozen(d, "n2")
    ps = d.cli("ps").stdout
    assert "(Paused)" in ps
    p = d.cli("pause", "n2", "nope", check=False)
    assert p.returncode == 1 and "is already paused" in p.stderr and "nope" in p.stderr
    top = d.cli("top", "n2", "-o", "pid,comm").stdout.splitlines()
    assert top[0].split() == ["PID", "COMMAND"] and top[1].split()[1] == "sleep"
    assert d.cli("unpause", "n2").stdout.strip() == "n2"
    assert not frozen(d, "n2")
    assert "sleep 3600" in d.cli("container", "top", "n2").stdout
    d.cli("rm", "-f", "n2")
