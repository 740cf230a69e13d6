"""nsnet.store."""
