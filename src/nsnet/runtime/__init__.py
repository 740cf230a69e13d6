"""nsnet.runtime."""
