"""GET /events against a real daemon: the docker CLI's ``docker events --since/--until``, the
SDK's ``client.events(decode=True)``, and ``nsnet events`` following live."""

from __future__ import annotations

import io
import json
import queue
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from nsnet.testing.hosts import VENV_BIN, Daemon

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI"),
]


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _pairs(msgs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["Type"], m["Action"].split(":")[0]) for m in msgs]


def _in_order(seq: list[tuple[str, str]], wanted: list[tuple[str, str]]) -> bool:
    it = iter(seq)
    return all(w in it for w in wanted)


def _lifecycle(d: Daemon) -> tuple[str, str]:
    """A network, a labelled container on it with an exec, stopped and removed."""
    d.docker("network", "create", "front")
    cid = d.docker("run", "-d", "--name", "web", "--network", "front", "--label", "tier=web",
                   "busybox", "sleep", "60").stdout.strip()
    d.docker("exec", "web", "true")
    d.docker("stop", "-t", "1", "web")  # sleep as PID 1 ignores SIGTERM: SIGKILL after 1 s
    d.docker("rm", "web")
    net = d.docker("network", "rm", "front").stdout.strip()
    return cid, net


def test_docker_events_replays_a_window_with_filters(daemon: Daemon) -> None:
    t0 = f"{time.time() - 0.001:.9f}"
    cid, _ = _lifecycle(daemon)
    t1 = f"{time.time() + 0.001:.9f}"
    t_start = time.monotonic()
    p = daemon.docker("events", "--since", t0, "--until", t1, "--format", "{{json .}}",
                      timeout=20)
    assert time.monotonic() - t_start < 10  # ends after replaying: until is in the past
    msgs = _json_lines(p.stdout)
    assert _in_order(_pairs(msgs), [
        ("network", "create"), ("container", "create"), ("network", "connect"),
        ("container", "start"), ("container", "exec_create"), ("container", "exec_start"),
        ("container", "exec_die"), ("container", "kill"), ("container", "die"),
        ("network", "disconnect"), ("container", "stop"), ("container", "destroy"),
        ("network", "destroy")]), str(_pairs(msgs))
    by_action = {m["Action"].split(":")[0]: m for m in msgs if m["Type"] == "container"}
    die = by_action["die"]
    assert die["Actor"]["ID"] == cid and die["id"] == cid and die["from"] == "busybox"
    assert die["Actor"]["Attributes"]["exitCode"] == "137"
    assert die["Actor"]["Attributes"]["tier"] == "web"
    assert die["Actor"]["Attributes"]["name"] == "web"
    # One kill per signal, as moby's stop logs them: SIGTERM, then SIGKILL after the timeout.
    assert [m["Actor"]["Attributes"]["signal"] for m in msgs
            if m["Type"] == "container" and m["Action"] == "kill"] == ["15", "9"]
    assert by_action["exec_die"]["Actor"]["Attributes"]["exitCode"] == "0"
    assert by_action["exec_start"]["Action"] == "exec_start: true"
    assert all(m["scope"] == "local" and m["timeNano"] // 10**9 == m["time"] for m in msgs)

    # The CLI's default layout, and filters in the CLI's map-of-sets encoding.
    text = daemon.docker("events", "--since", t0, "--until", t1, "--filter", "type=network",
                         "--filter", "event=create", timeout=20).stdout
    lines = text.splitlines()
    assert len(lines) == 1 and " network create " in lines[0] and "name=front" in lines[0]
    only = _json_lines(daemon.docker(
        "events", "--since", t0, "--until", t1, "--filter", "container=web",
        "--filter", "event=die", "--format", "{{json .}}", timeout=20).stdout)
    assert [(m["Action"], m["Actor"]["ID"]) for m in only] == [("die", cid)]
    labelled = _json_lines(daemon.docker(
        "events", "--since", t0, "--until", t1, "--filter", "label=tier=web",
        "--format", "{{json .}}", timeout=20).stdout)
    assert labelled and all(m["Type"] == "container" for m in labelled)

    bad = daemon.docker("events", "--since", "20", "--until", "10", check=False)
    assert bad.returncode != 0 and "cannot be after" in bad.stderr


@pytest.fixture
def sdk(daemon: Daemon) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=f"unix://{daemon.socket}")
    try:
        yield c
    finally:
        c.close()
    text = (daemon.root / "nsnetd.log").read_text(errors="replace")
    assert "Traceback" not in text, daemon.log_tail(60)


def _tiny_rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    return buf.getvalue()


def test_sdk_events_live_and_past(daemon: Daemon, sdk: docker.DockerClient) -> None:
    since = time.time() - 0.001
    stream = sdk.events(decode=True, filters={"type": ["container", "image"]})
    try:
        c = sdk.containers.run("busybox", ["sh", "-c", "exit 3"], detach=True,
                               auto_remove=True, labels={"app": "sdk"})
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        for ev in stream:
            seen.append(ev)
            if ev["Action"] == "destroy" or time.monotonic() > deadline:
                break
    finally:
        stream.close()
    assert [(e["Type"], e["Action"]) for e in seen] == [
        ("container", "create"), ("container", "start"), ("container", "die"),
        ("container", "destroy")], seen
    assert seen[2]["Actor"]["Attributes"]["exitCode"] == "3"
    assert all(e["id"] == c.id and e["Actor"]["Attributes"]["app"] == "sdk" for e in seen)

    sdk.api.import_image_from_data(_tiny_rootfs(), repository="tiny", tag="v1")
    sdk.images.remove("tiny:v1")
    until = time.time() + 0.001
    past = list(sdk.events(decode=True, since=since, until=until,
                           filters={"type": "image"}))
    assert [e["Action"] for e in past][:1] == ["import"]
    assert "delete" in [e["Action"] for e in past]
    assert past[0]["Actor"]["Attributes"]["name"] == "tiny:v1"


def test_nsnet_events_follows_live_and_ends_at_until(daemon: Daemon) -> None:
    until = f"{time.time() + 30:.3f}"
    proc = subprocess.Popen(
        [str(VENV_BIN / "nsnet"), "events", "--format", "json", "--until", until,
         "-f", "type=container"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon.env, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        time.sleep(0.5)  # subscribed before the container exists
        daemon.docker("run", "-d", "--name", "live", "busybox", "sleep", "60")
        daemon.docker("kill", "live")
        daemon.docker("rm", "live")
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(m["Action"] == "destroy" for m in got):
            try:
                got.append(json.loads(lines.get(timeout=1.0)))
            except queue.Empty:
                continue
        assert [m["Action"] for m in got] == ["create", "start", "kill", "die", "destroy"], got
        assert got[2]["Actor"]["Attributes"]["signal"] == "9"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    # Until in the past: prints what the daemon still holds and exits 0.
    p = daemon.cli("events", "--since", "1m", "--until", f"{time.time():.3f}",
                   "--filter", "container=live", timeout=20)
    assert " container destroy " in p.stdout and "name=live" in p.stdout
    bad = daemon.cli("events", "--filter", "colour=red", "--until", "1", check=False)
    assert bad.returncode == 1 and "invalid filter 'colour'" in bad.stderr
