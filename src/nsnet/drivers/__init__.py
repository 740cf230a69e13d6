"""nsnet.drivers."""
