"""nsnet: container networking on the kernel's own primitives."""

__version__ = "0.1.0"
