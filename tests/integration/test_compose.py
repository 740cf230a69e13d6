"""docker-compose 1.29 (Debian's package) against nsnetd, over compose files written here.

Compose is the first thing a new user points at a Docker-compatible daemon, and it uses the API
differently from the docker CLI: networks are created with IPAM config and labels, containers
are created on one network and connected to the rest, names come from labels and filters, and
`down` removes by label. Each test writes a project into a temp dir, brings it up with
`docker-compose`, checks what the containers see from inside (`docker exec`, busybox wget and
nslookup), and ends with `down` and a check that nothing of the project is left, before the
fixture's own leak check of the host.

Every service here runs a busybox program as PID 1, which ignores SIGTERM, so stops pass
`-t 1` as a user in a hurry would; Docker would wait the same ten seconds without it.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from helpers import wait_for

from nsnet.testing.hosts import Daemon

COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path(COMPOSE).exists(), reason="needs docker-compose (make install)"),
    pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI"),
]

# A web server whose page is its own hostname (the short container id), so a client can tell
# which replica answered.
WEB = ('["sh", "-c", "mkdir -p /www && hostname > /www/index.html && '
       'exec httpd -f -p 80 -h /www"]')
IDLE = '["sleep", "3600"]'
# Compose 1.29 reads the image's `ContainerConfig` when it recreates a container; moby left
# that field out of image inspect from API 1.45 on, so compose 1.29 needs an older API to
# recreate against any current engine (Docker 26+ included), as its users set it.
OLD_API = {"COMPOSE_API_VERSION": "1.44"}

WEB_AND_CLIENT = f"""\
version: "3.8"
services:
  web:
    image: busybox
    command: {WEB}
  client:
    image: busybox
    command: {IDLE}
"""


def compose(d: Daemon, project: Path, *args: str, code: int = 0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on ``project`` (its dir name is the project name) against ``d``."""
    p = subprocess.run([COMPOSE, "--no-ansi", "-p", project.name,
                        "-f", str(project / "docker-compose.yml"), *args],
                       capture_output=True, text=True, env={**d.env, **(env or {})},
                       timeout=120, cwd=project)
    assert p.returncode == code, (f"docker-compose {' '.join(args)}: exit {p.returncode}, "
                                  f"wanted {code}\nstdout: {p.stdout}\nstderr: {p.stderr}\n"
                                  f"--- daemon log ---\n{d.log_tail(30)}")
    return p


def project(tmp_path: Path, name: str, text: str) -> Path:
    """A compose project directory holding ``text`` as its docker-compose.yml."""
    path = tmp_path / name
    path.mkdir()
    (path / "docker-compose.yml").write_text(text)
    return path


def dx(d: Daemon, container: str, *cmd: str, check: bool = True) -> str:
    """``docker exec`` in a container; its stdout."""
    p = d.docker("exec", container, *cmd, check=check)
    return p.stdout


def http(d: Daemon, container: str, url: str) -> str | None:
    """The page ``container`` fetches from ``url``, or None if the request failed."""
    p = d.docker("exec", container, "wget", "-qO-", url, check=False)
    return p.stdout.strip() if p.returncode == 0 else None


def short_ids(d: Daemon, project_dir: Path, service: str) -> set[str]:
    """The 12-hex ids of a service's containers, which are also their hostnames."""
    out = compose(d, project_dir, "ps", "-q", service).stdout.split()
    return {cid[:12] for cid in out}


def names(d: Daemon, *args: str) -> list[str]:
    return d.docker(*args).stdout.split()


def v4_of(d: Daemon, container: str, ifname: str) -> str:
    """The address (no prefix) on ``ifname``, read from inside the container."""
    out = dx(d, container, "ip", "-4", "-o", "addr", "show", "dev", ifname)
    return out.split()[3].split("/")[0]


def iface_for(d: Daemon, container: str, prefix: str) -> str:
    """The interface whose address starts with ``prefix`` (compose's connect order decides
    eth0/eth1, which issue 11 is changing to Docker's; the tests do not depend on it)."""
    for line in dx(d, container, "ip", "-4", "-o", "addr").splitlines():
        parts = line.split()
        if parts[3].startswith(prefix):
            return parts[1]
    raise AssertionError(f"{container} has no address in {prefix}*")


