"""nsnet.runtime: images on disk and containers run by runc (see docs/architecture.md, layers)."""

from nsnet.runtime.images import ImageStore, normalize_reference
from nsnet.runtime.runc import NEW_NETNS, ProcessSpec, Runc, become_subreaper

__all__ = [
    "NEW_NETNS",
    "ImageStore",
    "ProcessSpec",
    "Runc",
    "become_subreaper",
    "normalize_reference",
]
