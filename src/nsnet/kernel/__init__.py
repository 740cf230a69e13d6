"""nsnet.kernel."""