def default_routes(d: Daemon, container: str) -> list[str]:
    """Default routes seen inside (busybox ip ignores a `show default` selector)."""
    return [" ".join(line.split()) for line in dx(d, container, "ip", "route").splitlines()
            if line.startswith("default")]


def assert_down_leaves_nothing(d: Daemon, keep_networks: set[str] = frozenset()) -> None:
    """After `down`: no container, only the predefined (and external) networks, and no bridge
    or veth of the project in the daemon's host namespace."""
    assert names(d, "ps", "-aq") == []
    assert set(names(d, "network", "ls", "--format", "{{.Name}}")) == (
        {"bridge", "host", "none"} | set(keep_networks))
    left = [str(x["ifname"]) for x in d.host.ip_json("link", "show")
            if str(x["ifname"]).startswith("veth")]
    assert left == [], left
    bridges = {str(x["ifname"]) for x in d.host.ip_json("link", "show")
               if str(x["ifname"]).startswith("br-")}
    want = {"br-" + d.docker("network", "inspect", "-f", "{{.Id}}", n).stdout.strip()[:12]
            for n in keep_networks}
    assert bridges == want
    log = (d.root / "nsnetd.log").read_text(errors="replace")
    assert "Traceback" not in log, d.log_tail(60)


# -- tests --------------------------------------------------------------------------------------


def test_web_and_client_by_service_name(daemon: Daemon, tmp_path: Path) -> None:
    app = project(tmp_path, "webapp", WEB_AND_CLIENT)
    p = compose(daemon, app, "up", "-d")
    assert 'Creating network "webapp_default" with the default driver' in p.stderr
    ps = compose(daemon, app, "ps").stdout
    assert "webapp_web_1" in ps and "webapp_client_1" in ps and ps.count(" Up ") == 2, ps

    (web,) = short_ids(daemon, app, "web")
    # httpd needs a moment after `up -d` returns; the name resolves at once.
    assert wait_for(lambda: http(daemon, "webapp_client_1", "http://web/") == web, timeout=5)
    # The container name and compose's own alias (the short id) answer too.
    assert http(daemon, "webapp_client_1", "http://webapp_web_1/") == web
    assert http(daemon, "webapp_client_1", f"http://{web}/") == web
    nets = daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                         "webapp_web_1").stdout
    assert '"webapp_default"' in nets and '"web"' in nets, nets

    p = compose(daemon, app, "down", "-t", "1")
    assert "Removing network webapp_default" in p.stderr
    assert_down_leaves_nothing(daemon)


FRONT_BACK = """\
version: "3.8"
services:
  proxy:
    image: busybox
    command: ["sleep", "3600"]
    networks:
      frontend:
        ipv4_address: 172.28.1.10
        aliases: [gateway, edge]
      backend:
        ipv4_address: 172.29.1.10
  db:
    image: busybox
    command:
      - sh
      - -c
      - mkdir -p /www && echo db > /www/index.html && exec httpd -f -p 80 -h /www
    networks:
      backend:
        aliases: [database]
  ui:
    image: busybox
    command: ["sleep", "3600"]
    networks: [frontend]
networks:
  frontend:
    ipam:
      config:
        - subnet: 172.28.0.0/16
          ip_range: 172.28.5.0/24
          gateway: 172.28.0.1
  backend:
    internal: true
    ipam:
      config:
        - subnet: 172.29.0.0/16
          ip_range: 172.29.7.0/24
"""


