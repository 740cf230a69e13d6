"""Detach keys: moby's key format, and the scanner that finds them in attached input."""

from __future__ import annotations

import pytest

from nsnet.api.detach_keys import DEFAULT, DetachScanner, parse
from nsnet.errors import Invalid


def test_keys_in_mobys_format() -> None:
    assert parse(None) == parse("") == DEFAULT == b"\x10\x11"
    assert parse("ctrl-x,x") == b"\x18x"
    assert parse("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_") == bytes([0, 27, 28, 29, 30, 31])
    assert parse("CTRL-A,a") == b"\x01a"


@pytest.mark.parametrize("bad", ["ctrl-1", "ab", "ctrl-", "x,,y", "ctrl-é", "é"])
def test_bad_keys_are_refused_in_mobys_words(bad: str) -> None:
    with pytest.raises(Invalid, match=r"Invalid detach keys \(.*\) provided"):
        parse(bad)


def test_the_keys_end_input_and_what_came_before_passes() -> None:
    s = DetachScanner(DEFAULT)
    assert s.feed(b"ls\r\x10\x11more") == (b"ls\r", True)


def test_keys_split_across_reads_are_found() -> None:
    s = DetachScanner(DEFAULT)
    assert s.feed(b"a\x10") == (b"a", False)
    assert s.feed(b"\x11") == (b"", True)


def test_a_broken_sequence_is_given_back_as_typed() -> None:
    s = DetachScanner(b"\x18x")
    assert s.feed(b"\x18y") == (b"\x18y", False)
    assert s.feed(b"\x18\x18") == (b"\x18", False)  # the second may still start the keys
    assert s.feed(b"x") == (b"", True)
    s = DetachScanner(DEFAULT)
    assert s.feed(b"\x10") == (b"", False)
    assert s.flush() == b"\x10"  # the input ended: it was typed, not a detach
