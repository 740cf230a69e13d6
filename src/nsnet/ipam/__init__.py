"""nsnet.ipam."""