def test_frontend_and_internal_backend(daemon: Daemon, tmp_path: Path) -> None:
    app = project(tmp_path, "shop", FRONT_BACK)
    compose(daemon, app, "up", "-d")

    inspect = "{{.Internal}} {{range .IPAM.Config}}{{.Subnet}} {{.IPRange}} {{.Gateway}}{{end}}"
    assert daemon.docker("network", "inspect", "-f", inspect, "shop_frontend").stdout.strip() \
        == "false 172.28.0.0/16 172.28.5.0/24 172.28.0.1"
    assert daemon.docker("network", "inspect", "-f", inspect, "shop_backend").stdout.strip() \
        == "true 172.29.0.0/16 172.29.7.0/24 172.29.0.1"

    # Static addresses where asked, the ip_range where not.
    assert v4_of(daemon, "shop_proxy_1", iface_for(daemon, "shop_proxy_1", "172.28.")) \
        == "172.28.1.10"
    assert v4_of(daemon, "shop_proxy_1", iface_for(daemon, "shop_proxy_1", "172.29.")) \
        == "172.29.1.10"
    assert v4_of(daemon, "shop_db_1", "eth0").startswith("172.29.7.")
    assert v4_of(daemon, "shop_ui_1", "eth0").startswith("172.28.5.")

    # Aliases per network: the proxy reaches the db by its alias and its service name; the ui
    # reaches the proxy by its frontend aliases, and cannot see the backend's names.
    assert wait_for(lambda: http(daemon, "shop_proxy_1", "http://database/") == "db")
    assert http(daemon, "shop_proxy_1", "http://db/") == "db"
    for alias in ("gateway", "edge", "proxy"):
        out = dx(daemon, "shop_ui_1", "nslookup", alias, "127.0.0.11")
        assert "172.28.1.10" in out, out
    for hidden in ("db", "database"):
        p = daemon.docker("exec", "shop_ui_1", "nslookup", hidden, "127.0.0.11", check=False)
        assert p.returncode != 0 and "172.29." not in p.stdout, p.stdout

    # The proxy's way out is the frontend's gateway, whatever eth order compose produced.
    front_if = iface_for(daemon, "shop_proxy_1", "172.28.")
    assert default_routes(daemon, "shop_proxy_1") == [f"default via 172.28.0.1 dev {front_if}"]

    # The internal network has no way out: no default route, nothing past its own bridge
    # (the frontend's gateway, the ui, the default bridge's gateway), while the bridge
    # itself still answers.
    assert default_routes(daemon, "shop_db_1") == []
    ui_addr = v4_of(daemon, "shop_ui_1", "eth0")
    for target in ("172.28.0.1", ui_addr, "172.17.0.1"):
        p = daemon.docker("exec", "shop_db_1", "ping", "-c1", "-W1", target, check=False)
        assert p.returncode != 0, f"db reached {target}: {p.stdout}"
    dx(daemon, "shop_db_1", "ping", "-c1", "-W1", "172.29.0.1")

    compose(daemon, app, "down", "-t", "1")
    assert_down_leaves_nothing(daemon)


HOST_NONE_EXTERNAL = f"""\
version: "3.8"
services:
  onhost:
    image: busybox
    command: {IDLE}
    network_mode: host
  alone:
    image: busybox
    command: {IDLE}
    network_mode: none
  ext:
    image: busybox
    command: {IDLE}
    networks: [shared]
networks:
  shared:
    external: true
"""


