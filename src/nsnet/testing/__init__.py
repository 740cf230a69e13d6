"""nsnet.testing."""
