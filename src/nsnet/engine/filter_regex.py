"""``name=``/``id=`` list filters: client regular expressions evaluated on the event loop.

Docker evaluates them with Go's linear-time engine. Python's ``re`` backtracks, so a pattern such
as ``(a|aa)+$`` against a 40-character name runs for hours and freezes every API call. The
``regex`` engine takes a timeout, and one listing shares one budget (a context variable set by
the caller): a hostile pattern costs at most that budget and answers 400, however many objects
are listed. Legitimate patterns against names of at most a few hundred characters need
microseconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import regex

from nsnet.errors import Invalid

# Seconds one listing may spend in filter patterns, and one search without a listing's budget.
LISTING_BUDGET = 0.25
SINGLE_SEARCH = 0.05

_deadline: ContextVar[float | None] = ContextVar("nsnet_filter_deadline", default=None)


@contextlib.contextmanager
def filter_budget(seconds: float = LISTING_BUDGET) -> Iterator[None]:
    """Every pattern search inside the block draws on one shared time budget."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


@lru_cache(maxsize=128)
def _compile(pattern: str) -> Any:
    return regex.compile(pattern)


class FilterRegex:
    """One compiled filter value; ``search`` is an unanchored match, as in Docker."""

    def __init__(self, pattern: str, key: str) -> None:
        self._label = f"{key}={pattern[:40]}"
        try:
            self._rx = _compile(pattern)
        except (regex.error, RecursionError, OverflowError, ValueError) as e:
            raise Invalid(f"invalid filter '{self._label}': {e}") from None

    def search(self, text: str) -> bool:
        deadline = _deadline.get()
        timeout = SINGLE_SEARCH if deadline is None else deadline - time.monotonic()
        if timeout <= 0:
            raise self._too_slow()
        try:
            return self._rx.search(text, timeout=timeout) is not None
        except TimeoutError:
            raise self._too_slow() from None

    def _too_slow(self) -> Invalid:
        return Invalid(f"invalid filter '{self._label}': the pattern takes too long to evaluate")


def filter_regex(pattern: str, key: str) -> FilterRegex:
    """A pattern that does not compile is the client's error (400), not a silent non-match."""
    return FilterRegex(pattern, key)
