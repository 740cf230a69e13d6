"""The seccomp profile generator, judged by what a filter built from it would answer.

``verdict`` below applies an OCI ``linux.seccomp`` object the way libseccomp does (the first
matching rule with all its argument conditions true wins; no match: the default action), so
the tests state outcomes ("clone with CLONE_NEWUSER is refused") rather than the shape of
the JSON.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nsnet.runtime.runc import DEFAULT_CAPABILITIES
from nsnet.runtime.seccomp import build_profile, kernel_version

EPERM, ENOSYS = 1, 38
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS = 0x10000000, 0x40000000, 0x00020000
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes
SIGCHLD = 17
HOST = ("x86_64", (6, 18))


def _holds(cond: dict[str, Any], args: tuple[int, ...]) -> bool:
    a = args[cond["index"]]
    v = cond["value"]
    op = cond["op"]
    if op == "SCMP_CMP_EQ":
        return a == v
    if op == "SCMP_CMP_NE":
        return a != v
    if op == "SCMP_CMP_LT":
        return a < v
    if op == "SCMP_CMP_LE":
        return a <= v
    if op == "SCMP_CMP_GT":
        return a > v
    if op == "SCMP_CMP_GE":
        return a >= v
    if op == "SCMP_CMP_MASKED_EQ":
        return a & v == cond["valueTwo"]
    raise AssertionError(f"unknown op {op}")


def verdict(profile: dict[str, Any], name: str, *args: int) -> tuple[str, int | None]:
    """(action, errno) the filter gives to ``name(args...)``."""
    padded = (*args, *([0] * (6 - len(args))))
    for rule in profile["syscalls"]:
        if name in rule["names"] and all(_holds(c, padded) for c in rule.get("args", [])):
            return rule["action"], rule.get("errnoRet")
    return profile["defaultAction"], profile.get("defaultErrnoRet")


ALLOW = ("SCMP_ACT_ALLOW", None)
DENIED = ("SCMP_ACT_ERRNO", EPERM)


def default_profile(caps: tuple[str, ...] = DEFAULT_CAPABILITIES,
                    machine: str = HOST[0], kernel: tuple[int, int] = HOST[1]) -> dict[str, Any]:
    return build_profile(caps, machine, kernel)


def test_shape_runc_accepts() -> None:
    p = default_profile()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == EPERM
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    actions = {r["action"] for r in p["syscalls"]}
    assert actions <= {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}
    for rule in p["syscalls"]:
        assert rule["names"] and all(isinstance(n, str) for n in rule["names"])
        assert len(set(rule["names"])) == len(rule["names"])
    assert json.loads(json.dumps(p)) == p


def test_deterministic_and_does_not_keep_caller_lists() -> None:
    caps = list(DEFAULT_CAPABILITIES)
    a = build_profile(caps, *HOST)
    caps.append("CAP_SYS_ADMIN")
    assert json.dumps(a) == json.dumps(build_profile(DEFAULT_CAPABILITIES, *HOST))


def test_everyday_syscalls_allowed() -> None:
    p = default_profile()
    for name in ("read", "write", "openat", "close", "mmap", "execve", "exit_group", "wait4",
                 "futex", "epoll_wait", "bind", "connect", "sendto", "recvmsg", "setuid",
                 "setgroups", "capset", "prctl", "chown", "mknod", "kill", "arch_prctl",
                 "chroot", "ptrace", "getrandom", "seccomp"):
        assert verdict(p, name) == ALLOW, name


def test_host_reaching_syscalls_denied_with_eperm() -> None:
    p = default_profile()
    for name in ("unshare", "setns", "mount", "umount2", "pivot_root", "fsopen", "open_tree",
                 "move_mount", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
                 "userfaultfd", "io_uring_setup", "kexec_load", "kexec_file_load",
                 "init_module", "finit_module", "delete_module", "reboot", "swapon", "acct",
                 "open_by_handle_at", "clock_settime", "settimeofday", "sethostname",
                 "iopl", "ioperm", "syslog", "lookup_dcookie", "kcmp", "pidfd_getfd",
                 "quotactl", "vhangup", "mbind", "nfsservctl", "no_such_call"):
        assert verdict(p, name) == DENIED, name


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_clone_refuses_exactly_the_namespace_flags(flags: int) -> None:
    p = default_profile()
    ns_bits = 0x7E020000
    want = ALLOW if flags & ns_bits == 0 else DENIED
    assert verdict(p, "clone", flags) == want


def test_clone_fork_and_threads_allowed_clone3_enosys() -> None:
    p = default_profile()
    assert verdict(p, "clone", SIGCHLD) == ALLOW
    assert verdict(p, "clone", CLONE_THREAD_FLAGS) == ALLOW
    assert verdict(p, "clone", SIGCHLD | CLONE_NEWUSER) == DENIED
    assert verdict(p, "clone", SIGCHLD | CLONE_NEWNET) == DENIED
    # ENOSYS, not EPERM: glibc then falls back to clone, whose flags the filter can read.
    assert verdict(p, "clone3") == ("SCMP_ACT_ERRNO", ENOSYS)


def test_s390_clone_flags_are_the_second_argument() -> None:
    p = default_profile(machine="s390x")
    assert p["architectures"] == ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]
    assert verdict(p, "clone", 0, SIGCHLD) == ALLOW
    assert verdict(p, "clone", 0, SIGCHLD | CLONE_NEWUSER) == DENIED
    assert verdict(p, "s390_runtime_instr") == ALLOW


@given(st.integers(min_value=0, max_value=64))
def test_socket_every_family_but_alg_and_vsock(family: int) -> None:
    want = DENIED if family in (38, 40) else ALLOW
    assert verdict(default_profile(), "socket", family) == want


@given(st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_personality_only_the_known_values(value: int) -> None:
    want = ALLOW if value in (0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF) else DENIED
    assert verdict(default_profile(), "personality", value) == want


def test_sys_admin_gives_back_namespaces_and_mount() -> None:
    p = default_profile((*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"))
    for name in ("unshare", "setns", "mount", "umount2", "bpf", "sethostname", "clone3"):
        assert verdict(p, name) == ALLOW, name
    assert verdict(p, "clone", SIGCHLD | CLONE_NEWUSER | CLONE_NEWNS) == ALLOW
    # Still nothing a different capability guards.
    assert verdict(p, "init_module") == DENIED and verdict(p, "keyctl") == DENIED


def test_each_capability_opens_its_own_group_only() -> None:
    base = default_profile()
    cases = {
        "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise"),
        "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
        "CAP_SYS_BOOT": ("reboot",),
        "CAP_SYS_TIME": ("settimeofday", "clock_settime"),
        "CAP_SYS_RAWIO": ("iopl", "ioperm"),
        "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
        "CAP_SYSLOG": ("syslog",),
        "CAP_BPF": ("bpf",),
        "CAP_PERFMON": ("perf_event_open",),
        "CAP_SYS_NICE": ("mbind", "set_mempolicy"),
    }
    for cap, names in cases.items():
        p = default_profile((*DEFAULT_CAPABILITIES, cap))
        for name in names:
            assert verdict(base, name) == DENIED, name
            assert verdict(p, name) == ALLOW, (cap, name)
        assert verdict(p, "unshare") == DENIED, cap
    # Short names ("SYS_PTRACE", as in --cap-add) mean the same.
    assert verdict(default_profile(("sys_ptrace",)), "kcmp") == ALLOW


def test_dropping_a_default_capability_narrows_the_filter() -> None:
    caps = tuple(c for c in DEFAULT_CAPABILITIES if c != "CAP_SYS_CHROOT")
    assert verdict(default_profile(caps), "chroot") == DENIED
    assert verdict(default_profile(), "chroot") == ALLOW


def test_ptrace_needs_a_kernel_that_rechecks_seccomp() -> None:
    assert verdict(default_profile(kernel=(4, 4)), "ptrace") == DENIED
    assert verdict(default_profile(kernel=(4, 8)), "ptrace") == ALLOW
    assert verdict(default_profile(kernel=(4, 4)), "process_vm_readv") == DENIED


def test_arch_specific_calls() -> None:
    arm = default_profile(machine="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert verdict(arm, "set_tls") == ALLOW and verdict(arm, "arch_prctl") == DENIED
    x86 = default_profile()
    assert verdict(x86, "modify_ldt") == ALLOW and verdict(x86, "set_tls") == DENIED
    unknown = default_profile(machine="pdp11")
    assert unknown["architectures"] == []  # runc then filters the native ABI alone
    assert verdict(unknown, "read") == ALLOW and verdict(unknown, "unshare") == DENIED


def test_kernel_version_parsing() -> None:
    assert kernel_version("6.18.44-fc-v657") == (6, 18)
    assert kernel_version("5.10.0-rc1") == (5, 10)
    assert kernel_version("4.8") == (4, 8)
    assert kernel_version("garbage") == (0, 0)
