"""Wiring: the one place that builds the engine's services and hands each its collaborators.

The daemon calls ``build_engine(config)`` and gets the real store, kernel, drivers, image
store and runtime; a unit test passes fakes for any of them (``nsnet.testing.fake_kernel``, a
memory store, a fake runtime) and gets the same services over them. Nothing below this module
constructs a collaborator itself.
"""

from __future__ import annotations

from collections.abc import Callable

from nsnet.drivers.base import Driver, ProgramsPeers
from nsnet.drivers.bridge import BridgeDriver
from nsnet.drivers.macvlan import MacvlanDriver
from nsnet.drivers.null import HostDriver, NullDriver
from nsnet.drivers.overlay import OverlayDriver
from nsnet.engine.cluster import Cluster
from nsnet.engine.config import EngineConfig
from nsnet.engine.connections import ConnectionService
from nsnet.engine.containers import ContainerService
from nsnet.engine.core import Engine, Services
from nsnet.engine.embedded_dns import EmbeddedDNS
from nsnet.engine.global_endpoints import GlobalEndpoints
from nsnet.engine.global_networks import GlobalNetworks
from nsnet.engine.networks import NetworkService
from nsnet.engine.peers import PeerService
from nsnet.engine.ports import Images, Kernel, Runtime, Store
from nsnet.engine.reconcile import Reconciler
from nsnet.engine.registry import Readers, Registry
from nsnet.engine.resolver_hooks import NoResolver, ResolverHooks
from nsnet.engine.sandboxes import SandboxService
from nsnet.engine.sessions import Sessions
from nsnet.ipam.allocator import Allocator, IPNetwork
from nsnet.model import Network


def default_drivers(kernel: Kernel, networks: Callable[[], list[Network]]) -> dict[str, Driver]:
    """The local drivers; macvlan/ipvlan see every network to refuse a second one on a
    parent that another already uses."""
    return {
        "bridge": BridgeDriver(kernel),
        "host": HostDriver(),
        "null": NullDriver(),
        "macvlan": MacvlanDriver(kernel, networks),
        "ipvlan": MacvlanDriver(kernel, networks, "ipvlan"),
    }


def global_networks(cluster: Cluster, registry: Registry, drivers: dict[str, Driver],
                    resolver: ResolverHooks,
                    local_subnets: Callable[[], list[IPNetwork]]) -> GlobalNetworks:
    """The mirror of the cluster's networks; hosts are named by name, VTEP and node id
    (hosts on one machine, as in the lab, share a host name)."""
    def names() -> dict[str, str]:
        return {n.node_id: f"{n.hostname} ({n.vtep}, node {n.node_id[:12]})"
                for n in cluster.nodes()}

    return GlobalNetworks(cluster.kv, cluster.ipam, registry, drivers, resolver,
                          node_names=names, local_subnets=local_subnets)


def global_endpoints(cluster: Cluster, registry: Registry, drivers: dict[str, Driver],
                     sandboxes: SandboxService,
                     embedded: EmbeddedDNS | None) -> GlobalEndpoints:
    """The peer service over the overlay driver, fed by membership, telling the resolver of
    remote endpoints; and this host's global endpoints over it."""
    overlay = drivers["overlay"]
    if not isinstance(overlay, ProgramsPeers):
        raise TypeError("the overlay driver does not program peers")
    peers = PeerService(cluster.kv, overlay, cluster.node_id, registry.networks)
    if isinstance(overlay, OverlayDriver):
        overlay.on_site = peers.site_made
    cluster.on_nodes_change(peers.nodes_changed)
    if embedded is not None:
        peers.subscribe(embedded)
    return GlobalEndpoints(cluster, peers, registry,
                           lambda c, net, a: sandboxes.dns_names(c, net, a.request))


def prepare_roots(config: EngineConfig) -> None:
    config.data_root.mkdir(parents=True, exist_ok=True)
    config.exec_root.mkdir(parents=True, exist_ok=True)
    # Made now, private, rather than by the first container (nsnet.file_modes).
    (config.exec_root / "sandboxes").mkdir(mode=0o700, exist_ok=True)


def build_engine(config: EngineConfig, *, dns: bool = True, store: Store | None = None,
                 kernel: Kernel | None = None, images: Images | None = None,
                 runtime: Runtime | None = None,
                 drivers: dict[str, Driver] | None = None,
                 cluster: Cluster | None = None) -> tuple[Engine, EmbeddedDNS | None]:
    """The engine and, with ``dns``, the embedded DNS it calls (the daemon closes it).
    ``cluster`` (``--cluster-store``) is started and stopped with the engine."""
    prepare_roots(config)
    if store is None:
        from nsnet.store.local import LocalStore

        store = LocalStore(config.data_root / "nsnet.db")
    if kernel is None:
        from nsnet.kernel.host import HostKernel

        kernel = HostKernel(config.exec_root)
    if images is None:
        from nsnet.runtime.images import ImageStore

        images = ImageStore(config.data_root / "images")
    if runtime is None:
        from nsnet.runtime.runc import Runc

        runtime = Runc(config.exec_root, config.data_root)
    registry = Registry(store)
    if drivers is None:
        drivers = default_drivers(kernel, lambda: list(registry.networks.values()))
    if cluster is not None and "overlay" not in drivers:
        drivers = {**drivers, "overlay": OverlayDriver(kernel, cluster.vtep)}
    embedded = EmbeddedDNS(config.host_resolv_conf, registry.networks.get, kernel.ns,
                           kernel.firewall.run_in_namespace) if dns else None
    resolver: ResolverHooks = embedded if embedded is not None else NoResolver()
    ipam = Allocator(store)
    readers = Readers()
    networks = NetworkService(registry, store, ipam, kernel, drivers, resolver, config)
    if cluster is not None:
        networks.global_networks = global_networks(cluster, registry, drivers, resolver,
                                                   networks.host_reserved_subnets)
    sandboxes = SandboxService(registry, store, ipam, kernel, drivers, resolver, config)
    connections = ConnectionService(registry, store, sandboxes, resolver)
    containers = ContainerService(registry, sandboxes, images, runtime, readers)
    connections.published_ports = containers.published_ports
    sessions = Sessions(registry, runtime, readers)
    reconciler = Reconciler(registry, store, ipam, kernel, drivers, resolver, sandboxes,
                            containers, runtime)
    glob = None
    if cluster is not None:
        glob = global_endpoints(cluster, registry, drivers, sandboxes, embedded)
        sandboxes.gateway_network = networks.gateway_network
        sandboxes.global_freed = glob.retire
        connections.global_endpoints = containers.global_endpoints = glob
        global_view = networks.global_networks
        if global_view is not None:
            global_view.settle = glob.flush
        reconciler.global_synced = lambda: global_view is not None and global_view.synced
    services = Services(config=config, store=store, kernel=kernel, images=images,
                        runtime=runtime, drivers=drivers, registry=registry, networks=networks,
                        sandboxes=sandboxes, connections=connections, containers=containers,
                        sessions=sessions, reconciler=reconciler, cluster=cluster,
                        global_endpoints=glob)
    if cluster is not None:
        cluster.count_containers = lambda: sum(
            1 for c in registry.containers.values() if c.state.status == "running")
    metrics = embedded.metrics_text if embedded is not None else None
    return Engine(services, metrics), embedded
