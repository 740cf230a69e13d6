"""Detach keys (``docker attach --detach-keys``, default Ctrl-P Ctrl-Q) found in an attached
client's input by the daemon, as moby does.

The docker CLI also watches its own terminal for the keys, but an API client (the Docker SDK's
``attach_socket``, a script on the socket) relies on the daemon: without this, its keys went
to the container's terminal as two control characters and the session never ended.
"""

from __future__ import annotations

from nsnet.errors import Invalid

DEFAULT = b"\x10\x11"  # ctrl-p, ctrl-q
_CTRL_SPECIALS = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse(spec: str | None) -> bytes:
    """moby's format: keys separated by commas, each one character or ``ctrl-<c>`` with
    ``<c>`` a letter or one of ``@[\\]^_``; none (or "") is the default."""
    if not spec:
        return DEFAULT
    out = bytearray()
    for key in spec.split(","):
        k = key.strip()
        if len(k) == 1 and k.isascii():
            out.append(ord(k))
            continue
        if k.lower().startswith("ctrl-") and len(k) == 6:
            c = k[5].lower()
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            if c in _CTRL_SPECIALS:
                out.append(_CTRL_SPECIALS[c])
                continue
        raise Invalid(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class DetachScanner:
    """Passes input through, holding back what may be the start of the keys; says when the
    whole sequence came (the bytes before it still pass). A partial match that breaks is
    given back as typed."""

    def __init__(self, keys: bytes) -> None:
        self._keys = keys
        self._held = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for b in data:
            if b == self._keys[self._held]:
                self._held += 1
                if self._held == len(self._keys):
                    self._held = 0
                    return bytes(out), True
                continue
            if self._held:
                out += self._keys[:self._held]
                self._held = 0
                if b == self._keys[0]:
                    self._held = 1
                    continue
            out.append(b)
        return bytes(out), False

    def flush(self) -> bytes:
        """What was held when the input ended: it was typed, not a detach."""
        held, self._held = self._keys[:self._held], 0
        return held
