"""The real docker CLI against nsnetd: every command nsnet serves, typed as a user types it.

Outputs and exit codes are asserted the way docker CLI 28 prints them against a moby daemon.
Each test groups several commands to share one daemon start-up; the daemon's own log must stay
free of tracebacks throughout.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import host_link, wait_for

from nsnet.testing.hosts import Daemon

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI"),
]

HEX64 = re.compile(r"[0-9a-f]{64}")


def dk(d: Daemon, *args: str, code: int = 0, env: dict[str, str] | None = None,
       stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI against ``d``; assert the exit code."""
    if env is None and stdin is None:
        p = d.docker(*args, check=False)
    else:
        e = dict(d.env)
        e.update(env or {})
        raw = subprocess.run([DOCKER, *args], capture_output=True, env=e, timeout=60,
                             input=stdin)
        p = subprocess.CompletedProcess(raw.args, raw.returncode,
                                        raw.stdout.decode(errors="replace"),
                                        raw.stderr.decode(errors="replace"))
    assert p.returncode == code, (f"docker {' '.join(args)}: exit {p.returncode}, wanted {code}"
                                  f"\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def out(d: Daemon, *args: str, env: dict[str, str] | None = None) -> str:
    """Stdout of a command that must succeed, without the trailing newline."""
    return dk(d, *args, env=env).stdout.strip()


def dk_ok(d: Daemon, *args: str) -> bool:
    return d.docker(*args, check=False).returncode == 0


def log_is_clean(d: Daemon) -> None:
    text = (d.root / "nsnetd.log").read_text(errors="replace")
    assert "Traceback" not in text, d.log_tail(60)


def rootfs_tar(path: Path, greeting: str, extra: dict[str, str] | None = None) -> Path:
    """A tiny root filesystem: the static busybox and a few applet links."""
    busybox = Path("/usr/bin/busybox").read_bytes()
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for dname in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(dname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        add("bin/busybox", busybox, 0o755)
        for applet in ("sh", "cat", "echo", "sleep", "ls"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add("etc/greeting", greeting.encode())
        for name, text in (extra or {}).items():
            add(name, text.encode())
    return path


# -- system ---------------------------------------------------------------------------------


def test_version_info_and_api_version_negotiation(daemon: Daemon) -> None:
    v = dk(daemon, "version").stdout
    assert "Server: nsnet" in v
    assert re.search(r"API version:\s+1\.45 \(minimum version 1\.24\)", v), v
    # The client negotiated down to what the daemon advertises on /_ping.
    assert re.search(r"API version:\s+1\.45 \(downgraded from 1\.\d+\)", v), v
    assert out(daemon, "version", "--format",
               "{{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Client.APIVersion}} "
               "{{.Server.Os}} {{.Server.Experimental}}") == "1.45 1.24 1.45 linux false"
    info = dk(daemon, "info")
    assert "Swarm: inactive" in info.stdout and "OSType: linux" in info.stdout
    assert info.stderr.strip() == ""
    assert out(daemon, "info", "--format",
               "{{.OSType}} {{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Images}}"
               ) == "linux inactive false 1"

    # An older client (DOCKER_API_VERSION disables negotiation): /v1.41/... paths, and the
    # network create body carries CheckDuplicate.
    old = {"DOCKER_API_VERSION": "1.41"}
    assert out(daemon, "version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}",
               env=old) == "1.41 1.45"
    nid = out(daemon, "network", "create", "old", env=old)
    assert HEX64.fullmatch(nid)
    p = dk(daemon, "network", "create", "old", code=1, env=old)
    assert "network with name old already exists" in p.stderr
    assert dk(daemon, "run", "--rm", "--network", "old", "busybox", "echo", "hi",
              env=old).stdout == "hi\n"
    assert out(daemon, "network", "rm", "old", env=old) == "old"

    # Outside [1.24, 1.45]: moby's messages, exit 1.
    p = dk(daemon, "version", code=1, env={"DOCKER_API_VERSION": "1.46"})
    assert "client version 1.46 is too new. Maximum supported API version is 1.45" in p.stderr
    p = dk(daemon, "network", "ls", code=1, env={"DOCKER_API_VERSION": "1.23"})
    assert "client version 1.23 is too old. Minimum supported API version is 1.24" in p.stderr
    log_is_clean(daemon)


# -- networks -------------------------------------------------------------------------------


def test_network_create_every_flag_ls_filters_and_inspect(daemon: Daemon) -> None:
    nid = out(daemon, "network", "create", "--driver", "bridge",
              "--subnet", "10.40.0.0/16", "--ip-range", "10.40.5.0/24",
              "--gateway", "10.40.5.254", "--aux-address", "a=10.40.1.5",
              "--aux-address", "b=10.40.1.6", "--ipv6", "--subnet", "fd00:40::/64",
              "--gateway", "fd00:40::1", "--internal", "--attachable",
              "--opt", "com.docker.network.bridge.name=br-flags",
              "--opt", "com.docker.network.bridge.enable_icc=false",
              "--label", "env=test", "--label", "flag", "--ipam-driver", "default", "full")
    assert HEX64.fullmatch(nid)
    [net] = json.loads(out(daemon, "network", "inspect", "full"))
    assert (net["Name"], net["Id"], net["Driver"], net["Scope"]) == ("full", nid, "bridge", "local")
    assert datetime.fromisoformat(net["Created"].replace("Z", "+00:00")[:26] + "+00:00")
    assert (net["EnableIPv4"], net["EnableIPv6"], net["Internal"], net["Attachable"],
            net["Ingress"], net["ConfigOnly"]) == (True, True, True, True, False, False)
    # IPAM config entries omit empty keys; the IPv4 entry comes first; Options null when unset.
    assert net["IPAM"] == {"Driver": "default", "Options": None, "Config": [
        {"Subnet": "10.40.0.0/16", "IPRange": "10.40.5.0/24", "Gateway": "10.40.5.254",
         "AuxiliaryAddresses": {"a": "10.40.1.5", "b": "10.40.1.6"}},
        {"Subnet": "fd00:40::/64", "Gateway": "fd00:40::1"}]}
    assert net["Options"] == {"com.docker.network.bridge.name": "br-flags",
                              "com.docker.network.bridge.enable_icc": "false"}
    assert net["Labels"] == {"env": "test", "flag": ""}
    assert net["Containers"] == {} and net["ConfigFrom"] == {"Network": ""}
    link = host_link(daemon, "br-flags")
    assert link is not None
    assert any(a["local"] == "10.40.5.254" for a in link["addr_info"])

    # A plain create sends empty IPAM options and config: the daemon picks the next pool.
    pid = out(daemon, "network", "create", "plain")
    [plain] = json.loads(out(daemon, "network", "inspect", pid))
    assert plain["IPAM"] == {"Driver": "default", "Options": None,
                             "Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]}
    assert (plain["Options"], plain["Labels"], plain["EnableIPv6"]) == ({}, {}, False)

    # ls: sorted by name, 12-character IDs, the four columns.
    lines = out(daemon, "network", "ls").splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[1] for r in rows] == ["bridge", "full", "host", "none", "plain"]
    assert {r[1]: (r[2], r[3]) for r in rows}["none"] == ("null", "local")
    assert [r[0] for r in rows if r[1] == "full"] == [nid[:12]]
    assert set(out(daemon, "network", "ls", "-q").split()) == {r[0] for r in rows}
    full_ids = out(daemon, "network", "ls", "-q", "--no-trunc").split()
    assert len(full_ids) == 5 and {nid, pid} <= set(full_ids)
    assert all(HEX64.fullmatch(i) for i in full_ids)

    def names(*flags: str) -> list[str]:
        return out(daemon, "network", "ls", "--format", "{{.Name}}", *flags).split()

    assert names("-f", "name=full") == ["full"]
    assert names("-f", "name=ul") == ["full"]  # moby: unanchored regexp
    assert names("-f", f"id={nid[:10]}") == ["full"]
    assert names("-f", f"id={nid}") == ["full"]
    assert names("-f", "driver=null") == ["none"]
    assert names("-f", "driver=bridge") == ["bridge", "full", "plain"]
    assert names("-f", "label=env=test") == ["full"]
    assert names("-f", "label=flag") == ["full"]
    assert names("-f", "label=env=prod") == []
    assert names("-f", "type=custom") == ["full", "plain"]
    assert names("-f", "type=builtin") == ["bridge", "host", "none"]
    assert names("-f", "type=custom", "-f", "type=builtin") == [r[1] for r in rows]
    assert names("-f", "scope=local") == [r[1] for r in rows]
    assert names("-f", "scope=swarm") == []
    assert names("-f", "driver=bridge", "-f", "type=custom", "-f", "name=pl") == ["plain"]
    assert names("-f", "dangling=true") == ["full", "plain"]
    p = dk(daemon, "network", "ls", "-f", "type=bogus", code=1)
    assert "invalid filter: 'type'='bogus'" in p.stderr
    p = dk(daemon, "network", "ls", "-f", "bogus=1", code=1)
    assert "invalid filter 'bogus'" in p.stderr
    assert out(daemon, "network", "ls", "-f", "name=full", "--format",
               '{{.ID}} {{.Name}} {{.Driver}} {{.Scope}} {{.IPv6}} {{.Internal}} '
               '{{.Label "env"}}') == f"{nid[:12]} full bridge local true true test"
    as_json = [json.loads(ln) for ln in
               out(daemon, "network", "ls", "--format", "json").splitlines()]
    assert [j["Name"] for j in as_json] == [r[1] for r in rows]

    # inspect: several names; a missing one is reported, the others still printed, exit 1.
    p = dk(daemon, "network", "inspect", "-f", "{{.Name}} {{.ID}}", "full", "nosuch", "plain",
           code=1)
    assert p.stdout.splitlines() == [f"full {nid}", f"plain {pid}"]
    assert "network nosuch not found" in p.stderr
    p = dk(daemon, "network", "inspect", "nosuch", code=1)
    assert p.stdout.strip() == "[]"
    assert [n["Name"] for n in json.loads(out(daemon, "network", "inspect", "full", pid))] == \
        ["full", "plain"]
    assert out(daemon, "network", "inspect", "-v", "-f", "{{.Id}}", "full") == nid
    assert out(daemon, "network", "inspect", "-f", "{{.Driver}} {{len .IPAM.Config}}",
               "bridge", "host", "none").splitlines() == ["bridge 1", "host 0", "null 0"]

    # Refusals, with moby's words.
    p = dk(daemon, "network", "create", "plain", code=1)
    assert "network with name plain already exists" in p.stderr
    for name in ("bridge", "host", "none", "default"):
        p = dk(daemon, "network", "create", name, code=1)
        assert f"operation is not permitted on predefined {name} network" in p.stderr
    p = dk(daemon, "network", "rm", "bridge", "host", "none", code=1)
    assert p.stdout == ""
    assert p.stderr.count("is a pre-defined network and cannot be removed") == 3
    p = dk(daemon, "network", "create", "--subnet", "10.41.0.1/24", "bad", code=1)
    assert "invalid subnet 10.41.0.1/24: it should be 10.41.0.0/24" in p.stderr
    p = dk(daemon, "network", "create", "--subnet", "10.40.7.0/24", "overlap", code=1)
    assert "overlaps" in p.stderr
    p = dk(daemon, "network", "create", "--subnet", "10.42.0.0/24", "--gateway", "10.43.0.1",
           "outside", code=1)
    assert "10.43.0.1" in p.stderr
    assert names("-f", "type=custom") == ["full", "plain"]

    # Lookup order: full ID, then exact name, then a unique ID prefix.
    prefix = nid[:6]
    named_like_prefix = out(daemon, "network", "create", prefix)
    assert out(daemon, "network", "inspect", "-f", "{{.Id}}", prefix) == named_like_prefix
    assert out(daemon, "network", "inspect", "-f", "{{.Name}}", nid[:9]) == "full"
    named_like_id = out(daemon, "network", "create", pid)
    assert out(daemon, "network", "inspect", "-f", "{{.Name}}", pid) == "plain"
    assert out(daemon, "network", "inspect", "-f", "{{.Id}}", named_like_id[:12]) == \
        named_like_id
    # A prefix that several IDs share is ambiguous (400): create until two IDs share one.
    n = 0
    while True:
        ids = out(daemon, "network", "ls", "-q", "--no-trunc").split()
        firsts = [i[0] for i in ids]
        shared = sorted({c for c in firsts if firsts.count(c) > 1})
        if shared:
            break
        out(daemon, "network", "create", f"amb{n}")
        n += 1
    p = dk(daemon, "network", "inspect", shared[0], code=1)
    assert f"network {shared[0]} is ambiguous" in p.stderr
    # DELETE by full ID removes that network, not the one named like the ID.
    assert out(daemon, "network", "rm", pid) == pid
    assert out(daemon, "network", "inspect", "-f", "{{.Id}}", pid) == named_like_id
    assert names("-f", "name=^plain$") == []
    log_is_clean(daemon)


def test_network_connect_disconnect_rm_and_prune(daemon: Daemon) -> None:
    front = out(daemon, "network", "create", "--subnet", "10.44.0.0/24", "--ipv6",
                "--subnet", "fd00:44::/64", "front")
    out(daemon, "network", "create", "back")
    web = out(daemon, "run", "-d", "--name", "web", "--network", "back", "busybox",
              "sleep", "300")
    db = out(daemon, "run", "-d", "--name", "db", "--network", "front", "busybox",
             "sleep", "300")
    assert HEX64.fullmatch(web) and HEX64.fullmatch(db)

    p = dk(daemon, "network", "connect", "--ip", "10.44.0.9", "--ip6", "fd00:44::9",
           "--alias", "w1", "--alias", "w2", "--link", "db:database", "front", "web")
    assert p.stdout == "" and p.stderr == ""
    ep = json.loads(out(daemon, "inspect", "-f", "{{json .NetworkSettings.Networks.front}}",
                        "web"))
    assert ep["IPAMConfig"] == {"IPv4Address": "10.44.0.9", "IPv6Address": "fd00:44::9"}
    assert (ep["IPAddress"], ep["IPPrefixLen"], ep["Gateway"]) == ("10.44.0.9", 24, "10.44.0.1")
    assert (ep["GlobalIPv6Address"], ep["GlobalIPv6PrefixLen"], ep["IPv6Gateway"]) == \
        ("fd00:44::9", 64, "fd00:44::1")
    assert ep["Aliases"] == ["w1", "w2"] and ep["Links"] == ["db:database"]
    assert ep["DriverOpts"] is None and ep["NetworkID"] == front
    assert ep["DNSNames"] == ["web", "w1", "w2", web[:12]]
    assert out(daemon, "inspect", "-f", "{{.NetworkSettings.Networks.front.IPAddress}}",
               "web") == "10.44.0.9"
    addrs = out(daemon, "exec", "web", "ip", "-o", "addr", "show")
    assert "10.44.0.9/24" in addrs and "fd00:44::9/64" in addrs
    # The endpoint without options: Aliases, Links, DriverOpts and IPAMConfig are null.
    back_ep = json.loads(out(daemon, "inspect", "-f",
                             "{{json .NetworkSettings.Networks.back}}", "web"))
    assert (back_ep["Aliases"], back_ep["Links"], back_ep["DriverOpts"],
            back_ep["IPAMConfig"]) == (None, None, None, None)
    # Network inspect: members keyed by full container ID, addresses in CIDR form.
    [net] = json.loads(out(daemon, "network", "inspect", "front"))
    assert set(net["Containers"]) == {web, db}
    assert net["Containers"][web] == {
        "Name": "web", "EndpointID": ep["EndpointID"], "MacAddress": ep["MacAddress"],
        "IPv4Address": "10.44.0.9/24", "IPv6Address": "fd00:44::9/64"}
    assert re.fullmatch(r"10\.44\.0\.\d+/24", net["Containers"][db]["IPv4Address"])
    # The aliases answer from the other container, through the embedded DNS.
    p = dk(daemon, "exec", "db", "nslookup", "-type=a", "w2.")
    assert "10.44.0.9" in p.stdout

    # Refusals.
    p = dk(daemon, "network", "connect", "front", "web", code=1)
    assert "already exists in network front" in p.stderr
    p = dk(daemon, "network", "connect", "nosuchnet", "web", code=1)
    assert "network nosuchnet not found" in p.stderr
    p = dk(daemon, "network", "connect", "front", "nosuchctr", code=1)
    assert "No such container: nosuchctr" in p.stderr
    p = dk(daemon, "network", "connect", "--alias", "x", "bridge", "web", code=1)
    assert "network-scoped alias is supported only for containers in user defined networks" \
        in p.stderr
    p = dk(daemon, "network", "connect", "host", "web", code=1)
    assert "cannot connect container to host network" in p.stderr

    # A created container: the endpoint is configured now and gets its address at start.
    out(daemon, "create", "--name", "later", "--network", "back", "busybox", "sleep", "300")
    dk(daemon, "network", "connect", "--alias", "l1", "front", "later")
    nets = json.loads(out(daemon, "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                          "later"))
    assert set(nets) == {"back", "front"}
    assert nets["front"]["Aliases"] == ["l1"] and nets["front"]["IPAddress"] == ""
    assert out(daemon, "start", "later") == "later"
    assert re.fullmatch(r"10\.44\.0\.\d+", out(
        daemon, "inspect", "-f", "{{.NetworkSettings.Networks.front.IPAddress}}", "later"))

    # disconnect, and -f.
    p = dk(daemon, "network", "disconnect", "front", "web")
    assert p.stdout == ""
    assert set(json.loads(out(daemon, "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                              "web"))) == {"back"}
    assert "10.44.0.9" not in out(daemon, "exec", "web", "ip", "-o", "addr", "show")
    p = dk(daemon, "network", "disconnect", "front", "web", code=1)
    assert "is not connected to" in p.stderr
    dk(daemon, "network", "disconnect", "-f", "front", "later")
    assert web not in json.loads(out(daemon, "network", "inspect", "front"))[0]["Containers"]

    # rm of several: the one in use fails alone.
    out(daemon, "network", "create", "spare")
    p = dk(daemon, "network", "rm", "spare", "back", code=1)
    assert p.stdout.split() == ["spare"]
    assert "has active endpoints" in p.stderr and "back" in p.stderr
    left = out(daemon, "network", "ls", "--format", "{{.Name}}").split()
    assert "back" in left and "spare" not in left
    assert dk(daemon, "network", "rm", "-f", "nosuch").stdout == ""
    p = dk(daemon, "network", "rm", "nosuch", code=1)
    assert "network nosuch not found" in p.stderr

    # prune: names, filtered by label and until; used and predefined networks stay.
    for name, label in (("p1", "env=test"), ("p2", "env=prod"), ("p3", "")):
        out(daemon, "network", "create", *(["--label", label] if label else []), name)
    p = dk(daemon, "network", "prune", "-f", "--filter", "label=env=test")
    assert p.stdout.split() == ["Deleted", "Networks:", "p1"]
    assert dk(daemon, "network", "prune", "-f", "--filter", "until=1h").stdout.strip() == ""
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p = dk(daemon, "network", "prune", "-f", "--filter", f"until={soon}")
    assert p.stdout.split() == ["Deleted", "Networks:", "p2", "p3"]
    assert out(daemon, "network", "ls", "--format", "{{.Name}}").split() == \
        ["back", "bridge", "front", "host", "none"]
    dk(daemon, "rm", "-f", "web", "db", "later")
    p = dk(daemon, "network", "prune", "-f")
    assert p.stdout.split() == ["Deleted", "Networks:", "back", "front"]
    log_is_clean(daemon)


# -- images ---------------------------------------------------------------------------------


def test_import_images_inspect_rmi_and_no_pull(daemon: Daemon, tmp_path: Path) -> None:
    tar = rootfs_tar(tmp_path / "rootfs.tar", "hello from mini\n")
    p = dk(daemon, "import", str(tar), "mini:1.0")  # chunked upload, repo=mini:1.0
    iid = p.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", iid)
    other = rootfs_tar(tmp_path / "other.tar", "hello from piped\n", {"etc/two": "2\n"})
    pid = dk(daemon, "import", "-", "piped", stdin=other.read_bytes()).stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pid) and pid != iid

    lines = out(daemon, "images").splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == \
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert {tuple(ln.split()[:3]) for ln in lines[1:]} >= {
        ("mini", "1.0", iid[7:19]), ("piped", "latest", pid[7:19])}
    assert sorted(out(daemon, "images", "--format", "{{.Repository}}:{{.Tag}}").split()) == \
        ["busybox:latest", "mini:1.0", "piped:latest"]
    assert set(out(daemon, "images", "-q").split()) >= {iid[7:19], pid[7:19]}

    [img] = json.loads(out(daemon, "image", "inspect", "mini:1.0"))
    assert img["Id"] == iid and img["RepoTags"] == ["mini:1.0"]
    assert (img["Os"], img["RootFS"]["Type"]) == ("linux", "layers") and img["Size"] > 0
    assert out(daemon, "image", "inspect", "-f", "{{.Id}}", iid[7:19]) == iid
    assert out(daemon, "inspect", "-f", "{{.Id}}", "piped") == pid
    assert dk(daemon, "run", "--rm", "mini:1.0", "cat", "/etc/greeting").stdout == \
        "hello from mini\n"
    assert dk(daemon, "run", "--rm", "piped", "cat", "/etc/two").stdout == "2\n"

    # rmi: untag and delete; an image in use needs -f; a missing one is an error.
    p = dk(daemon, "rmi", "piped")
    assert p.stdout.splitlines() == ["Untagged: piped:latest", f"Deleted: {pid}"]
    out(daemon, "run", "-d", "--name", "user", "mini:1.0", "sleep", "300")
    p = dk(daemon, "rmi", "mini:1.0", code=1)
    assert "container is using its referenced image" in p.stderr
    dk(daemon, "rm", "-f", "user")
    p = dk(daemon, "rmi", "nosuch", code=1)
    assert "No such image: nosuch:latest" in p.stderr
    p = dk(daemon, "image", "inspect", "nosuch", code=1)
    assert p.stdout.strip() == "[]" and "No such image: nosuch:latest" in p.stderr

    # No registry: a pull is refused with a clear reason, and run of a missing image is 125.
    p = dk(daemon, "pull", "alpine", code=1)
    assert "nsnet does not pull" in p.stderr
    p = dk(daemon, "run", "--rm", "nosuch:1", "true", code=125)
    assert "Unable to find image 'nosuch:1' locally" in p.stderr
    assert "nsnet does not pull" in p.stderr
    assert out(daemon, "ps", "-aq") == ""
    log_is_clean(daemon)


# -- containers -----------------------------------------------------------------------------


def test_run_flags_attached_output_and_exit_codes(daemon: Daemon) -> None:
    p = dk(daemon, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
           code=3)
    assert (p.stdout, p.stderr) == ("out\n", "err\n")
    # A command that cannot run: 127 (not found) / 126 (not executable), and --rm still
    # removes the container that never started.
    p = dk(daemon, "run", "--rm", "busybox", "nosuchcmd", code=127)
    assert "executable file not found" in p.stderr
    p = dk(daemon, "run", "--rm", "busybox", "/etc/passwd", code=126)
    assert "permission denied" in p.stderr
    p = dk(daemon, "run", "--rm", "--network", "nosuchnet", "busybox", "true", code=125)
    assert "network nosuchnet not found" in p.stderr
    assert out(daemon, "ps", "-aq") == ""
    p = dk(daemon, "run", "--name", "broken", "busybox", "nosuchcmd", code=127)
    assert out(daemon, "inspect", "-f", "{{.State.Status}}", "broken") == "created"
    p = dk(daemon, "run", "--name", "broken", "busybox", "true", code=125)
    assert 'Conflict. The container name "/broken" is already in use' in p.stderr
    p = dk(daemon, "run", "--network", "host", "-p", "8080:80", "busybox", "true", code=125)
    assert "published ports cannot be used with network mode host" in p.stderr

    # The flags a run takes, seen from inside the container.
    out(daemon, "network", "create", "--subnet", "10.45.0.0/24", "appnet")
    p = dk(daemon, "run", "--rm", "--network", "appnet", "--network-alias", "fa",
           "--ip", "10.45.0.50", "--hostname", "h1", "-e", "FOO=bar", "-w", "/tmp",
           "--entrypoint", "sh", "busybox", "-c",
           "echo $FOO; pwd; hostname; ip -o -4 addr show eth0")
    first = p.stdout.splitlines()
    assert first[:3] == ["bar", "/tmp", "h1"] and "10.45.0.50/24" in first[3]
    resolv = dk(daemon, "run", "--rm", "--dns", "192.0.2.10", "--dns-search", "corp.test",
                "busybox", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 192.0.2.10" in resolv and "search corp.test" in resolv
    resolv = dk(daemon, "run", "--rm", "--network", "appnet", "--dns", "192.0.2.10",
                "busybox", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 127.0.0.11" in resolv  # the embedded DNS forwards to --dns
    # --link on the default bridge: /etc/hosts, and HostConfig.Links in moby's form.
    out(daemon, "run", "-d", "--name", "legacy", "busybox", "sleep", "300")
    legacy_ip = out(daemon, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "legacy")
    assert re.fullmatch(r"172\.17\.0\.\d+", legacy_ip)
    out(daemon, "create", "--name", "linker", "--link", "legacy:lg", "busybox",
        "cat", "/etc/hosts")
    assert json.loads(out(daemon, "inspect", "-f", "{{json .HostConfig.Links}}", "linker")) \
        == ["/legacy:/linker/lg"]
    dk(daemon, "start", "linker")
    assert out(daemon, "wait", "linker") == "0"
    assert re.search(rf"^{re.escape(legacy_ip)}\s+lg legacy$",
                     dk(daemon, "logs", "linker").stdout, re.M)

    # create + start: NetworkSettings filled at create, the address at start.
    made = out(daemon, "create", "--name", "made", "--network", "appnet", "--network-alias",
               "m1", "busybox", "sleep", "300")
    assert HEX64.fullmatch(made)
    [info] = json.loads(out(daemon, "inspect", "made"))
    assert info["Id"] == made and info["Name"] == "/made"
    assert info["State"]["Status"] == "created" and info["HostConfig"]["NetworkMode"] == "appnet"
    ep = info["NetworkSettings"]["Networks"]["appnet"]
    appnet = out(daemon, "network", "inspect", "-f", "{{.Id}}", "appnet")
    assert (ep["NetworkID"], ep["Aliases"], ep["IPAddress"], ep["Links"], ep["DriverOpts"],
            ep["IPAMConfig"]) == (appnet, ["m1"], "", None, None, None)
    assert info["Config"]["Tty"] is False and info["Config"]["Cmd"] == ["sleep", "300"]
    assert out(daemon, "start", "made") == "made"
    assert out(daemon, "start", "made") == "made"  # 304: already started
    assert re.fullmatch(r"10\.45\.0\.\d+", out(
        daemon, "inspect", "-f", "{{.NetworkSettings.Networks.appnet.IPAddress}}", "made"))
    # No --network: NetworkMode "default" on the wire, bridge in inspect.
    out(daemon, "create", "--name", "plain", "busybox", "true")
    assert out(daemon, "inspect", "-f", "{{.HostConfig.NetworkMode}}", "plain") == "bridge"
    assert list(json.loads(out(daemon, "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                               "plain"))) == ["bridge"]
    # host and none.
    assert dk(daemon, "run", "--rm", "--network", "none", "busybox", "sh", "-c",
              "ls /sys/class/net").stdout.split() == ["lo"]
    p = dk(daemon, "inspect", "nosuch", code=1)
    assert "No such object: nosuch" in p.stderr
    log_is_clean(daemon)


def test_ps_exec_logs_stop_kill_wait_and_rm(daemon: Daemon) -> None:
    out(daemon, "network", "create", "lc")
    alpha = out(daemon, "run", "-d", "--name", "alpha", "--network", "lc", "--label", "role=db",
                "busybox", "sh", "-c",
                "echo started; echo warn >&2; trap 'exit 0' TERM; "
                "while true; do sleep 0.1; done")
    beta = out(daemon, "run", "-d", "--name", "beta", "busybox", "sleep", "300")
    gone = out(daemon, "run", "-d", "--name", "gone", "busybox", "sh", "-c", "exit 5")
    assert out(daemon, "wait", "gone") == "5"

    lines = out(daemon, "ps").splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == \
        ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert sorted(ln.split()[-1] for ln in lines[1:]) == ["alpha", "beta"]
    assert set(out(daemon, "ps", "-q").split()) == {alpha[:12], beta[:12]}
    assert set(out(daemon, "ps", "-aq", "--no-trunc").split()) == {alpha, beta, gone}

    def ps(*flags: str) -> list[str]:
        return sorted(out(daemon, "ps", "--format", "{{.Names}}", *flags).split())

    assert ps("-a", "--filter", "status=exited") == ["gone"]
    assert ps("--filter", "name=alp") == ["alpha"]
    assert ps("--filter", "network=lc") == ["alpha"]
    assert ps("--filter", "label=role=db") == ["alpha"]
    assert ps("-a", "--filter", "exited=5") == ["gone"]
    assert ps("--filter", f"id={beta[:8]}") == ["beta"]
    assert ps("-a", "--filter", "ancestor=busybox") == ["alpha", "beta", "gone"]
    assert ps("--filter", "name=alpha", "--filter", "network=bridge") == []
    assert out(daemon, "ps", "--filter", "name=alpha", "--format",
               '{{.Names}} {{.Networks}} {{.Image}} {{.Label "role"}} {{.State}}') == \
        "alpha lc busybox db running"
    assert out(daemon, "ps", "-a", "--filter", "name=gone", "--format",
               "{{.Status}}").startswith("Exited (5)")

    # logs: stdout and stderr kept apart.
    assert wait_for(lambda: "started" in dk(daemon, "logs", "alpha").stdout)
    p = dk(daemon, "logs", "alpha")
    assert (p.stdout, p.stderr) == ("started\n", "warn\n")
    assert dk(daemon, "logs", "gone").stdout == ""
    assert "No such container: nosuch" in dk(daemon, "logs", "nosuch", code=1).stderr

    # exec: attached output, exit code, env/workdir, detached.
    p = dk(daemon, "exec", "alpha", "sh", "-c", "echo hi; echo oops >&2; exit 4", code=4)
    assert (p.stdout, p.stderr) == ("hi\n", "oops\n")
    assert out(daemon, "exec", "-e", "X=1", "-w", "/tmp", "alpha", "sh", "-c",
               "echo $X $(pwd)") == "1 /tmp"
    assert dk(daemon, "exec", "-d", "alpha", "sh", "-c", "echo bg > /tmp/bg").stdout == ""
    assert wait_for(lambda: dk_ok(daemon, "exec", "alpha", "test", "-s", "/tmp/bg"))
    assert out(daemon, "exec", "alpha", "cat", "/tmp/bg") == "bg"
    assert "is not running" in dk(daemon, "exec", "gone", "true", code=1).stderr
    assert "No such container: nosuch" in dk(daemon, "exec", "nosuch", "true", code=1).stderr

    # stop (TERM is trapped: quick exit 0), kill (137), wait, and their refusals.
    t = time.monotonic()
    assert out(daemon, "stop", "-t", "5", "alpha") == "alpha"
    assert time.monotonic() - t < 4
    assert out(daemon, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "alpha") == \
        "exited 0"
    assert out(daemon, "wait", "alpha") == "0"
    assert out(daemon, "stop", "alpha") == "alpha"  # 304: already stopped
    assert out(daemon, "kill", "beta") == "beta"
    assert out(daemon, "wait", "beta") == "137"
    assert "is not running" in dk(daemon, "kill", "beta", code=1).stderr
    assert "No such container: nosuch" in dk(daemon, "stop", "nosuch", code=1).stderr

    # rm: a running container needs -f; several at once; -f on a missing one is not an error.
    out(daemon, "run", "-d", "--name", "busy", "busybox", "sleep", "300")
    p = dk(daemon, "rm", "busy", code=1)
    assert "container is running: stop the container before removing or force remove" \
        in p.stderr
    assert out(daemon, "rm", "-f", "busy") == "busy"
    assert out(daemon, "rm", "alpha", "beta", gone[:12]).split() == ["alpha", "beta", gone[:12]]
    p = dk(daemon, "rm", "-f", "nosuch")
    assert "No such container: nosuch" in p.stderr
    dk(daemon, "rm", "nosuch", code=1)
    assert out(daemon, "ps", "-aq") == ""
    log_is_clean(daemon)


# -- traffic --------------------------------------------------------------------------------


def test_traffic_between_containers_by_alias_name_and_link(daemon: Daemon) -> None:
    out(daemon, "network", "create", "web")
    out(daemon, "network", "create", "elsewhere")
    out(daemon, "run", "-d", "--name", "srv", "--network", "web", "--network-alias", "files",
        "busybox", "sh", "-c",
        "mkdir -p /www && echo hello-from-srv > /www/index.html && "
        "exec httpd -f -p 80 -h /www")
    assert wait_for(lambda: dk_ok(daemon, "exec", "srv", "wget", "-qO-",
                                  "http://127.0.0.1/index.html"))
    # (No wget -T: busybox 1.35's wget crashes with it.)
    fetch = ["busybox", "wget", "-qO-"]
    assert dk(daemon, "run", "--rm", "--network", "web", *fetch,
              "http://files/index.html").stdout == "hello-from-srv\n"
    assert dk(daemon, "run", "--rm", "--network", "web", *fetch,
              "http://srv/index.html").stdout == "hello-from-srv\n"
    assert dk(daemon, "run", "--rm", "--network", "web", "--link", "srv:backend", *fetch,
              "http://backend/index.html").stdout == "hello-from-srv\n"
    # A long-running client on the same network, through exec.
    out(daemon, "run", "-d", "--name", "client", "--network", "web", "busybox", "sleep", "300")
    assert dk(daemon, "exec", "client", "wget", "-qO-", "http://files/").stdout == \
        "hello-from-srv\n"
    srv_ip = out(daemon, "inspect", "-f", "{{.NetworkSettings.Networks.web.IPAddress}}", "srv")
    p = dk(daemon, "exec", "client", "nslookup", "-type=a", "files.")
    assert srv_ip in p.stdout
    # Another bridge network is isolated from this one.
    dk(daemon, "run", "--rm", "--network", "elsewhere", "busybox", "nc", "-w", "1",
       srv_ip, "80", code=1)
    # Once the server is connected to that network too, it is reached there by name.
    out(daemon, "network", "connect", "elsewhere", "srv")
    out(daemon, "run", "-d", "--name", "other", "--network", "elsewhere", "busybox",
        "sleep", "300")
    assert dk(daemon, "exec", "other", "wget", "-qO-",
              "http://srv/index.html").stdout == "hello-from-srv\n"
    log_is_clean(daemon)


# -- known gaps, outside the API layer --------------------------------------------------------


def test_connect_link_alias_resolves_for_the_linking_container(daemon: Daemon) -> None:
    out(daemon, "network", "create", "lk")
    out(daemon, "run", "-d", "--name", "db", "--network", "lk", "busybox", "sleep", "300")
    out(daemon, "run", "-d", "--name", "app", "busybox", "sleep", "300")
    dk(daemon, "network", "connect", "--link", "db:database", "lk", "app")
    db_ip = out(daemon, "inspect", "-f", "{{.NetworkSettings.Networks.lk.IPAddress}}", "db")
    assert db_ip in dk(daemon, "exec", "app", "nslookup", "-type=a", "database.").stdout


def test_exec_of_a_command_that_cannot_run(daemon: Daemon) -> None:
    out(daemon, "run", "-d", "--name", "x", "busybox", "sleep", "300")
    assert "executable file not found" in dk(daemon, "exec", "x", "nosuchcmd", code=127).stderr
    assert "permission denied" in dk(daemon, "exec", "x", "/etc/passwd", code=126).stderr
