"""Enforce the layer rules of docs/architecture.md by parsing every module's imports.

Imports inside ``if TYPE_CHECKING:`` count too: the direction of dependencies is about the
design, not only about what runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "simvuefs"

# cli -> mount -> fs -> {inodes, tree, attrs} -> {cache, reader, upload}
#     -> {client, backend, offline} -> {transport, offline_cache, offline_drafts}
# A module may import modules of its own layer or of any layer below, never above.
LAYERS: dict[str, int] = {
    "__main__": 0,
    "cli": 0,
    "status": 0,
    # the mount(8) helper: maps mount options to CLI flags, execs the CLI
    "mounthelper": 0,
    # the Python API (simvuefs.mounted): runs the CLI in a child process
    "api": 0,
    "mount": 1,
    "registry": 1,
    # live counters of a mount, published for status
    "stats": 1,
    "fs": 2,
    "inodes": 3,
    "tree": 3,
    "attrs": 3,
    "overlay": 3,
    "runinfo": 3,
    "views": 3,
    "cache": 4,
    "reader": 4,
    "upload": 4,
    # the write path, beside upload: local spool files, staged-file states, landing uploads
    "spool": 4,
    "staged": 4,
    "landing": 4,
    "client": 5,
    # the backends' contract, and the offline backend (the official client's offline cache)
    "backend": 5,
    "offline": 5,
    "transport": 6,
    "offline_cache": 6,
    "offline_drafts": 6,
}
LEAVES = {"__init__", "config", "models", "errors", "logs", "readiness"}
"""Usable by every module; they import only each other."""
PACKAGE_REEXPORTS = {"api"}
"""What ``__init__`` may import besides the leaves: the Python API, loaded on first use."""
PYFUSE3_ALLOWED = {"mount", "fs", "attrs"}
HTTPX_ALLOWED = {"transport", "client"}
DEVSERVER = "devserver"
FUSE_ERROR_ALLOWED = {"fs"}
"""Nothing below fs raises pyfuse3.FUSEError; mount does not need it either."""


def module_name(path: Path) -> str:
    """``simvuefs/tree.py`` -> ``tree``; ``simvuefs/devserver/app.py`` -> ``devserver``."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported(tree: ast.AST) -> set[str]:
    """Return what is imported: ``simvuefs.x.y`` -> ``simvuefs.x``, ``httpx.z`` -> ``httpx``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(_simplify(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "simvuefs":
                names.update(f"simvuefs.{alias.name}" for alias in node.names)
            else:
                names.add(_simplify(node.module))
    return names


def _simplify(dotted: str) -> str:
    parts = dotted.split(".")
    return ".".join(parts[:2]) if parts[0] == "simvuefs" else parts[0]


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_every_module_has_a_layer():
    unknown = {
        module_name(p) for p in all_modules() if module_name(p) not in LAYERS.keys() | LEAVES
    } - {DEVSERVER}
    assert not unknown, f"add these modules to LAYERS or LEAVES (and architecture.md): {unknown}"


def violations(name: str, targets: set[str]) -> list[str]:
    """Return what is wrong with module *name* importing *targets* (empty: nothing)."""
    problems = []
    for target in targets:
        if not target.startswith("simvuefs."):
            if target == "pyfuse3" and name not in PYFUSE3_ALLOWED:
                problems.append("imports pyfuse3 (only mount, fs, attrs may)")
            if target == "httpx" and name not in HTTPX_ALLOWED:
                problems.append("imports httpx (only transport and client may)")
            continue
        other = target.removeprefix("simvuefs.")
        if other in ("__version__", name):
            continue
        if other == DEVSERVER:
            if name != "cli":
                problems.append("imports the devserver (only cli may, for its subcommand)")
        elif name == DEVSERVER:
            if other not in LEAVES:
                problems.append(f"devserver imports {other} (only leaf modules allowed)")
        elif name in LEAVES:
            if other not in LEAVES and not (name == "__init__" and other in PACKAGE_REEXPORTS):
                problems.append(f"leaf module imports {other}")
        elif other not in LEAVES:
            if other not in LAYERS:
                problems.append(f"imports unknown module {other}")
            elif LAYERS[other] < LAYERS[name]:
                problems.append(f"imports {other} from a higher layer")
    return sorted(problems)


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    problems = violations(module_name(path), imported(parse(path)))
    assert not problems, f"{path.relative_to(PACKAGE)}: " + "; ".join(problems)


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_fs_uses_fuse_error(path):
    if module_name(path) in FUSE_ERROR_ALLOWED:
        return
    uses = [
        node.lineno
        for node in ast.walk(parse(path))
        if (isinstance(node, ast.Name) and node.id == "FUSEError")
        or (isinstance(node, ast.Attribute) and node.attr == "FUSEError")
    ]
    assert not uses, f"{path.relative_to(PACKAGE)} uses FUSEError at lines {uses}"


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("tree", "from simvuefs.mount import run", "imports mount from a higher layer"),
        ("client", "import simvuefs.reader", "imports reader from a higher layer"),
        ("inodes", "import httpx", "imports httpx (only transport and client may)"),
        ("reader", "from pyfuse3 import FUSEError", "imports pyfuse3 (only mount, fs, attrs may)"),
        ("models", "from simvuefs import client", "leaf module imports client"),
        ("fs", "from simvuefs.devserver import app", "imports the devserver"),
        ("devserver", "from simvuefs.fs import Operations", "devserver imports fs"),
        ("mount", "from simvuefs.newthing import x", "imports unknown module newthing"),
    ],
)
def test_the_checker_reports_violations(name, source, expected):
    problems = violations(name, imported(ast.parse(source)))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_the_checker_accepts_downward_and_leaf_imports():
    source = "from simvuefs.tree import Tree\nfrom simvuefs import errors, config\nimport trio\n"
    assert violations("fs", imported(ast.parse(source))) == []
