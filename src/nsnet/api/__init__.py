"""nsnet.api."""
