"""nsnet.dns."""
