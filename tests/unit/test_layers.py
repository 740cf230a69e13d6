"""The layers of docs/architecture.md, checked on the import graph of src/nsnet.

Imports must point down: the API never reaches the kernel or the runtime (it goes through the
engine), the CLI and the client only know each other and the pure modules, nothing below the
engine knows the engine, and `model`/`errors` import nothing of ours. Each third-party library
with a layer of its own (netlink, HTTP, the command line, DNS parsing) is used only there.

ruff's banned-api cannot say this (one rule code for every ban, lifted per file as a whole),
so the rules are a table here, read from the AST: imports inside functions and under
TYPE_CHECKING count too, since a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "nsnet"

UPPER = ("nsnet.engine", "nsnet.api", "nsnet.cli", "nsnet.client", "nsnet.daemon")
NOT_FROM_SRC = ("nsnet.testing",)

# (modules the rule applies to, what they must not import, why)
RULES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "nsnet.api",
        ("nsnet.kernel", "nsnet.runtime", "nsnet.cli", "nsnet.client", "nsnet.daemon"),
        "the API translates HTTP to the engine's Backend; it never reaches below the engine",
    ),
    (
        "nsnet.cli",
        (
            "nsnet.kernel",
            "nsnet.runtime",
            "nsnet.engine",
            "nsnet.api",
            "nsnet.drivers",
            "nsnet.store",
            "nsnet.ipam",
            "nsnet.dns",
            "nsnet.daemon",
        ),
        "the CLI only calls the client (it may run on another machine than the daemon)",
    ),
    (
        "nsnet.client",
        (
            "nsnet.kernel",
            "nsnet.runtime",
            "nsnet.engine",
            "nsnet.api",
            "nsnet.drivers",
            "nsnet.store",
            "nsnet.ipam",
            "nsnet.dns",
            "nsnet.daemon",
            "nsnet.cli",
        ),
        "the client speaks HTTP over the socket and nothing else",
    ),
    (
        "nsnet.engine",
        ("nsnet.api", "nsnet.cli", "nsnet.client", "nsnet.daemon"),
        "the engine knows nothing of HTTP or of its callers",
    ),
    ("nsnet.model", ("nsnet",), "model is pure: imported by everyone, imports nothing of ours"),
    ("nsnet.errors", ("nsnet",), "errors is pure: imported by everyone, imports nothing of ours"),
]
BELOW_ENGINE_WHY = "layers below the engine must not import it or anything above it"

# third-party module → the nsnet packages that may import it
LIBRARIES: dict[str, tuple[str, ...]] = {
    "pyroute2": ("nsnet.kernel",),
    # store.etcd_http: the etcd client speaks etcd's JSON gateway (docs/design-notes.md)
    "aiohttp": ("nsnet.api", "nsnet.daemon", "nsnet.store.etcd_http"),
    "click": ("nsnet.cli", "nsnet.testing"),
    "dns": ("nsnet.dns",),
}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) for every import in `tree`; `from a import b` yields `a` and `a.b`
    (b may be a submodule), and relative imports are resolved against `module`."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def banned_for(module: str) -> list[tuple[tuple[str, ...], str]]:
    rules = [(banned, why) for prefix, banned, why in RULES if within(module, prefix)]
    if not any(within(module, p) for p in (*UPPER, *NOT_FROM_SRC)):
        rules.append(((*UPPER, *NOT_FROM_SRC), BELOW_ENGINE_WHY))
    return rules


def violations(path: Path, src: Path = SRC) -> list[str]:
    """One line per forbidden import in the module at `path` (under `src`)."""
    module = module_name(path, src)
    where = path.relative_to(src)
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for line, name in imported_names(tree, module, path.name == "__init__.py"):
        if within(name, module):
            continue  # a module's own submodules (and `nsnet.model` itself) are fine
        for banned, why in banned_for(module):
            if any(within(name, b) for b in banned):
                found.append(f"{where}:{line}: imports {name}: {why}")
        top = name.split(".")[0]
        allowed = LIBRARIES.get(top)
        if allowed is not None and not any(within(module, a) for a in allowed):
            found.append(f"{where}:{line}: imports {top}, which belongs to {' and '.join(allowed)}")
    return found


def test_imports_point_down() -> None:
    found = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert not found, "layer violations (docs/architecture.md):\n" + "\n".join(sorted(set(found)))


def _check_source(tmp: Path, relative: str, source: str) -> list[str]:
    """violations() on a made-up module, as if it were src/<relative>."""
    path = tmp / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return violations(path, tmp)


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("nsnet/api/x.py", "from nsnet.kernel.host import HostKernel\n"),
        ("nsnet/api/x.py", "def f():\n    import nsnet.runtime.runc\n"),
        ("nsnet/api/x.py", "from nsnet import runtime\n"),
        ("nsnet/cli/x.py", "from ..engine import core\n"),
        (
            "nsnet/drivers/x.py",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from nsnet.engine.networks import Network\n",
        ),
        ("nsnet/kernel/x.py", "from nsnet.testing.fake_kernel import FakeKernel\n"),
        ("nsnet/model.py", "from nsnet.errors import Invalid\n"),
        ("nsnet/engine/x.py", "import pyroute2\n"),
        ("nsnet/client/x.py", "from aiohttp import web\n"),
    ],
)
def test_checker_catches(tmp_path: Path, relative: str, source: str) -> None:
    assert _check_source(tmp_path, relative, source)


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("nsnet/api/x.py", "from nsnet.engine.core import Engine\nfrom nsnet import errors\n"),
        ("nsnet/cli/x.py", "from nsnet.client import Client\nfrom . import base\n"),
        ("nsnet/kernel/x.py", "from nsnet.model import Network\nimport pyroute2\n"),
        ("nsnet/engine/x.py", "from nsnet.kernel.host import HostKernel\n"),
        ("nsnet/model/__init__.py", "from nsnet.model.base import Network\n"),
    ],
)
def test_checker_allows(tmp_path: Path, relative: str, source: str) -> None:
    assert _check_source(tmp_path, relative, source) == []
