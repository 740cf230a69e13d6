"""The Docker SDK for Python (docker-py 7) against nsnetd, quirks included.

docker-py differs from the CLI on the wire: list-encoded
filters, ``True``/``False`` booleans, versioned ``/_ping``, the malformed ``NetworkingConfig``
of ``containers.run(network=N)``, container attrs read before start, ``leave_swarm`` tolerating
only 503/406, and ``ImageNotFound`` picked from 404 message texts.
"""

from __future__ import annotations

import io
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import APIError, ContainerError, ImageNotFound, NotFound
from docker.types import IPAMConfig, IPAMPool
from helpers import wait_for

from nsnet.testing.hosts import Daemon

pytestmark = pytest.mark.root


@pytest.fixture
def client(daemon: Daemon) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=f"unix://{daemon.socket}")
    try:
        yield c
    finally:
        c.close()
    text = (daemon.root / "nsnetd.log").read_text(errors="replace")
    assert "Traceback" not in text, daemon.log_tail(60)


def status_of(fn: Any, *args: Any, **kw: Any) -> tuple[int, str]:
    try:
        fn(*args, **kw)
    except APIError as e:
        return int(e.status_code or 0), str(e.explanation)
    raise AssertionError(f"{fn} did not fail")


def rootfs_tar(greeting: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for dname in ("bin", "etc"):
            info = tarfile.TarInfo(dname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = Path("/usr/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "cat", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        info = tarfile.TarInfo("etc/greeting")
        info.size = len(greeting)
        tar.addfile(info, io.BytesIO(greeting.encode()))
    return buf.getvalue()


def test_sdk_system_version_and_swarm(client: docker.DockerClient, daemon: Daemon) -> None:
    assert client.ping() is True  # versioned: GET /v1.45/_ping
    v = client.version()  # negotiated first with an unversioned GET /version
    assert (v["ApiVersion"], v["MinAPIVersion"], v["Os"]) == ("1.45", "1.24", "linux")
    assert client.api.api_version == "1.45"
    assert [c["Name"] for c in v["Components"]] == ["Engine"]
    assert all(isinstance(x, str) for x in v["Components"][0]["Details"].values())
    info = client.info()
    assert info["ExperimentalBuild"] is False and info["Name"]
    assert info["Swarm"]["LocalNodeState"] == "inactive" and info["OSType"] == "linux"
    # docker-py's network helpers call leave_swarm and accept only 503/406.
    assert client.api.leave_swarm(force=True) is True
    assert status_of(client.swarm.init) == (503, "This node is not part of a swarm")
    # A pinned older version works; one newer than ours is refused with moby's text.
    old = docker.DockerClient(base_url=f"unix://{daemon.socket}", version="1.41")
    assert old.api.api_version == "1.41"
    assert {n.name for n in old.networks.list()} == {"bridge", "host", "none"}
    old.close()
    new = docker.DockerClient(base_url=f"unix://{daemon.socket}", version="1.46")
    code, msg = status_of(new.networks.list)
    assert code == 400 and "client version 1.46 is too new" in msg
    new.close()


def test_sdk_networks_create_list_connect_disconnect_prune(client: docker.DockerClient) -> None:
    ipam = IPAMConfig(pool_configs=[
        IPAMPool(subnet="fd00:50::/64", gateway="fd00:50::1"),
        IPAMPool(subnet="10.50.0.0/24", iprange="10.50.0.128/25", gateway="10.50.0.254",
                 aux_addresses={"reserved": "10.50.0.200"}),
    ])
    net = client.networks.create("sdknet", driver="bridge", ipam=ipam, labels={"env": "sdk"},
                                 options={"com.docker.network.bridge.name": "br-sdk"},
                                 attachable=True, enable_ipv6=True, check_duplicate=True)
    assert re.fullmatch(r"[0-9a-f]{64}", net.id) and net.name == "sdknet"
    attrs = client.api.inspect_network(net.id, verbose=True, scope="local")
    # IPv4 first whatever the order given; no empty keys; Options absent or null.
    assert attrs["IPAM"]["Config"] == [
        {"Subnet": "10.50.0.0/24", "IPRange": "10.50.0.128/25", "Gateway": "10.50.0.254",
         "AuxiliaryAddresses": {"reserved": "10.50.0.200"}},
        {"Subnet": "fd00:50::/64", "Gateway": "fd00:50::1"}]
    assert attrs["IPAM"].get("Options") is None
    assert (attrs["Labels"], attrs["Attachable"], attrs["EnableIPv6"]) == \
        ({"env": "sdk"}, True, True)
    # IPAMPool(subnet=X) sends nested nulls (IPRange, Gateway, AuxiliaryAddresses).
    small = client.networks.create("small", ipam=IPAMConfig(
        pool_configs=[IPAMPool(subnet="10.51.0.0/24")]))
    assert small.attrs["IPAM"]["Config"] == [{"Subnet": "10.51.0.0/24", "Gateway": "10.51.0.1"}]

    # Refusals: duplicate 409, predefined 403, missing 404.
    code, msg = status_of(client.networks.create, "sdknet")
    assert code == 409 and "already exists" in msg
    for name in ("bridge", "host", "none", "default"):
        assert status_of(client.networks.create, name)[0] == 403
    for name in ("bridge", "host", "none"):
        code, msg = status_of(client.api.remove_network, name)
        assert code == 403 and "pre-defined" in msg
    with pytest.raises(NotFound):
        client.networks.get("nosuch")

    # list: docker-py's list-encoded filters.
    assert [n.name for n in client.networks.list(names=["sdknet"])] == ["sdknet"]
    assert [n.id for n in client.networks.list(ids=[net.id])] == [net.id]
    assert [n.name for n in client.networks.list(filters={"label": "env=sdk"})] == ["sdknet"]
    assert sorted(n.name for n in client.networks.list(filters={"type": "custom"})) == \
        ["sdknet", "small"]
    assert sorted(n.name for n in client.networks.list(filters={"driver": "null"})) == ["none"]

    # containers.run(network=N): NetworkingConfig {"N": null}; attrs come from the inspect
    # before start, so NetworkSettings must already name the network.
    srv = client.containers.run(
        "busybox", ["sh", "-c", "echo sdk-ok > /tmp/i.html; exec httpd -f -p 8080 -h /tmp"],
        network="sdknet", detach=True, name="srv")
    assert srv.attrs["State"]["Status"] == "created"
    assert list(srv.attrs["NetworkSettings"]["Networks"]) == ["sdknet"]
    srv.reload()
    assert srv.status == "running"
    ep = srv.attrs["NetworkSettings"]["Networks"]["sdknet"]
    assert ep["IPAddress"] == "10.50.0.128"  # lowest free address of the ip-range
    assert (ep["Aliases"], ep["Links"], ep["DriverOpts"]) == (None, None, None)

    # networking_config with an EndpointConfig: aliases and driver options echoed.
    cli = client.containers.run(
        "busybox", "sleep 300", detach=True, name="cli", network="sdknet",
        networking_config={"sdknet": client.api.create_endpoint_config(
            aliases=["hello"], driver_opt={"key1": "a"})})
    cli_ep = cli.attrs["NetworkSettings"]["Networks"]["sdknet"]
    assert (cli_ep["Aliases"], cli_ep["DriverOpts"]) == (["hello"], {"key1": "a"})
    # connect with every option, on a container of the default bridge.
    other = client.containers.run("busybox", "sleep 300", detach=True, name="other")
    net.connect(other, aliases=["a1", "a2"], ipv4_address="10.50.0.10",
                ipv6_address="fd00:50::10", links={"srv": "web"})
    other.reload()
    oep = other.attrs["NetworkSettings"]["Networks"]["sdknet"]
    assert oep["IPAMConfig"] == {"IPv4Address": "10.50.0.10", "IPv6Address": "fd00:50::10"}
    assert (oep["IPAddress"], oep["GlobalIPv6Address"]) == ("10.50.0.10", "fd00:50::10")
    assert (oep["Aliases"], oep["Links"]) == (["a1", "a2"], ["srv:web"])
    assert set(other.attrs["NetworkSettings"]["Networks"]) == {"bridge", "sdknet"}
    # Traffic by name through the embedded DNS, and an alias seen from another container.
    assert other.exec_run("wget -qO- http://srv:8080/i.html") == (0, b"sdk-ok\n")
    code, output = cli.exec_run(["nslookup", "-type=a", "a2."])
    assert code == 0 and b"10.50.0.10" in output

    net.reload()
    assert {c.id for c in net.containers} == {srv.id, cli.id, other.id}
    assert net.attrs["Containers"][other.id]["IPv4Address"] == "10.50.0.10/24"
    assert net.attrs["Containers"][other.id]["IPv6Address"] == "fd00:50::10/64"
    greedy = {n.name: n for n in client.networks.list(greedy=True)}
    assert {c.id for c in greedy["sdknet"].containers} == {srv.id, cli.id, other.id}
    assert greedy["small"].containers == []
    code, msg = status_of(net.remove)
    assert code == 403 and "has active endpoints" in msg

    net.disconnect(other, force=True)
    other.reload()
    assert set(other.attrs["NetworkSettings"]["Networks"]) == {"bridge"}
    assert status_of(net.disconnect, other)[0] == 403

    # prune: names back, filtered by label; the network in use stays.
    client.networks.create("p1", labels={"gone": "yes"})
    assert client.networks.prune(filters={"label": "gone=yes"}) == {"NetworksDeleted": ["p1"]}
    assert client.networks.prune() == {"NetworksDeleted": ["small"]}
    for c in (srv, cli, other):
        c.remove(force=True)
    net.remove()
    with pytest.raises(NotFound):
        client.networks.get(net.id)


def test_sdk_containers_run_exec_logs_wait_remove(client: docker.DockerClient) -> None:
    # Foreground run: stdout back as bytes; a non-zero exit is ContainerError.
    assert client.containers.run("busybox", ["sh", "-c", "echo hello; echo e >&2"],
                                 remove=True) == b"hello\n"
    with pytest.raises(ContainerError) as ce:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert ce.value.exit_status == 3
    with pytest.raises(ImageNotFound):
        client.containers.run("nosuchimage:1", "true")
    with pytest.raises(ImageNotFound):
        client.containers.create("nosuchimage:1", "true")
    assert client.containers.list(all=True) == []

    # A command that cannot run: 400 at start; an auto-remove container is removed.
    api = client.api
    cid = api.create_container("busybox", "nosuchcmd",
                               host_config=api.create_host_config(auto_remove=True))["Id"]
    code, msg = status_of(api.start, cid)
    assert code == 400 and "executable file not found" in msg
    with pytest.raises(NotFound):
        client.containers.get(cid)
    kept = api.create_container("busybox", "/etc/passwd")["Id"]
    code, msg = status_of(api.start, kept)
    assert code == 400 and "permission denied" in msg
    assert client.containers.get(kept).status == "created"
    api.remove_container(kept, v=True, force=True)  # ?v=True&link=False&force=True

    # Default network, spelled as docker-py does: no HostConfig, or NetworkMode "default".
    bare = api.create_container("busybox", "true")["Id"]
    dflt = api.create_container("busybox", "true",
                                host_config=api.create_host_config(network_mode="default"))["Id"]
    for x in (bare, dflt):
        info = api.inspect_container(x)
        assert info["HostConfig"]["NetworkMode"] == "bridge"
        assert list(info["NetworkSettings"]["Networks"]) == ["bridge"]
        api.remove_container(x)

    # Detached, with the usual options.
    c = client.containers.run(
        "busybox", ["sh", "-c", "echo line1; echo line2 >&2; exec sleep 300"], detach=True,
        name="d1", environment={"A": "1"}, working_dir="/tmp", hostname="hh",
        labels={"k": "v"}, dns=["192.0.2.10"])
    assert wait_for(lambda: c.logs() == b"line1\nline2\n")
    assert (c.logs(stderr=False), c.logs(stdout=False)) == (b"line1\n", b"line2\n")
    assert c.exec_run("sh -c 'echo $A $(pwd) $(hostname)'") == (0, b"1 /tmp hh\n")
    r = c.exec_run("sh -c 'echo out; echo err >&2; exit 2'")
    assert r.exit_code == 2 and b"out\n" in r.output and b"err\n" in r.output
    assert c.exec_run(["echo", "x"], demux=True) == (0, (b"x\n", None))
    assert c.exec_run("sh -c 'echo $X; pwd'", environment=["X=2"], workdir="/bin") == \
        (0, b"2\n/bin\n")
    assert c.exec_run("cat /etc/resolv.conf").output.count(b"nameserver 192.0.2.10") == 1
    c.exec_run("sh -c 'echo bg > /tmp/bg'", detach=True)
    assert wait_for(lambda: c.exec_run("cat /tmp/bg") == (0, b"bg\n"))

    assert [x.name for x in client.containers.list()] == ["d1"]
    assert [x.name for x in client.containers.list(filters={"label": "k=v"})] == ["d1"]
    assert [x.name for x in client.containers.list(all=True, filters={"name": "d1"})] == ["d1"]
    assert client.containers.list(filters={"status": "exited"}) == []
    assert client.containers.get("d1").id == c.id

    # wait conditions: not-running returns at once for a created container; next-exit waits.
    w = client.containers.create("busybox", ["sh", "-c", "sleep 0.3; exit 7"])
    assert w.wait() == {"Error": None, "StatusCode": 0}
    got: dict[str, Any] = {}
    t = threading.Thread(target=lambda: got.update(api.wait(w.id, condition="next-exit")))
    t.start()
    time.sleep(0.2)
    w.start()
    t.join(10)
    assert got == {"Error": None, "StatusCode": 7}

    # stop, kill, remove.
    c.stop(timeout=1)  # sleep ignores TERM as PID 1: SIGKILL after 1 s
    assert c.wait() == {"Error": None, "StatusCode": 137}
    c.reload()
    assert (c.status, c.attrs["State"]["ExitCode"]) == ("exited", 137)
    c.start()
    c.reload()
    assert c.status == "running"
    c.kill()
    assert c.wait()["StatusCode"] == 137
    code, msg = status_of(c.kill)
    assert code == 409 and "is not running" in msg
    running = client.containers.run("busybox", "sleep 300", detach=True)
    assert status_of(running.remove)[0] == 409
    running.remove(force=True)
    c.remove()
    w.remove()
    with pytest.raises(NotFound):
        client.containers.get("d1")
    assert client.containers.list(all=True) == []


def test_sdk_images_import_get_remove(client: docker.DockerClient, tmp_path: Path) -> None:
    data = rootfs_tar("from data\n")
    out = client.api.import_image_from_data(data, repository="sdkimg", tag="v1")
    iid = re.search(r"sha256:[0-9a-f]{64}", out)
    assert iid is not None
    path = tmp_path / "rootfs.tar"
    path.write_bytes(rootfs_tar("from file\n"))
    out2 = client.api.import_image(src=str(path), repository="sdkimg2", tag="v2")
    iid2 = re.search(r"sha256:[0-9a-f]{64}", out2)
    assert iid2 is not None and iid2.group(0) != iid.group(0)

    img = client.images.get("sdkimg:v1")
    assert img.id == iid.group(0) and img.tags == ["sdkimg:v1"]
    assert sorted(t for i in client.images.list() for t in i.tags) == \
        ["busybox:latest", "sdkimg2:v2", "sdkimg:v1"]
    assert client.containers.run("sdkimg:v1", ["cat", "/etc/greeting"], remove=True) == \
        b"from data\n"
    assert client.containers.run("sdkimg2:v2", ["cat", "/etc/greeting"], remove=True) == \
        b"from file\n"

    client.images.remove("sdkimg2:v2")
    with pytest.raises(ImageNotFound):
        client.images.get("sdkimg2:v2")
    with pytest.raises(ImageNotFound):
        client.images.remove("nosuch")
    with pytest.raises(ImageNotFound) as e:
        client.images.pull("alpine")
    assert "nsnet does not pull" in str(e.value)
    client.images.remove("sdkimg:v1")
    assert [t for i in client.images.list() for t in i.tags] == ["busybox:latest"]


def test_sdk_detached_exec_runs_until_its_command_ends(client: docker.DockerClient) -> None:
    c = client.containers.run("busybox", "sleep 300", detach=True)
    eid = client.api.exec_create(c.id, ["sh", "-c", "sleep 1; exit 3"])["Id"]
    client.api.exec_start(eid, detach=True)
    info = client.api.exec_inspect(eid)
    assert (info["Running"], info["ExitCode"]) == (True, None)
    assert wait_for(lambda: client.api.exec_inspect(eid)["ExitCode"] == 3, timeout=5)
