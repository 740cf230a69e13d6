"""nsnet.client."""
