"""Undo stacks: every use-case pushes an undo for each finished step (architecture rule 2)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger("nsnet.engine")


class Undo:
    """On an exception inside ``with Undo() as u:``, the pushed steps run in reverse order.

    Undo steps must be idempotent and must not raise for "already gone"; a failing undo step is
    logged and the rest still run, so one stuck object never strands the others.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def push(self, fn: Callable[..., Any], *args: Any) -> None:
        self._steps.append((fn, args))

    def rollback(self) -> None:
        while self._steps:
            fn, args = self._steps.pop()
            try:
                fn(*args)
            except Exception:
                log.exception("undo step %s failed", getattr(fn, "__name__", fn))

    def commit(self) -> None:
        self._steps.clear()

    def __enter__(self) -> Undo:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is not None:
            self.rollback()
        else:
            self.commit()
