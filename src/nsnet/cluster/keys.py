"""The key layout of cluster-wide state: every key nsnet writes to etcd, in one place.

Everything lives under ``/nsnet/v1/`` so one etcd can serve other users, and a future layout
can sit beside this one during an upgrade. Values are JSON objects (UTF-8).

=============================================  ===============================  ==============
key                                            value                            lifetime
=============================================  ===============================  ==============
``nodes/<node id>``                            VTEP, port, hostname, counts     node's lease
``networks/<network id>``                      the network record               until rm
``names/networks/<name>``                      the network id (uniqueness)      until rm
``ipam/subnet-epoch``                          a counter                        forever
``ipam/subnets/<cidr>``                        network id, gateway, range, aux  until rm
``ipam/vni/<vni>``                             the network id                   until rm
``ipam/addr/<network id>/<ip>``                endpoint id and node id          until released
``endpoints/<network id>/<endpoint id>``       the endpoint (peer) record       until removed
=============================================  ===============================  ==============

Only ``nodes/`` keys hang on a lease. Endpoints and addresses do not, on purpose: a host cut
off from etcd for longer than the TTL still runs its containers with their addresses, and if
the lease took those keys with it another host could be handed the same address, a duplicate
no one can repair without stopping a container. Instead a node's liveness is its ``nodes/``
key: peers ignore (and unprogram) the endpoints of a node that is not live, and a node that
comes back re-registers and finds its endpoints and addresses where it left them.

``ipam/subnet-epoch`` exists because overlap cannot be expressed as a compare on single keys
(10.0.0.0/16 and 10.0.1.0/24 are different keys): every change to the set of subnets rewrites
it and compares its revision, so subnet allocation is serialised cluster-wide. Network
creation is rare; correctness wins over parallelism here.

A name component is never allowed to contain ``/`` (it would read as a deeper key and escape
a prefix listing) nor be empty; ``component`` refuses both before any key is built.
"""

from __future__ import annotations

import ipaddress

from nsnet.errors import Invalid

ROOT = "/nsnet/v1/"
NODES = ROOT + "nodes/"
NETWORKS = ROOT + "networks/"
NETWORK_NAMES = ROOT + "names/networks/"
SUBNET_EPOCH = ROOT + "ipam/subnet-epoch"
SUBNETS = ROOT + "ipam/subnets/"
VNIS = ROOT + "ipam/vni/"
ADDRESSES = ROOT + "ipam/addr/"
ENDPOINTS = ROOT + "endpoints/"


def component(value: str, what: str) -> str:
    """``value`` if it is safe as one path component of a key."""
    if not value or "/" in value or len(value) > 255 or not value.isprintable() or (
            value in (".", "..")):
        raise Invalid(f"invalid {what} {value!r} for the cluster store")
    return value


def node(node_id: str) -> str:
    return NODES + component(node_id, "node id")


def network(network_id: str) -> str:
    return NETWORKS + component(network_id, "network id")


def network_name(name: str) -> str:
    return NETWORK_NAMES + component(name, "network name")


def subnet(cidr: str) -> str:
    """The CIDR in its canonical text (``10.0.0.0/24``), so one subnet has one key."""
    return SUBNETS + str(ipaddress.ip_network(cidr))


def subnet_of_key(key: str) -> str:
    return key[len(SUBNETS):]


def vni(number: int) -> str:
    return VNIS + str(number)


def addresses(network_id: str) -> str:
    """The prefix of every address claim on one network."""
    return ADDRESSES + component(network_id, "network id") + "/"


def address(network_id: str, ip: str) -> str:
    return addresses(network_id) + str(ipaddress.ip_address(ip))


def endpoints(network_id: str) -> str:
    """The prefix of every endpoint on one network (all networks: ``ENDPOINTS``)."""
    return ENDPOINTS + component(network_id, "network id") + "/"


def endpoint(network_id: str, endpoint_id: str) -> str:
    return endpoints(network_id) + component(endpoint_id, "endpoint id")


def last(key: str) -> str:
    """The last component of a key (a node id, an address, a VNI)."""
    return key.rpartition("/")[2]
