"""The seccomp profile every container gets: Docker's default, built for a capability set.

Why an allowlist: the kernel grows a few syscalls a year, and a denylist lets each new one in
(io_uring, userfaultfd and the new mount API each reached the host before anyone listed
them). So, as in moby's default profile (moby/profiles seccomp v0.2.3), everything not named
here answers EPERM, the errno a program already expects from a syscall it may not make.

What a container without extra capabilities cannot do, whatever its uid inside:

- make namespaces: ``unshare``, ``setns``, and ``clone`` with any CLONE_NEW* flag (an arg
  rule on the flags); ``clone3`` answers ENOSYS, because its flags sit in a struct seccomp
  cannot read, and ENOSYS makes glibc fall back to ``clone``. A user namespace is the usual
  first step of an escape (it hands back CAP_SYS_ADMIN over new mount and net namespaces);
- mount anything (``mount``, the fs* and ``open_tree`` family), ``pivot_root``, quotas;
- reach kernel keyrings (``keyctl``, ``add_key``, ``request_key``), ``bpf``, ``perf_event_open``,
  ``userfaultfd``, ``io_uring_*``, ``kexec_*``, modules, ``reboot``, ``swapon``, clock setting,
  ``open_by_handle_at`` (the "shocker" escape), ``lookup_dcookie``, ``syslog``;
- open AF_ALG or AF_VSOCK sockets (kernel crypto and the hypervisor channel);
- switch to an exotic ``personality`` (only the handful libc and ``setarch`` use).

Capabilities unlock their own groups, as in Docker (``--cap-add SYS_ADMIN`` gives mount and
unshare back): the profile is a pure function of the bounding set, so whatever grants a
capability also widens the filter without a second switch. ``ptrace`` itself is allowed
(kernel 4.8+ rechecks seccomp after a tracer changes a syscall, so it cannot be used to get
around the filter); tracing another container's process is stopped by the pid namespace,
and tracing a process of another uid by the missing CAP_SYS_PTRACE.

Syscall names unknown to the runtime's libseccomp are skipped by runc, so listing calls
newer than the host's libseccomp costs nothing; runc answers ENOSYS for numbers above the
highest it knows, so programs probing for a newer call fall back as on an older kernel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

EPERM: Final = 1
ENOSYS: Final = 38

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
# | CLONE_NEWNET (linux/sched.h).
CLONE_NAMESPACE_FLAGS: Final = (
    0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
)

AF_ALG: Final = 38
AF_VSOCK: Final = 40

# Values of personality(2) a container may set: PER_LINUX, PER_LINUX32, UNAME26,
# PER_LINUX32|UNAME26, and 0xffffffff (the query form, which changes nothing).
PERSONALITIES: Final = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

# ---- what any container may call -----------------------------------------------------------

_FILES: Final = (
    "access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd", "umask",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "chown32", "fchown", "fchown32",
    "fchownat", "lchown", "lchown32",
    "creat", "open", "openat", "openat2", "name_to_handle_at", "close", "close_range",
    "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock", "ioctl",
    "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "mkdir", "mkdirat", "mknod", "mknodat", "rmdir", "readlink", "readlinkat",
    "stat", "stat64", "lstat", "lstat64", "fstat", "fstat64", "fstatat64", "newfstatat",
    "statx", "statfs", "statfs64", "fstatfs", "fstatfs64", "getdents", "getdents64",
    "truncate", "truncate64", "ftruncate", "ftruncate64", "fallocate", "fadvise64",
    "fadvise64_64", "readahead", "sync", "syncfs", "fsync", "fdatasync", "sync_file_range",
    "utime", "utimes", "utimensat", "utimensat_time64", "futimesat",
    "read", "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev",
    "pwritev2", "lseek", "_llseek", "copy_file_range", "sendfile", "sendfile64", "splice",
    "tee", "vmsplice", "cachestat", "listmount", "statmount",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
    "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr", "fsetxattr",
    "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat", "removexattr",
    "lremovexattr", "fremovexattr", "removexattrat",
)  # fmt: skip

_WAITING: Final = (
    "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait",
    "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd",
    "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64",
    "futex", "futex_time64", "futex_wait", "futex_wake", "futex_requeue", "futex_waitv",
)  # fmt: skip

_MEMORY: Final = (
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    "mlock", "mlock2", "mlockall", "munlock", "munlockall", "remap_file_pages", "memfd_create",
    "memfd_secret", "membarrier", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "map_shadow_stack", "mseal",
)  # fmt: skip

_PROCESSES: Final = (
    "execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid", "waitpid",
    "getpid", "getppid", "gettid", "getpgid", "getpgrp", "setpgid", "getsid", "setsid",
    "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "restart_syscall",
    "prctl", "prlimit64", "getrlimit", "setrlimit", "ugetrlimit", "getrusage", "times",
    "getpriority", "setpriority", "ioprio_get", "ioprio_set", "sched_yield",
    "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr",
    "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "pidfd_open", "pidfd_send_signal", "process_mrelease",
    "capget", "capset", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self", "get_thread_area", "set_thread_area", "uname", "sysinfo",
    "getcpu", "getrandom", "uretprobe", "riscv_hwprobe",
)  # fmt: skip

# Changing ids inside the container is fine: CAP_SETUID/SETGID decide, in the container's
# own terms.
_IDS: Final = (
    "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid",
    "getegid32", "getresuid", "getresuid32", "getresgid", "getresgid32", "getgroups",
    "getgroups32", "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32",
    "setregid", "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32",
    "setgroups", "setgroups32", "setfsuid", "setfsuid32", "setfsgid", "setfsgid32",
)  # fmt: skip

_SIGNALS_AND_TIME: Final = (
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask", "sigreturn",
    "pause", "alarm", "time", "gettimeofday", "clock_gettime", "clock_gettime64",
    "clock_getres", "clock_getres_time64", "clock_nanosleep", "clock_nanosleep_time64",
    "nanosleep", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    # Read-only without CAP_SYS_TIME (the kernel checks the mode bits).
    "adjtimex", "clock_adjtime", "clock_adjtime64",
)  # fmt: skip

# socket(2) itself is in _socket_rules: all families but two.
_SOCKETS_AND_IPC: Final = (
    "socketpair", "bind", "connect", "listen", "accept", "accept4", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "shutdown", "send", "sendto", "sendmsg",
    "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time64", "socketcall",
    "pipe", "pipe2", "ipc", "msgget", "msgctl", "msgsnd", "msgrcv", "semget", "semctl",
    "semop", "semtimedop", "semtimedop_time64", "shmget", "shmctl", "shmat", "shmdt",
    "mq_open", "mq_unlink", "mq_getsetattr", "mq_notify", "mq_timedsend",
    "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64",
)  # fmt: skip

ALWAYS_ALLOWED: Final = frozenset(
    _FILES + _WAITING + _MEMORY + _PROCESSES + _IDS + _SIGNALS_AND_TIME + _SOCKETS_AND_IPC
)

# ---- what a capability adds ----------------------------------------------------------------

BY_CAPABILITY: Final[dict[str, tuple[str, ...]]] = {
    "CAP_SYS_ADMIN": (
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr",
        "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl",
        "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
        "umount2", "unshare",
    ),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": (
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        "process_madvise",
    ),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "set_mempolicy", "mbind", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}  # fmt: skip

# Safe for anyone from kernel 4.8 on (seccomp is re-run after a tracer rewrites a syscall).
_PTRACE: Final = ("ptrace", "process_vm_readv", "process_vm_writev")
_PTRACE_SAFE_FROM: Final = (4, 8)

# ---- architectures -------------------------------------------------------------------------

# uname's machine -> the seccomp arches a process on it can use (a 64-bit kernel also runs
# the 32-bit ABIs, which must be filtered too or they are a way around the filter).
ARCHES: Final[dict[str, tuple[str, ...]]] = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "riscv64": ("SCMP_ARCH_RISCV64",),
    "loongarch64": ("SCMP_ARCH_LOONGARCH64",),
}

_BY_MACHINE: Final[dict[str, tuple[str, ...]]] = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "i686": ("modify_ldt",),
    "i386": ("modify_ldt",),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                "cacheflush", "set_tls"),
    "armv7l": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
               "cacheflush", "set_tls"),
    "ppc64le": ("sync_file_range2", "swapcontext"),
    "s390x": ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    "riscv64": ("riscv_flush_icache",),
}  # fmt: skip


def _arg(index: int, value: int, op: str, value_two: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"index": index, "value": value, "op": op}
    if value_two is not None:
        rule["valueTwo"] = value_two
    return rule


def _allow_if(name: str, *args: dict[str, Any]) -> dict[str, Any]:
    return {"names": [name], "action": "SCMP_ACT_ALLOW", "args": list(args)}


def _socket_rules() -> list[dict[str, Any]]:
    # Three ranges because a rule's arg conditions are ANDed and rules are ORed.
    return [
        _allow_if("socket", _arg(0, AF_ALG, "SCMP_CMP_LT")),
        _allow_if("socket", _arg(0, AF_ALG + 1, "SCMP_CMP_EQ")),
        _allow_if("socket", _arg(0, AF_VSOCK, "SCMP_CMP_GT")),
    ]


def build_profile(
    capabilities: Iterable[str], machine: str, kernel: tuple[int, int]
) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container whose bounding set is
    ``capabilities``, on a host of this ``machine`` (``os.uname().machine``) and ``kernel``
    (major, minor).

    Deterministic (sorted names), so equal inputs give byte-equal config.json files.
    An unknown machine gets no ``architectures``: runc then filters the native ABI only.
    """
    caps = {c.upper() if c.upper().startswith("CAP_") else f"CAP_{c.upper()}"
            for c in capabilities}  # fmt: skip
    allowed = set(ALWAYS_ALLOWED)
    allowed.update(_BY_MACHINE.get(machine, ()))
    if kernel >= _PTRACE_SAFE_FROM:
        allowed.update(_PTRACE)
    for cap, names in BY_CAPABILITY.items():
        if cap in caps:
            allowed.update(names)
    rules: list[dict[str, Any]] = [
        {"names": sorted(allowed), "action": "SCMP_ACT_ALLOW"},
        *_socket_rules(),
        *(_allow_if("personality", _arg(0, p, "SCMP_CMP_EQ")) for p in PERSONALITIES),
    ]
    if "CAP_SYS_ADMIN" not in caps:
        # s390's clone takes the stack first and the flags second.
        flags_at = 1 if machine.startswith("s390") else 0
        rules.append(
            _allow_if("clone", _arg(flags_at, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0))
        )
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHES.get(machine, ())),
        "syscalls": rules,
    }


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a ``uname -r`` string such as "6.18.44-fc-v657"; (0, 0) if unreadable,
    which only withholds what needs a newer kernel."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
