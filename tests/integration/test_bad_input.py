"""Hostile and malformed requests (issue 8, items 5 and 9): each one is a 4xx with Docker's JSON
error body naming what is wrong, and leaves no trace: no network, container, link or sandbox
file appears, and a running container is not signalled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rawhttp import oversized, request, state

from nsnet.testing.hosts import Daemon, daemon_host

pytestmark = pytest.mark.root

VICTIM = "victim"
# PID 1 of a pid namespace ignores SIGTERM unless it traps it: the trap records any stray signal.
TRAP = ["sh", "-c", "trap 'echo got-term' TERM; while :; do sleep 0.1; done"]


@pytest.fixture(scope="module")
def d() -> Iterator[Daemon]:
    with daemon_host() as dd:
        c = dd.client()
        c.networks.create({"Name": "good", "IPAM": {"Config": [{"Subnet": "10.77.0.0/24"}]}})
        cid = c.containers.create({"Image": "busybox", "Cmd": TRAP,
                                   "HostConfig": {"NetworkMode": "good"}}, name=VICTIM)["Id"]
        c.containers.start(cid)
        yield dd


def net(**ipam: Any) -> dict[str, Any]:
    return {"Name": "bad", "EnableIPv6": True, "IPAM": {"Config": [ipam]}}


def ctr(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"Image": "busybox", "Cmd": ["true"]}
    hc = {k[3:]: v for k, v in fields.items() if k.startswith("hc_")}
    body.update({k: v for k, v in fields.items() if not k.startswith("hc_")})
    if hc:
        body["HostConfig"] = hc
    return body


def ep(**fields: Any) -> dict[str, Any]:
    return ctr(hc_NetworkMode="good", NetworkingConfig={"EndpointsConfig": {"good": fields}})


def deep(n: int) -> bytes:
    return b'{"Name": ' + b"[" * n + b"]" * n + b"}"


# (method, path, query, body, status, words the message must hold)
CASES: dict[str, tuple[str, str, dict[str, str] | None, Any, int, str]] = {
    # -- networks: IPAM shapes and semantics
    "subnet-number": ("POST", "/networks/create", None, net(Subnet=167772160), 400,
                      "IPAM.Config[0].Subnet"),
    "subnet-bool": ("POST", "/networks/create", None, net(Subnet=True), 400,
                    "IPAM.Config[0].Subnet"),
    "iprange-number": ("POST", "/networks/create", None,
                       net(Subnet="10.78.0.0/16", IPRange=5), 400, "IPRange"),
    "iprange-bool": ("POST", "/networks/create", None,
                     net(Subnet="10.78.0.0/16", IPRange=False), 400, "IPRange"),
    "gateway-number": ("POST", "/networks/create", None,
                       net(Subnet="10.78.0.0/16", Gateway=7), 400, "Gateway"),
    "subnet-multicast-v6": ("POST", "/networks/create", None, net(Subnet="ff00::/8"), 400,
                            "ff00::/8"),
    "subnet-loopback": ("POST", "/networks/create", None, net(Subnet="127.0.0.0/8"), 400,
                        "127.0.0.0/8"),
    "subnet-multicast": ("POST", "/networks/create", None, net(Subnet="224.0.0.0/24"), 400,
                         "224.0.0.0/24"),
    "subnet-slash32": ("POST", "/networks/create", None, net(Subnet="10.78.0.5/32"), 400,
                       "too small"),
    "subnet-slash32-gateway": ("POST", "/networks/create", None,
                               net(Subnet="10.78.0.5/32", Gateway="10.78.0.5"), 400,
                               "too small"),
    "gateway-is-network": ("POST", "/networks/create", None,
                           net(Subnet="10.78.0.0/24", Gateway="10.78.0.0"), 400,
                           "network address"),
    "gateway-is-broadcast": ("POST", "/networks/create", None,
                             net(Subnet="10.78.0.0/24", Gateway="10.78.0.255"), 400,
                             "broadcast address"),
    "network-name-newline": ("POST", "/networks/create", None, {"Name": "bad\n"}, 400,
                             "invalid network name"),
    "network-name-filter-regexp": ("GET", "/networks", {"filters": '{"name": ["("]}'}, None,
                                   400, "name"),
    "deep-json": ("POST", "/networks/create", None, deep(50_000), 400, "invalid JSON"),
    "deep-filters": ("GET", "/networks", {"filters": "[" * 1200 + "]" * 1200}, None, 400,
                     "invalid filter"),
    # -- containers: shapes
    "networkmode-number": ("POST", "/containers/create", None, ctr(hc_NetworkMode=5), 400,
                           "HostConfig.NetworkMode"),
    "mac-garbage": ("POST", "/containers/create", None, ep(MacAddress="zz:zz"), 400,
                    "zz:zz"),
    "mac-multicast": ("POST", "/containers/create", None, ep(MacAddress="01:00:5e:00:00:01"),
                      400, "multicast"),
    "mac-garbage-connect": ("POST", "/networks/bridge/connect", None,
                            {"Container": VICTIM, "EndpointConfig": {"MacAddress": "zz:zz"}},
                            400, "zz:zz"),
    "hostname-100": ("POST", "/containers/create", None, ctr(Hostname="h" * 100), 400,
                     "Hostname"),
    "hostname-newline": ("POST", "/containers/create", None, ctr(Hostname="a\n10.0.0.1 b"),
                         400, "Hostname"),
    "env-nul": ("POST", "/containers/create", None, ctr(Env=["A=b\x00c"]), 400, "Env"),
    "hostname-number": ("POST", "/containers/create", None, ctr(Hostname=5), 400, "Hostname"),
    "workingdir-number": ("POST", "/containers/create", None, ctr(WorkingDir=5), 400,
                          "WorkingDir"),
    "workingdir-relative": ("POST", "/containers/create", None, ctr(WorkingDir="tmp"), 400,
                            "WorkingDir"),
    "user-number": ("POST", "/containers/create", None, ctr(User=0), 400, "User"),
    "user-list": ("POST", "/containers/create", None, ctr(User=["root"]), 400, "User"),
    "name-newline": ("POST", "/containers/create", {"name": "web\n"}, ctr(), 400,
                     "Invalid container name"),
    "name-filter-regexp": ("GET", "/containers/json", {"filters": '{"name": ["("]}'}, None,
                           400, "name"),
    "extra-host-garbage": ("POST", "/containers/create", None,
                           ctr(hc_ExtraHosts=["a:not-an-ip\n1.2.3.4 b"]), 400, "ExtraHosts"),
    "dns-garbage": ("POST", "/containers/create", None,
                    ctr(hc_Dns=["192.0.2.1\nnameserver 203.0.113.9"]), 400, "Dns"),
    "alias-newline": ("POST", "/containers/create", None, ep(Aliases=["a\nb"]), 400,
                      "Aliases"),
    # -- containers: options nsnet does not implement are refused, never dropped
    "privileged": ("POST", "/containers/create", None, ctr(hc_Privileged=True), 400,
                   "HostConfig.Privileged is not supported"),
    "binds": ("POST", "/containers/create", None, ctr(hc_Binds=["/:/host"]), 400,
              "HostConfig.Binds"),
    "mounts": ("POST", "/containers/create", None,
               ctr(hc_Mounts=[{"Type": "bind", "Source": "/", "Target": "/host"}]), 400,
               "HostConfig.Mounts"),
    "capadd": ("POST", "/containers/create", None, ctr(hc_CapAdd=["SYS_ADMIN"]), 400,
               "HostConfig.CapAdd"),
    "capdrop": ("POST", "/containers/create", None, ctr(hc_CapDrop=["NET_RAW"]), 400,
                "HostConfig.CapDrop"),
    "devices": ("POST", "/containers/create", None, ctr(hc_Devices=[{
        "PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem",
        "CgroupPermissions": "rwm"}]), 400, "HostConfig.Devices"),
    "pidmode": ("POST", "/containers/create", None, ctr(hc_PidMode="host"), 400,
                "HostConfig.PidMode"),
    "ipcmode": ("POST", "/containers/create", None, ctr(hc_IpcMode="host"), 400,
                "HostConfig.IpcMode"),
    "utsmode": ("POST", "/containers/create", None, ctr(hc_UTSMode="host"), 400,
                "HostConfig.UTSMode"),
    "securityopt": ("POST", "/containers/create", None,
                    ctr(hc_SecurityOpt=["seccomp=unconfined"]), 400, "HostConfig.SecurityOpt"),
    "readonly-rootfs": ("POST", "/containers/create", None, ctr(hc_ReadonlyRootfs=True), 400,
                        "HostConfig.ReadonlyRootfs"),
    "sysctls": ("POST", "/containers/create", None,
                ctr(hc_Sysctls={"net.ipv4.ip_forward": "1"}), 400, "HostConfig.Sysctls"),
    "tmpfs": ("POST", "/containers/create", None, ctr(hc_Tmpfs={"/run": ""}), 400,
              "HostConfig.Tmpfs"),
    "volumes-from": ("POST", "/containers/create", None, ctr(hc_VolumesFrom=[VICTIM]), 400,
                     "HostConfig.VolumesFrom"),
    "volumes": ("POST", "/containers/create", None, ctr(Volumes={"/data": {}}), 400,
                "Volumes"),
    "cgroup-parent": ("POST", "/containers/create", None, ctr(hc_CgroupParent="/x"), 400,
                      "HostConfig.CgroupParent"),
    "memory": ("POST", "/containers/create", None, ctr(hc_Memory=1 << 26), 400,
               "HostConfig.Memory"),
    "restart-policy": ("POST", "/containers/create", None,
                       ctr(hc_RestartPolicy={"Name": "always"}), 400,
                       "HostConfig.RestartPolicy"),
    "masked-paths-empty": ("POST", "/containers/create", None, ctr(hc_MaskedPaths=[]), 400,
                           "HostConfig.MaskedPaths"),
    "log-driver": ("POST", "/containers/create", None,
                   ctr(hc_LogConfig={"Type": "syslog", "Config": {}}), 400,
                   "HostConfig.LogConfig"),
    "healthcheck": ("POST", "/containers/create", None,
                    ctr(Healthcheck={"Test": ["CMD", "true"]}), 400, "Healthcheck"),
    "exec-privileged": ("POST", f"/containers/{VICTIM}/exec", None,
                        {"Cmd": ["true"], "Privileged": True}, 400, "Privileged"),
    "exec-user-number": ("POST", f"/containers/{VICTIM}/exec", None,
                         {"Cmd": ["true"], "User": 0}, 400, "User"),
    # -- signals and timeouts, checked before any signal is sent
    "kill-signal-99": ("POST", f"/containers/{VICTIM}/kill", {"signal": "99"}, None, 400,
                       "signal"),
    "kill-signal-0": ("POST", f"/containers/{VICTIM}/kill", {"signal": "0"}, None, 400,
                      "signal"),
    "stop-t-huge-float": ("POST", f"/containers/{VICTIM}/stop", {"t": "1e400"}, None, 400,
                          "timeout"),
    "stop-t-huge-int": ("POST", f"/containers/{VICTIM}/stop", {"t": "9" * 400}, None, 400,
                        "timeout"),
    "stop-signal-bogus": ("POST", f"/containers/{VICTIM}/stop", {"signal": "SIGBOGUS"}, None,
                          400, "signal"),
    "restart-t-huge": ("POST", f"/containers/{VICTIM}/restart", {"t": "9" * 400}, None, 400,
                       "timeout"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_json_4xx_and_changes_nothing(d: Daemon, case: str) -> None:
    method, path, query, body, status, text = CASES[case]
    before = state(d)
    r = request(d, method, path, body, query)
    assert r.status == status, f"{case}: {r.status} {r.body[:300]!r}"
    msg = r.message()
    assert text in msg, f"{case}: {msg!r} lacks {text!r}"
    assert state(d) == before
    if VICTIM in path:
        time.sleep(0.3)  # the trap would have printed by now
        logs = request(d, "GET", f"/containers/{VICTIM}/logs",
                       query={"stdout": "1", "stderr": "1"})
        assert b"got-term" not in logs.body


def test_a_100_mb_body_is_a_json_413(d: Daemon) -> None:
    before = state(d)
    r = oversized(d, "/networks/create", 100 * 1024 * 1024)
    assert r.status == 413, r.body[:200]
    assert "too large" in r.message()
    assert state(d) == before
    # The daemon is still serving.
    assert request(d, "GET", "/_ping").status == 200


def test_what_real_clients_send_by_default_is_still_accepted(d: Daemon) -> None:
    """Zero values of every refused field, as the docker CLI 28 and docker-py 7 send them."""
    body = ctr(
        Hostname="", Domainname="", User="", Env=None, WorkingDir="", Volumes={},
        Entrypoint=None, OnBuild=None, Labels={}, MacAddress="", Healthcheck=None,
        StopSignal="", ExposedPorts={"80/tcp": {}},
        hc_Binds=None, hc_ContainerIDFile="", hc_LogConfig={"Type": "", "Config": {}},
        hc_NetworkMode="default", hc_PortBindings={}, hc_RestartPolicy={
            "Name": "no", "MaximumRetryCount": 0}, hc_AutoRemove=False, hc_VolumeDriver="",
        hc_VolumesFrom=None, hc_ConsoleSize=[0, 0], hc_CapAdd=None, hc_CapDrop=None,
        hc_CgroupnsMode="", hc_Dns=[], hc_DnsOptions=[], hc_DnsSearch=[], hc_ExtraHosts=None,
        hc_GroupAdd=None, hc_IpcMode="", hc_Cgroup="", hc_Links=None, hc_OomScoreAdj=0,
        hc_PidMode="", hc_Privileged=False, hc_PublishAllPorts=False, hc_ReadonlyRootfs=False,
        hc_SecurityOpt=None, hc_UTSMode="", hc_UsernsMode="", hc_ShmSize=0, hc_Runtime="",
        hc_Isolation="", hc_CpuShares=0, hc_Memory=0, hc_NanoCpus=0, hc_CgroupParent="",
        hc_BlkioWeight=0, hc_BlkioWeightDevice=[], hc_BlkioDeviceReadBps=[],
        hc_BlkioDeviceWriteBps=[], hc_BlkioDeviceReadIOps=[], hc_BlkioDeviceWriteIOps=[],
        hc_CpuPeriod=0, hc_CpuQuota=0, hc_CpuRealtimePeriod=0, hc_CpuRealtimeRuntime=0,
        hc_CpusetCpus="", hc_CpusetMems="", hc_Devices=[], hc_DeviceCgroupRules=None,
        hc_DeviceRequests=None, hc_MemoryReservation=0, hc_MemorySwap=0,
        hc_MemorySwappiness=-1, hc_OomKillDisable=False, hc_PidsLimit=None, hc_Ulimits=[],
        hc_CpuCount=0, hc_CpuPercent=0, hc_IOMaximumIOps=0, hc_IOMaximumBandwidth=0,
        hc_MaskedPaths=None, hc_ReadonlyPaths=None, hc_Init=None, hc_Mounts=None,
        hc_Tmpfs=None, hc_Sysctls=None, hc_Annotations=None, hc_StorageOpt=None,
    )
    r = request(d, "POST", "/containers/create", body)
    assert r.status == 201, r.body
    cid = json.loads(r.body)["Id"]
    # The values that name what nsnet already does are accepted too.
    r2 = request(d, "POST", "/containers/create", ctr(
        hc_IpcMode="private", hc_CgroupnsMode="host", hc_UsernsMode="host",
        hc_LogConfig={"Type": "json-file"}, hc_Runtime="runc", hc_PidsLimit=0,
        hc_RestartPolicy={"Name": ""}))
    assert r2.status == 201, r2.body
    for x in (cid, json.loads(r2.body)["Id"]):
        assert request(d, "DELETE", f"/containers/{x}").status == 204


def test_the_victim_survived_every_refusal(d: Daemon) -> None:
    """Runs after the refusals: the running container was never signalled."""
    info = d.client().containers.inspect(VICTIM)
    assert info["State"]["Status"] == "running"
    logs = request(d, "GET", f"/containers/{VICTIM}/logs", query={"stdout": "1"})
    assert b"got-term" not in logs.body


@pytest.mark.parametrize("path", ["/networks", "/containers/json"])
def test_a_backtracking_filter_pattern_cannot_freeze_the_daemon(d: Daemon, path: str) -> None:
    """``(a|aa)+$`` against a 40-letter name runs for hours in a backtracking engine; Docker's
    Go engine is linear. The listing answers 400 at once and the daemon keeps serving."""
    name = "a" * 40 + "-x"
    made = request(d, "POST", "/networks/create", {"Name": name})
    assert made.status == 201, made.body
    try:
        assert request(d, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"]},
                       query={"name": name}).status == 201
        started = time.monotonic()
        r = request(d, "GET", path, query={"all": "1", "filters": json.dumps(
            {"name": ["(a|aa)+$"]})}, timeout=10)
        assert r.status == 400 and "too long" in r.message(), r.body
        assert time.monotonic() - started < 3
        assert request(d, "GET", "/_ping", timeout=2).status == 200
        plain = request(d, "GET", path, query={"all": "1", "filters": json.dumps(
            {"name": ["^a+-x$"]})})
        assert plain.status == 200 and len(json.loads(plain.body)) == 1
    finally:
        request(d, "DELETE", f"/containers/{name}", query={"force": "1"})
        request(d, "DELETE", f"/networks/{name}")
