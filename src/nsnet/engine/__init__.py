"""nsnet.engine."""
