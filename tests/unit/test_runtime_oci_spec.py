"""The container's config.json as pure data: what confinement every container gets, without
root, runc or a mount (runtime/oci_spec.py)."""

from __future__ import annotations

import pytest

from nsnet.errors import Invalid
from nsnet.runtime.oci_spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    MASKED_PATHS,
    NETNS_SYSCTLS,
    NEW_NETNS,
    READONLY_PATHS,
    HostFacts,
    ProcessSpec,
    check_bind_destination,
    check_command,
    config_dict,
    process_dict,
)

FACTS = HostFacts("x86_64", (6, 1), ("/sys/devices/system/cpu/cpu0/thermal_throttle",))


def _config(netns_path: str | None = "/run/nsnet/netns/x", **kw: object) -> dict[str, object]:
    proc = process_dict(ProcessSpec(["sh"]), 0, 0, [])
    return config_dict(
        proc, hostname="h1", cgroups_path="nsnet-t-c1", netns_path=netns_path, host=FACTS,
        **kw,  # type: ignore[arg-type]
    )


def test_process_gets_docker_defaults() -> None:
    p = process_dict(ProcessSpec(["ls", "-l"], env=["A=1"], cwd=""), 1000, 100, [10, 20])
    assert p["user"] == {"uid": 1000, "gid": 100, "additionalGids": [10, 20]}
    assert p["env"] == [DEFAULT_PATH, "A=1"]  # runc looks the command up in this PATH
    assert p["cwd"] == "/"
    assert p["terminal"] is False
    assert process_dict(ProcessSpec(["sh"], tty=True), 0, 0, [])["terminal"] is True
    caps = p["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in caps["bounding"]


def test_process_keeps_its_own_path_and_omits_empty_groups() -> None:
    p = process_dict(ProcessSpec(["x"], env=["PATH=/opt"]), 0, 0, [])
    assert p["env"] == ["PATH=/opt"]
    assert "additionalGids" not in p["user"]


def test_config_confines_and_masks() -> None:
    c = _config()
    linux = c["linux"]
    assert isinstance(linux, dict)
    assert linux["maskedPaths"] == [*MASKED_PATHS, *FACTS.thermal_masks]
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert linux["cgroupsPath"] == "nsnet-t-c1"
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert c["hostname"] == "h1"
    assert c["root"] == {"path": "rootfs", "readonly": False}
    types = [m["type"] for m in c["mounts"]]  # type: ignore[attr-defined]
    assert types[:3] == ["proc", "tmpfs", "devpts"] and "bind" not in types


@pytest.mark.parametrize(
    ("netns_path", "ns", "sysctls"),
    [
        ("/run/x", {"type": "network", "path": "/run/x"}, True),  # joins the sandbox's
        (NEW_NETNS, {"type": "network"}, True),  # runc makes an empty one
        (None, None, False),  # host mode: no namespace, and no sysctl that would change the host
    ],
)
def test_network_namespace_modes(netns_path: str | None, ns: object, sysctls: bool) -> None:
    linux = _config(netns_path)["linux"]
    assert isinstance(linux, dict)
    nets = [n for n in linux["namespaces"] if n["type"] == "network"]
    assert nets == ([ns] if ns else [])
    assert {"pid", "ipc", "uts", "mount"} <= {n["type"] for n in linux["namespaces"]}
    assert linux.get("sysctl") == (NETNS_SYSCTLS if sysctls else None)


@pytest.mark.parametrize("readonly", [False, True])
def test_bind_files_are_private_binds(readonly: bool) -> None:
    c = _config(bind_files={"/etc/hosts": "/run/sb/hosts"}, readonly_binds=readonly)
    binds = [m for m in c["mounts"] if m["type"] == "bind"]  # type: ignore[attr-defined]
    assert binds == [{
        "destination": "/etc/hosts", "type": "bind", "source": "/run/sb/hosts",
        "options": ["rbind", "rprivate", "ro" if readonly else "rw"],
    }]


def test_the_spec_does_not_share_mutable_defaults() -> None:
    a = _config()
    a["mounts"][0]["destination"] = "/x"  # type: ignore[index]
    a["linux"]["resources"]["devices"][0]["allow"] = True  # type: ignore[index]
    b = _config()
    assert b["mounts"][0]["destination"] == "/proc"  # type: ignore[index]
    assert b["linux"]["resources"]["devices"][0]["allow"] is False  # type: ignore[index]


def test_checks_refuse_what_runc_would() -> None:
    with pytest.raises(Invalid, match="absolute"):
        check_bind_destination("etc/hosts")
    check_bind_destination("/etc/hosts")
    with pytest.raises(Invalid, match="working directory 'tmp' is invalid"):
        check_command(ProcessSpec(["sh"], cwd="tmp"))
    with pytest.raises(Invalid, match="No command specified"):
        check_command(ProcessSpec([]))
    check_command(ProcessSpec(["sh"], cwd=""))
