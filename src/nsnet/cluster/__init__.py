"""nsnet.cluster: what a daemon needs to share overlay state with other hosts through a KV store.

``config`` parses the three ``--cluster-*`` flags, ``keys`` holds the key layout under
``/nsnet/v1/``, ``ipam`` hands out subnets, VNIs, addresses and names cluster-wide with
compare-and-swap transactions, ``membership`` keeps this node registered under a lease and
watches the others. Everything here codes against the ``KV`` protocol (``nsnet.store.kv``), so
the in-memory fake and a real etcd are interchangeable.
"""
