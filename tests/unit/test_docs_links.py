"""Docs and docstrings point at things that exist, inside the repository.

Stale references crept in before: the README sent readers to `../shared/DESIGN.md`, a file
outside the repository, and `errors.py` named `nsnet.api.errors`, a module that never existed.
Three kinds of reference are checked: Markdown links and backticked file paths in README.md,
CHANGELOG.md and docs/*.md (resolved from the document, the repository root or src/nsnet, and
never outside the repository), and dotted `nsnet.<package>.<module>` names anywhere in those
documents and in src/ (each package and module along the name must exist; what follows the
module is an attribute and not checked).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`([\w./-]+/[\w.-]+\.(?:md|py|yaml|toml|txt|json))`")
# `nsnet.x.y` not preceded by a word character or a dot (`com.nsnet.macvlan...` is an option).
DOTTED = re.compile(r"(?<![\w.])nsnet((?:\.[a-z_][a-z0-9_]*)+)")
# Files named nsnet.<ext>, not modules.
FILE_NAMES = {"db", "sock", "db-wal", "db-shm"}


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def dangling_paths(text: str, doc_dir: Path, root: Path) -> Iterator[str]:
    """Links and backticked paths in `text` that name no file inside `root`."""
    targets = [m.group(1) for m in LINK.finditer(text)]
    targets += [m.group(1) for m in CODE_PATH.finditer(text)]
    for target in targets:
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        path = target.split("#", 1)[0]
        if "*" in path:
            continue
        bases = [doc_dir, root, root / "src" / "nsnet"]
        if not any((b / path).exists() and _inside(b / path, root) for b in bases):
            yield target


def dangling_modules(text: str, src: Path) -> Iterator[str]:
    """`nsnet.a.b` names in `text` whose packages or module do not exist under `src`."""
    for m in DOTTED.finditer(text):
        segments = m.group(1)[1:].split(".")
        if segments[0] in FILE_NAMES:
            continue
        here = src / "nsnet"
        for segment in segments:
            if (here / segment).is_dir():
                here = here / segment
                continue
            if not (here / f"{segment}.py").is_file() and segment not in _bound_in(here):
                yield "nsnet." + ".".join(segments)
            break  # a module (or a name its package binds): the rest are attributes


def _bound_in(package: Path) -> set[str]:
    """Names a package's __init__ binds (`nsnet.client.Client` is as good as a module)."""
    init = package / "__init__.py"
    if not init.is_file():
        return set()
    names: set[str] = {"__version__", "__file__", "__name__"}
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_paths_exist(doc: Path) -> None:
    missing = sorted(set(dangling_paths(doc.read_text(), doc.parent, ROOT)))
    assert not missing, f"{doc.relative_to(ROOT)} points at missing files: {missing}"


def test_dotted_names_exist() -> None:
    found = []
    for path in [*DOCS, *sorted((ROOT / "src").rglob("*.py"))]:
        for name in sorted(set(dangling_modules(path.read_text(), ROOT / "src"))):
            found.append(f"{path.relative_to(ROOT)}: {name}")
    assert not found, "references to modules that do not exist:\n" + "\n".join(found)


def test_a_link_out_of_the_repository_is_dangling(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "DESIGN.md").write_text("# design\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    text = "The design is in `../shared/DESIGN.md`; see [it](../shared/DESIGN.md)."
    assert list(dangling_paths(text, repo, repo)) == ["../shared/DESIGN.md"] * 2


def test_a_missing_module_is_dangling(tmp_path: Path) -> None:
    api = tmp_path / "nsnet" / "api"
    api.mkdir(parents=True)
    (tmp_path / "nsnet" / "__init__.py").write_text("")
    (api / "__init__.py").write_text("")
    (api / "app.py").write_text("")
    text = "maps each kind (see ``nsnet.api.errors``), dispatch in nsnet.api.app.Api"
    assert list(dangling_modules(text, tmp_path)) == ["nsnet.api.errors"]
    assert list(dangling_modules("a file: nsnet.db, an option com.nsnet.x", tmp_path)) == []
