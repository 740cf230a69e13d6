"""``nsnetd``: the daemon. Owns networks and containers of the namespace it is started in."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import ipaddress
import logging
import os
import resource
import signal
import sys
from pathlib import Path

from aiohttp import web

from nsnet.api.routes import build
from nsnet.api.server import ApiServer, Limits
from nsnet.cluster import config as cluster_config
from nsnet.cluster.config import ClusterConfig
from nsnet.engine import crashpoints
from nsnet.engine.cluster import Cluster, load_node_id, node_ttl
from nsnet.engine.config import EngineConfig
from nsnet.engine.networks import DEFAULT_BRIDGE_CIDR_V6, DEFAULT_BRIDGE_IPV6
from nsnet.engine.wiring import build_engine
from nsnet.errors import Invalid, NsnetError
from nsnet.file_modes import restrict_children, restrict_files, secure_roots
from nsnet.ipam.ula import load_or_create_engine_id
from nsnet.runtime.runc import Runc, become_subreaper
from nsnet.store.etcd import EtcdKV

log = logging.getLogger("nsnet.daemon")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nsnetd", description="nsnet container networking daemon")
    p.add_argument("--data-root", default="/var/lib/nsnet", help="persistent state (SQLite, "
                   "images, container layers)")
    p.add_argument("--exec-root", default="/run/nsnet", help="runtime state (namespaces, "
                   "bundles, the API socket)")
    p.add_argument("-H", "--host", default="", help="API socket path (default: "
                   "<exec-root>/nsnet.sock)")
    p.add_argument("--default-bridge", default="nsnet0", help="name of the default bridge")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf", help="where the host's "
                   "nameservers and search domains are read from")
    p.add_argument("--log-level", type=_log_level, default="info",
                   help="debug, info, warn, error or fatal, as dockerd's; debug logs every "
                        "API request (4xx ones at info)")
    p.add_argument("--no-dns", action="store_true", help="disable the embedded DNS server")
    p.add_argument("--ipv6", action="store_true", help="give the default bridge IPv6 (as "
                   "dockerd's --ipv6)")
    p.add_argument("--fixed-cidr-v6", default="", metavar="CIDR", help="the default bridge's "
                   "IPv6 subnet (with --ipv6; default: a /64 of this engine's ULA /48)")
    p.add_argument("--api-max-connections", type=_positive_int, default=Limits.max_connections,
                   help="API connections open at once; past it a new one gets 503 "
                   "(default %(default)s)")
    p.add_argument("--api-header-timeout", type=_positive_float, default=Limits.header_timeout,
                   help="seconds a connection may take to send complete request headers, from "
                   "opening or from its previous response (also the keep-alive idle time; "
                   "default %(default)s)")
    p.add_argument("--api-body-timeout", type=_positive_float, default=Limits.body_timeout,
                   help="seconds a request body may stall before the connection is closed "
                   "(default %(default)s)")
    p.add_argument("--cluster-store", default="", metavar="etcd://HOST:PORT[,HOST:PORT...]",
                   help="etcd endpoints shared with the other hosts of overlay networks")
    p.add_argument("--cluster-advertise", default="", metavar="IP|INTERFACE[:PORT]",
                   help="the address (and VXLAN UDP port, default 4789) other hosts reach "
                   "this one at")
    p.add_argument("--cluster-store-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="TLS to etcd: kv.cacertfile=, kv.certfile=, kv.keyfile= (repeatable "
                   "or comma-separated)")
    args = p.parse_args(argv)
    if args.fixed_cidr_v6:
        if not args.ipv6:
            p.error("--fixed-cidr-v6 needs --ipv6")
        try:
            if ipaddress.ip_network(args.fixed_cidr_v6).version != 6:
                raise ValueError
        except ValueError:
            p.error(f"--fixed-cidr-v6: {args.fixed_cidr_v6!r} is not an IPv6 subnet")
    try:
        # Checked here, before anything is made: a bad flag is a usage error, not a
        # half-started daemon.
        args.cluster = cluster_config.from_flags(args.cluster_store, args.cluster_advertise,
                                                 args.cluster_store_opt)
    except Invalid as e:
        p.error(e.message)
    return args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


# dockerd's --log-level words (logrus's) onto Python's levels; "trace" and "panic" as the
# nearest Python has, so a flag copied from a dockerd unit file still starts the daemon.
_LOG_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
               "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR,
               "fatal": logging.CRITICAL, "panic": logging.CRITICAL}


def _log_level(text: str) -> int:
    level = _LOG_LEVELS.get(text.strip().lower())
    if level is None:
        raise argparse.ArgumentTypeError(
            f"unknown level {text!r}: one of {', '.join(sorted(set(_LOG_LEVELS)))}")
    return level


def socket_path(args: argparse.Namespace) -> Path:
    h = args.host
    if h.startswith("unix://"):
        h = h[len("unix://"):]
    return Path(h) if h else Path(args.exec_root) / "nsnet.sock"


def _cluster(cfg: ClusterConfig | None, data_root: Path) -> Cluster | None:
    """The cluster membership of ``--cluster-store``, or None (nsnetd then works alone)."""
    if cfg is None:
        return None
    node_id = load_node_id(data_root)
    log.info("cluster store %s, node %s, VTEP %s:%d", cfg.store_url, node_id, cfg.advertise,
             cfg.vxlan_port)
    return Cluster.from_config(EtcdKV.from_config(cfg), cfg, node_id,
                               ttl=node_ttl(os.environ))


async def serve(args: argparse.Namespace) -> int:
    config = EngineConfig(data_root=Path(args.data_root), exec_root=Path(args.exec_root),
                          default_bridge=args.default_bridge,
                          host_resolv_conf=Path(args.resolv_conf),
                          extra={DEFAULT_BRIDGE_IPV6: args.ipv6,
                                 DEFAULT_BRIDGE_CIDR_V6: args.fixed_cidr_v6})
    # Private before anything is stored in them (file_modes.py: who may read what).
    secure_roots(config.data_root, config.exec_root)
    # Docker's engine ID (`docker info`), the one the default IPv6 pool is derived from.
    config.extra["daemon_id"] = load_or_create_engine_id(config.data_root)
    try:
        cluster = _cluster(args.cluster, config.data_root)
    except (NsnetError, ValueError) as e:
        log.error("cluster: %s", e.message if isinstance(e, NsnetError) else e)
        return 1
    runc = Runc(config.exec_root, config.data_root)
    engine, resolver = build_engine(config, dns=not args.no_dns, runtime=runc, cluster=cluster)
    # What the engine just made (directories, nsnet.db-wal/-shm) and what an older run left.
    restrict_children(config.data_root)
    restrict_children(config.exec_root)
    restrict_files(runc.private_files())
    try:
        report = await engine.start()
    except NsnetError as e:
        log.error("start failed: %s", e.message)
        await engine.close()
        return 1
    log.info("reconciled: %s", {k: v for k, v in report.items() if v})
    api = build(engine)
    limits = Limits(max_connections=args.api_max_connections,
                    header_timeout=args.api_header_timeout, body_timeout=args.api_body_timeout)
    server = ApiServer(api.dispatch, limits=limits, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    sock = socket_path(args)
    sock.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    site = web.UnixSite(runner, str(sock))
    await site.start()
    os.chmod(sock, 0o660)
    with contextlib.suppress(KeyError, PermissionError):
        os.chown(sock, 0, grp.getgrnam("nsnet").gr_gid)
    log.info("nsnetd listening on unix://%s", sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    log.info("shutting down (containers keep running; the next start adopts them)")
    await runner.cleanup()
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    if resolver is not None:
        await resolver.close()
    await engine.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Test-only: NSNET_TESTING=1 NSNET_TEST_CRASH_AT=<op>.<step> (engine/crashpoints.py).
        crashpoints.arm_from_env(os.environ)
    except ValueError as e:
        print(f"nsnetd: {e}", file=sys.stderr)
        sys.exit(1)
    if os.geteuid() != 0:
        print("nsnetd: must run as root (it creates namespaces, links and firewall rules)",
              file=sys.stderr)
        sys.exit(1)
    become_subreaper()
    # One resolver socket pair per sandbox plus a socket per forwarded query: 1,024 is too few.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 1 << 20)), hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
