"""``--network container:<name|id>`` and compose's ``network_mode: "service:web"`` (issue 11).

The dependent must be in the owner's network namespace (the same namespace inode under
/proc, the same interfaces and addresses read from inside), see the owner's /etc files and
hostname, show Docker's inspect (``container:<id>``, no networks), be refused what Docker
refuses with Docker's words, survive its owner's stop with only ``lo`` left, not start without
a running owner, and be adopted by a restarted daemon. Driven with the docker CLI, the Docker
SDK and docker-compose; every test ends with the fixture's leak check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from helpers import wait_for

from nsnet.testing.hosts import Daemon

COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI"),
]

WEB = ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && "
       "exec httpd -f -p 80 -h /www"]


def dx(d: Daemon, name: str, *cmd: str) -> str:
    return d.docker("exec", name, *cmd).stdout


def inspect(d: Daemon, name: str) -> dict[str, object]:
    data = json.loads(d.docker("inspect", name).stdout)
    assert isinstance(data, list)
    return dict(data[0])


def netns_of(d: Daemon, name: str) -> str:
    pid = d.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    return os.readlink(f"/proc/{pid}/ns/net")


def addresses(d: Daemon, name: str) -> list[str]:
    """``ifname address`` lines as busybox ip prints them inside the container."""
    out = dx(d, name, "ip", "-o", "addr", "show")
    return sorted(" ".join(line.split()[1:4]) for line in out.splitlines())


def links(d: Daemon, name: str) -> list[str]:
    out = dx(d, name, "ip", "-o", "link", "show")
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


@pytest.fixture
def clean(daemon: Daemon) -> Iterator[Daemon]:
    yield daemon
    text = (daemon.root / "nsnetd.log").read_text(errors="replace")
    assert "Traceback" not in text, daemon.log_tail(60)


def test_docker_run_network_container(clean: Daemon) -> None:
    d = clean
    d.docker("network", "create", "--subnet", "10.91.0.0/24", "front")
    web = d.docker("run", "-d", "--name", "web", "--network", "front", "busybox",
                   *WEB).stdout.strip()
    side = d.docker("run", "-d", "--name", "side", "--network", "container:web", "busybox",
                    "sleep", "3600").stdout.strip()
    # One namespace: the same inode, the same interfaces and addresses from inside.
    assert netns_of(d, "side") == netns_of(d, "web")
    assert addresses(d, "side") == addresses(d, "web")
    assert any(a.startswith("eth0 inet 10.91.0.") for a in addresses(d, "side"))
    # The owner's hostname and files.
    assert dx(d, "side", "hostname") == dx(d, "web", "hostname") == web[:12] + "\n"
    for f in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
        assert dx(d, "side", "cat", f) == dx(d, "web", "cat", f), f
    assert "nameserver 127.0.0.11" in dx(d, "side", "cat", "/etc/resolv.conf")
    # The owner's server on loopback, and the owner's resolver for names on its network.
    assert wait_for(lambda: d.docker("exec", "side", "wget", "-qO-", "http://127.0.0.1/",
                                     check=False).stdout == "hello-from-web\n", timeout=5)
    d.docker("run", "-d", "--name", "peer", "--network", "front", "busybox", "sleep", "3600")
    peer_ip = d.docker("inspect", "-f", "{{.NetworkSettings.Networks.front.IPAddress}}",
                       "peer").stdout.strip()
    assert f"Address: {peer_ip}" in dx(d, "side", "nslookup", "peer", "127.0.0.11")
    # Docker's inspect.
    j = inspect(d, "side")
    hc = j["HostConfig"]
    ns = j["NetworkSettings"]
    assert isinstance(hc, dict) and isinstance(ns, dict)
    assert hc["NetworkMode"] == f"container:{web}"
    assert ns["Networks"] == {} and ns["IPAddress"] == ""
    ps = d.docker("ps", "--filter", "name=side", "--format", "{{.Networks}}").stdout
    assert ps.strip() == ""
    # Connect and disconnect are refused; nothing changes inside.
    before = addresses(d, "side")
    p = d.docker("network", "connect", "front", "side", check=False)
    assert p.returncode != 0
    assert ("container sharing network namespace with another container or host cannot be "
            "connected to any other network") in p.stderr
    p = d.docker("network", "disconnect", "front", "side", check=False)
    assert p.returncode != 0 and f"container {side} is not connected to network front" in \
        p.stderr
    assert addresses(d, "side") == before
    # The owner stops: the dependent runs on with loopback only, and cannot start again
    # while the owner is down.
    d.docker("stop", "-t", "1", "web")
    assert d.docker("inspect", "-f", "{{.State.Running}}", "side").stdout.strip() == "true"
    assert wait_for(lambda: links(d, "side") == ["lo"], timeout=5), links(d, "side")
    d.docker("stop", "-t", "1", "side")
    p = d.docker("start", "side", check=False)
    assert p.returncode != 0
    assert f"cannot join network of a non running container: {web}" in p.stderr
    # The owner back: the dependent joins its new namespace.
    d.docker("start", "web")
    d.docker("start", "side")
    assert netns_of(d, "side") == netns_of(d, "web")
    d.docker("rm", "-f", "side", "web", "peer")
    d.docker("network", "rm", "front")


@pytest.mark.parametrize(("flags", "message"), [
    (["--hostname", "h"], "conflicting options: hostname and the network mode"),
    (["--dns", "192.0.2.1"], "conflicting options: dns and the network mode"),
    (["--add-host", "a:192.0.2.1"],
     "conflicting options: custom host-to-IP mapping and the network mode"),
    (["--link", "web:w"], "conflicting options: container type network can't be used with "
                          "links"),
    (["-p", "8080:80"], "conflicting options: port publishing and the container type network "
                        "mode"),
    (["--mac-address", "02:42:ac:11:00:09"],
     "conflicting options: mac-address and the network mode"),
])
def test_docker_refusals(clean: Daemon, flags: list[str], message: str) -> None:
    d = clean
    d.docker("run", "-d", "--name", "web", "busybox", "sleep", "3600")
    p = d.docker("run", "-d", "--network", "container:web", *flags, "busybox", "true",
                 check=False)
    assert p.returncode != 0 and message in p.stderr, p.stderr
    assert d.docker("ps", "-aq").stdout.split() == [
        d.docker("inspect", "-f", "{{.Id}}", "web").stdout.strip()[:12]]
    d.docker("rm", "-f", "web")


def test_sdk_network_mode_container(clean: Daemon) -> None:
    client = docker.DockerClient(base_url=f"unix://{clean.socket}")
    try:
        web = client.containers.run("busybox", WEB, name="web", detach=True)
        side = client.containers.run("busybox", ["sleep", "3600"], name="side",
                                     network_mode="container:web", detach=True)
        side.reload()
        assert side.attrs["HostConfig"]["NetworkMode"] == f"container:{web.id}"
        assert side.attrs["NetworkSettings"]["Networks"] == {}
        code, out = side.exec_run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        web.reload()
        ip = web.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        assert code == 0 and f" {ip}/" in out.decode(), out
        with pytest.raises(docker.errors.APIError) as e:
            client.containers.create("busybox", "true", network_mode="container:nosuch")
        assert e.value.status_code == 404 and "No such container: nosuch" in str(e.value)
        side.remove(force=True)
        web.remove(force=True)
    finally:
        client.close()


def test_dependent_adopted_after_daemon_restart(clean: Daemon) -> None:
    d = clean
    d.docker("network", "create", "--subnet", "10.92.0.0/24", "front")
    d.docker("run", "-d", "--name", "web", "--network", "front", "busybox", *WEB)
    d.docker("run", "-d", "--name", "side", "--network", "container:web", "busybox",
             "sleep", "3600")
    ns = netns_of(d, "side")
    before = addresses(d, "side")
    d.kill()
    d.start()
    assert d.docker("inspect", "-f", "{{.State.Running}}", "side").stdout.strip() == "true"
    assert netns_of(d, "side") == ns and addresses(d, "side") == before
    assert wait_for(lambda: d.docker("exec", "side", "wget", "-qO-", "http://127.0.0.1/",
                                     check=False).stdout == "hello-from-web\n", timeout=5)
    # Adopted, so watched: a stop is seen and recorded.
    d.docker("stop", "-t", "1", "side")
    assert d.docker("inspect", "-f", "{{.State.Status}}", "side").stdout.strip() == "exited"
    d.docker("rm", "-f", "side", "web")
    d.docker("network", "rm", "front")


COMPOSE_SIDECAR = """\
version: "3.8"
services:
  web:
    image: busybox
    command:
      - sh
      - -c
      - mkdir -p /www && echo compose-web > /www/index.html && exec httpd -f -p 80 -h /www
  sidecar:
    image: busybox
    command: ["sleep", "3600"]
    network_mode: "service:web"
    depends_on: [web]