def test_host_none_and_external_networks(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("network", "create", "--subnet", "10.77.0.0/24", "shared")
    app = project(tmp_path, "modes", HOST_NONE_EXTERNAL)
    compose(daemon, app, "up", "-d")

    # Host mode: the daemon's own host namespace (its nsnet0 and the shared network's bridge).
    host_links = {str(x["ifname"]) for x in daemon.host.ip_json("link", "show")}
    seen = {line.split(":")[1].strip().split("@")[0]
            for line in dx(daemon, "modes_onhost_1", "ip", "-o", "link").splitlines()}
    assert seen == host_links and "nsnet0" in seen
    # None: loopback only.
    links = dx(daemon, "modes_alone_1", "ip", "-o", "link").splitlines()
    assert len(links) == 1 and ": lo:" in links[0], links
    # External: joined, not created, and not removed by `down`.
    assert v4_of(daemon, "modes_ext_1", "eth0").startswith("10.77.0.")
    assert daemon.docker("network", "inspect", "-f", "{{range .Containers}}{{.Name}}{{end}}",
                         "shared").stdout.strip() == "modes_ext_1"

    p = compose(daemon, app, "down", "-t", "1")
    assert "Network shared is external, skipping" in p.stderr
    assert_down_leaves_nothing(daemon, keep_networks={"shared"})
    daemon.docker("network", "rm", "shared")
    assert_down_leaves_nothing(daemon)


def test_scale_round_robin(daemon: Daemon, tmp_path: Path) -> None:
    app = project(tmp_path, "farm", WEB_AND_CLIENT)
    compose(daemon, app, "up", "-d", "--scale", "web=3")
    replicas = short_ids(daemon, app, "web")
    assert len(replicas) == 3

    addrs = {v4_of(daemon, f"farm_web_{i}", "eth0") for i in (1, 2, 3)}
    out = dx(daemon, "farm_client_1", "nslookup", "web", "127.0.0.11")
    assert {line.split()[1] for line in out.splitlines()
            if line.startswith("Address:") and "#" not in line and "127.0.0.11" not in line} \
        == addrs, out

    for i in (1, 2, 3):
        assert wait_for(lambda i=i: http(daemon, "farm_client_1", f"http://farm_web_{i}/")
                        is not None)
    # Each wget resolves afresh and takes the first answer; round robin rotates that answer,
    # so requests by service name spread over every replica.
    hits: dict[str, int] = {}
    for _ in range(30):
        page = http(daemon, "farm_client_1", "http://web/")
        assert page in replicas, page
        hits[page] = hits.get(page, 0) + 1
    assert set(hits) == replicas and max(hits.values()) <= 20, hits

    # Scaling down removes the extra replicas and their names.
    compose(daemon, app, "up", "-d", "--scale", "web=1", "-t", "1")
    assert len(short_ids(daemon, app, "web")) == 1
    out = dx(daemon, "farm_client_1", "nslookup", "web", "127.0.0.11")
    assert sum(a in out for a in addrs) == 1, out

    compose(daemon, app, "down", "-t", "1")
    assert_down_leaves_nothing(daemon)


def test_restart_keeps_service_reachable(daemon: Daemon, tmp_path: Path) -> None:
    app = project(tmp_path, "rs", WEB_AND_CLIENT)
    compose(daemon, app, "up", "-d")
    (web,) = short_ids(daemon, app, "web")
    assert wait_for(lambda: http(daemon, "rs_client_1", "http://web/") == web)
    before = daemon.docker("inspect", "-f", "{{.State.StartedAt}}", "rs_web_1").stdout

    p = compose(daemon, app, "restart", "-t", "1", "web")
    assert "Restarting rs_web_1 ... done" in p.stderr
    t0 = time.monotonic()
    assert wait_for(lambda: http(daemon, "rs_client_1", "http://web/") == web, timeout=1.0)
    print(f"web reachable {time.monotonic() - t0:.3f} s after `restart` returned")
    assert daemon.docker("inspect", "-f", "{{.State.StartedAt}}", "rs_web_1").stdout != before
    assert short_ids(daemon, app, "web") == {web}

    compose(daemon, app, "down", "-t", "1")
    assert_down_leaves_nothing(daemon)


def test_top_pause_unpause_and_events(daemon: Daemon, tmp_path: Path) -> None:
    """`docker-compose top`, `pause`/`unpause` and `events --json` (which 404s used to make
    print nothing while compose exited 0)."""
    app = project(tmp_path, "tp", WEB_AND_CLIENT)
    compose(daemon, app, "up", "-d")
    (web,) = short_ids(daemon, app, "web")
    assert wait_for(lambda: http(daemon, "tp_client_1", "http://web/") == web)
    top = compose(daemon, app, "top", "web").stdout
    assert "tp_web_1" in top and "httpd -f -p 80 -h /www" in top

    events = subprocess.Popen([COMPOSE, "--no-ansi", "-p", app.name, "-f",
                               str(app / "docker-compose.yml"), "events", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=daemon.env, cwd=app)
    try:
        time.sleep(1.0)  # compose subscribes before it prints anything
        compose(daemon, app, "pause", "web")
        state = daemon.docker("inspect", "-f", "{{.State.Status}} {{.State.Paused}}",
                              "tp_web_1").stdout.split()
        assert state == ["paused", "true"]
        assert "(Paused)" in daemon.docker("ps", "--filter", "name=tp_web_1").stdout
        compose(daemon, app, "unpause", "web")
        assert wait_for(lambda: http(daemon, "tp_client_1", "http://web/") == web)
        time.sleep(0.5)
    finally:
        events.terminate()
        out, err = events.communicate(timeout=10)
    seen = [json.loads(line) for line in out.splitlines() if line.strip()]
    actions = [(e["service"], e["action"]) for e in seen]
    assert ("web", "pause") in actions and ("web", "unpause") in actions, (actions, err)
    assert actions.index(("web", "pause")) < actions.index(("web", "unpause"))

    compose(daemon, app, "down", "-t", "1")
    assert_down_leaves_nothing(daemon)


def test_up_after_change_and_force_recreate(daemon: Daemon, tmp_path: Path) -> None:
    """Compose replaces a container by stopping it, renaming it out of the way
    (`POST /containers/{id}/rename`), creating the new one and removing the old: the service
    must come back under its name, reachable by its peers within a second."""
    app = project(tmp_path, "rc", WEB_AND_CLIENT)
    compose(daemon, app, "up", "-d")
    (first,) = short_ids(daemon, app, "web")
    assert wait_for(lambda: http(daemon, "rc_client_1", "http://web/") == first)
    assert "rc_web_1 is up-to-date" in compose(daemon, app, "up", "-d").stderr

    def replaced(old: str, *args: str) -> str:
        p = compose(daemon, app, "up", "-d", "-t", "1", *args, env=OLD_API)
        assert "Recreating rc_web_1 ... done" in p.stderr, p.stderr
        t0 = time.monotonic()
        (new,) = short_ids(daemon, app, "web")
        assert new != old
        assert wait_for(lambda: http(daemon, "rc_client_1", "http://web/") == new, timeout=1.0)
        print(f"web reachable {time.monotonic() - t0:.3f} s after `up -d {' '.join(args)}`")
        # The old container, renamed out of the way, is gone.
        assert sorted(names(daemon, "ps", "-a", "--format", "{{.Names}}")) == [
            "rc_client_1", "rc_web_1"]
        assert daemon.docker("inspect", "-f", "{{.State.Status}}", "rc_web_1").stdout.strip() \
            == "running"
        return new

    # A change to the service's config: compose recreates it.
    (app / "docker-compose.yml").write_text(
        WEB_AND_CLIENT.replace("    command: " + WEB, "    environment:\n      VERSION: '2'\n"
                               "    command: " + WEB))
    second = replaced(first, "web")
    assert "VERSION=2" in daemon.docker("inspect", "-f", "{{.Config.Env}}", "rc_web_1").stdout
    replaced(second, "--force-recreate", "web")
    # The client was never touched.
    assert "rc_client_1 is up-to-date" in compose(daemon, app, "up", "-d").stderr

    compose(daemon, app, "down", "-t", "1")
    assert_down_leaves_nothing(daemon)


def test_compose_exec_and_run_without_tty(daemon: Daemon, tmp_path: Path) -> None:
    app = project(tmp_path, "ex", WEB_AND_CLIENT)
    try:
        compose(daemon, app, "up", "-d")
        (web,) = short_ids(daemon, app, "web")
        assert wait_for(lambda: http(daemon, "ex_client_1", "http://web/") == web)
        p = compose(daemon, app, "exec", "-T", "client", "wget", "-qO-", "http://web/")
        assert p.stdout.strip() == web
        p = compose(daemon, app, "run", "--rm", "-T", "client", "wget", "-qO-", "http://web/")
        assert p.stdout.strip() == web
    finally:
        compose(daemon, app, "down", "-t", "1")
    assert_down_leaves_nothing(daemon)


def test_up_five_services_timing(daemon: Daemon, tmp_path: Path) -> None:
    """`up -d` of a 5-service project on its own network, median of 5 (docker-compose's own
    Python start-up, ~0.3 s, included: it is what the user waits for)."""
    services = "".join(f"  s{i}:\n    image: busybox\n    command: {IDLE}\n" for i in range(5))
    app = project(tmp_path, "five", f'version: "3.8"\nservices:\n{services}')
    took = []
    for _ in range(5):
        t0 = time.monotonic()
        compose(daemon, app, "up", "-d")
        took.append(time.monotonic() - t0)
        assert len(compose(daemon, app, "ps", "-q").stdout.split()) == 5
        compose(daemon, app, "down", "-t", "1")
        assert_down_leaves_nothing(daemon)
    t0 = time.monotonic()
    compose(daemon, app, "config", "-q")
    floor = time.monotonic() - t0
    med = statistics.median(took)
    print(f"up -d, 5 services: median {med:.3f} s of {[round(t, 3) for t in took]}; "
          f"docker-compose config -q alone {floor:.3f} s")
    # Measured ~0.5 s here; ten times that means something is wrong, not a slow machine.
    assert med < 5.0, took
