"""Container basics that networking needs: run, exec, logs, stop, rm, restart of the daemon."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from helpers import api_error, exec_, host_link, ip_of, links_in, run, sandbox, wait_for

from nsnet.client.api import frames_text
from nsnet.testing.hosts import Daemon, sh

pytestmark = pytest.mark.root


def test_exit_codes_logs_and_etc_files(daemon: Daemon) -> None:
    c = daemon.client()
    c.networks.create({"Name": "appnet"})
    cid = run(c, cmd=["sh", "-c", "echo out; echo err >&2; cat /etc/hostname; exit 3"],
              network="appnet", name="job", Hostname="jobhost")
    assert c.containers.wait(cid)["StatusCode"] == 3
    info = c.containers.inspect(cid)
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 3
    # After exit the endpoint is gone, the configuration stays (Docker's inspect shape).
    assert info["NetworkSettings"]["Networks"]["appnet"]["IPAddress"] == ""
    out, err = frames_text(c.containers.logs(cid))
    assert out == b"out\njobhost\n" and err == b"err\n"
    long = run(c, network="appnet", name="long")
    code, out, _ = exec_(c, long, ["cat", "/etc/resolv.conf", "/etc/hosts"])
    assert code == 0
    assert "nameserver 127.0.0.11" in out and "ndots:0" in out
    assert f"{ip_of(c, long, 'appnet')}\t{long[:12]}" in out
    code, _, err = exec_(c, long, ["nosuchbinary"])
    assert code != 0
    assert exec_(c, long, ["sh", "-c", "exit 7"])[0] == 7


def test_stop_timeout_kill_and_rm(daemon: Daemon) -> None:
    c = daemon.client()
    cid = run(c, cmd=["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])
    t = time.monotonic()
    c.containers.stop(cid, t=5)
    assert time.monotonic() - t < 4
    assert c.containers.inspect(cid)["State"]["ExitCode"] == 0
    stubborn = run(c, cmd=["sleep", "3600"])  # PID 1 ignores SIGTERM: SIGKILL after -t
    t = time.monotonic()
    c.containers.stop(stubborn, t=1)
    assert 0.9 < time.monotonic() - t < 5
    assert c.containers.inspect(stubborn)["State"]["ExitCode"] == 137
    running = run(c)
    e = api_error(c.containers.remove, running)
    assert e.status == 409
    ns = sandbox(c, running)
    c.containers.remove(running, force=True)
    assert api_error(c.containers.inspect, running).status == 404
    assert not os.path.exists(ns)


def test_failed_start_rolls_back(daemon: Daemon) -> None:
    c = daemon.client()
    c.networks.create({"Name": "lab", "IPAM": {"Config": [{"Subnet": "10.31.0.0/24"}]}})
    links_before = {x["ifname"] for x in daemon.host.ip_json("link", "show")}
    e = api_error(run, c, cmd=["/no/such/binary"], network="lab", name="broken")
    assert e.status >= 400
    assert "no such file" in e.message.lower() or "not found" in e.message.lower()
    info = c.containers.inspect("broken")
    assert info["State"]["Status"] == "created"
    assert info["State"]["ExitCode"] == 127  # Docker's code for a command that cannot start
    assert info["NetworkSettings"]["SandboxKey"] == ""
    assert wait_for(lambda: {x["ifname"] for x in daemon.host.ip_json("link", "show")}
                    == links_before)
    assert os.listdir(daemon.exec_root / "netns") == []
    # The address it held is free again.
    ok = run(c, network="lab")
    assert ip_of(c, ok, "lab") == "10.31.0.2"
    # A missing network surfaces at start, like Docker.
    cid = run(c, network="nosuchnet", start=False)
    e = api_error(c.containers.start, cid)
    assert e.status == 404 and "network nosuchnet not found" in e.message


def test_connect_stopped_container_applies_at_start(daemon: Daemon) -> None:
    c = daemon.client()
    c.networks.create({"Name": "n1"})
    c.networks.create({"Name": "n2", "IPAM": {"Config": [{"Subnet": "10.32.0.0/24"}]}})
    cid = run(c, network="n1", start=False)
    c.networks.connect("n2", cid, {"IPAMConfig": {"IPv4Address": "10.32.0.9"}})
    nets = c.containers.inspect(cid)["NetworkSettings"]["Networks"]
    assert set(nets) == {"n1", "n2"}
    assert nets["n2"]["IPAMConfig"] == {"IPv4Address": "10.32.0.9"}
    c.containers.start(cid)
    addrs = {x["ifname"]: [a["local"] for a in x["addr_info"] if a["family"] == "inet"]
             for x in links_in(sandbox(c, cid))}
    assert addrs["eth1"] == ["10.32.0.9"]
    assert addrs["eth0"] == [ip_of(c, cid, "n1")]


def test_concurrent_runs_never_share_an_address(daemon: Daemon) -> None:
    c = daemon.client()
    c.networks.create({"Name": "busy", "IPAM": {"Config": [{"Subnet": "10.33.0.0/24"}]}})
    ids: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            ids.append(run(daemon.client(), network="busy"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ips = [ip_of(c, i, "busy") for i in ids]
    assert len(set(ips)) == 8


def test_daemon_restart_adopts_and_reconciles(daemon: Daemon) -> None:
    c = daemon.client()
    nid = c.networks.create({"Name": "keep"})["Id"]
    keeper = run(c, network="keep", name="keeper")
    victim = run(c, network="keep", name="victim")
    victim_pid = c.containers.inspect(victim)["State"]["Pid"]
    keeper_ip = ip_of(c, keeper, "keep")
    # The keeper's host-side veth: the peer of its eth0.
    eth0 = next(x for x in links_in(sandbox(c, keeper)) if x["ifname"] == "eth0")
    veth = [x["ifname"] for x in daemon.host.ip_json("link", "show")
            if x["ifindex"] == eth0["link_index"]]
    assert len(veth) == 1 and veth[0].startswith("veth")
    daemon.stop()
    # While the daemon is down: one container dies and someone deletes the bridge and table.
    os.kill(victim_pid, signal.SIGKILL)
    sh("ip", "link", "del", "br-" + nid[:12], ns=daemon.host.name)
    sh("ip", "link", "del", veth[0], ns=daemon.host.name)
    sh("nft", "delete", "table", "inet", "nsnet", ns=daemon.host.name)
    daemon.start()
    c = daemon.client()
    assert host_link(daemon, "br-" + nid[:12]) is not None
    assert c.containers.inspect("keeper")["State"]["Running"]
    assert c.containers.inspect("victim")["State"]["Status"] == "exited"
    assert ip_of(c, keeper, "keep") == keeper_ip
    # The rebuilt bridge carries the keeper's traffic again (its veth is back on it).
    other = run(c, network="keep")
    code, _, _ = exec_(c, other, ["ping", "-c1", "-W2", ip_of(c, keeper, "keep")])
    assert code == 0
    assert "n-" + nid[:12] in sh("nft", "list", "table", "inet", "nsnet",
                                 ns=daemon.host.name).stdout
