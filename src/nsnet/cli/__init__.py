"""nsnet.cli."""