"""


@pytest.mark.skipif(not Path(COMPOSE).exists(), reason="needs docker-compose (make install)")
def test_compose_network_mode_service(clean: Daemon, tmp_path: Path) -> None:
    d = clean
    proj = tmp_path / "side"
    proj.mkdir()
    (proj / "docker-compose.yml").write_text(COMPOSE_SIDECAR)

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([COMPOSE, "--no-ansi", "-p", "side", "-f",
                            str(proj / "docker-compose.yml"), *args], capture_output=True,
                           text=True, env=d.env, timeout=120, cwd=proj)
        assert p.returncode == 0, f"{args}: {p.stderr}\n{d.log_tail(30)}"
        return p

    compose("up", "-d")
    web = d.docker("inspect", "-f", "{{.Id}}", "side_web_1").stdout.strip()
    mode = d.docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", "side_sidecar_1").stdout
    assert mode.strip() == f"container:{web}"
    assert netns_of(d, "side_sidecar_1") == netns_of(d, "side_web_1")
    assert wait_for(lambda: d.docker("exec", "side_sidecar_1", "wget", "-qO-",
                                     "http://127.0.0.1/", check=False).stdout ==
                    "compose-web\n", timeout=5)
    compose("down", "-t", "1")
    assert d.docker("ps", "-aq").stdout.split() == []
