"""Enforce the package rules of docs/architecture.md by parsing every module's imports.

Imports inside functions and under ``if TYPE_CHECKING:`` count too: the direction of
dependencies is about the design, not only about what runs. Also parsed: no module reads or
writes another object's underscore attributes (``x._name`` with ``x`` not ``self``/``cls``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "simvuefs"

# A unit is a subpackage (``fuse``, ``read``, ...) or a top-level module (``cli``, ``config``).
# It may import units of a lower rank, and units of its own rank only within its own
# package: ``read`` and ``write`` know nothing of each other.
RANKS: dict[str, int] = {
    # entry points: the CLI, the Python API (simvuefs.mounted), python -m simvuefs
    "__main__": 0,
    "cli": 0,
    "api": 0,
    # the mount daemon: FUSE surface, tree, lifecycle
    "fuse": 1,
    # host-side commands and the records they share with the daemon
    "control": 2,
    "read": 3,
    "write": 3,
    # the content cache on disk, around the backend's RangeSource
    "diskcache": 4,
    # a Simvue server over HTTP, or the official client's offline cache
    "backends": 5,
    # leaves, usable by every unit; they import only each other
    "__init__": 6,
    "config": 6,
    "models": 6,
    "errors": 6,
    "logs": 6,
    "localio": 6,
    "aligned": 6,
    "inthread": 6,
}
TOP_LEVEL = {"__main__", "cli", "api"}
"""Entry points may import each other (api reuses the CLI's defaults)."""
LEAVES = {unit for unit, rank in RANKS.items() if rank == 6}
PACKAGE_REEXPORTS = {"api"}
"""What ``__init__`` may import besides the leaves: the Python API, loaded on first use."""
PYFUSE3_ALLOWED = {"fuse"}
HTTPX_ALLOWED = {"backends"}
HTTP_LIBRARIES = ("httpx", "httpcore", "h11")
"""Imported only in :data:`HTTPX_ALLOWED` (httpcore is httpx's transport underneath; h11,
httpcore's HTTP/1.1, also serves backends/storagepool.py)."""
DEVSERVER = "devserver"
DEVSERVER_USERS = {"cli"}
"""Only the CLI starts the devserver (its subcommand); the devserver imports only leaves."""
FUSE_ERROR_ALLOWED = {"simvuefs.fuse.fs"}
"""Nothing below fs raises pyfuse3.FUSEError; fs maps errors once."""


def unit_of(module: str) -> str:
    """``simvuefs.fuse.tree`` -> ``fuse``; ``simvuefs.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_of(path: Path) -> str:
    """``simvuefs/fuse/tree.py`` -> ``simvuefs.fuse.tree``; ``__init__.py`` -> its package."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST) -> set[str]:
    """Return the modules imported (``from simvuefs.read import reader``: ``simvuefs.read.reader``).

    ``from simvuefs import x`` names the module ``simvuefs.x``; other packages are reduced to
    their top-level name (``httpx._models`` -> ``httpx``).
    """
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(_simplify(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module.startswith("simvuefs"):
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                names.add(_simplify(node.module))
    return names


def _simplify(dotted: str) -> str:
    return dotted if dotted.startswith("simvuefs") else dotted.split(".")[0]


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def known_modules() -> set[str]:
    return {module_of(p) for p in all_modules()}


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def violations(module: str, targets: set[str], known: set[str]) -> list[str]:
    """Return what is wrong with *module* importing *targets* (empty: nothing)."""
    unit = unit_of(module)
    problems = []
    for target in sorted(targets):
        if not target.startswith("simvuefs"):
            if target == "pyfuse3" and unit not in PYFUSE3_ALLOWED:
                problems.append("imports pyfuse3 (only simvuefs.fuse may)")
            if target in HTTP_LIBRARIES and unit not in HTTPX_ALLOWED:
                problems.append(f"imports {target} (only simvuefs.backends may)")
            continue
        if target not in known:
            continue  # a name imported from a module (from simvuefs.x import Name)
        other = unit_of(target)
        if other in ("__version__", unit) or target == "simvuefs":
            continue
        if other == DEVSERVER or unit == DEVSERVER:
            if unit not in DEVSERVER_USERS and not (unit == DEVSERVER and other in LEAVES):
                problems.append(f"{unit} imports {other} (devserver: only the CLI, only leaves)")
            continue
        if other not in RANKS:
            problems.append(f"imports unknown unit {other} (give it a rank)")
        elif unit == "__init__" and other in PACKAGE_REEXPORTS:
            continue
        elif RANKS[other] < RANKS[unit]:
            problems.append(f"imports {other} from a higher layer")
        elif RANKS[other] == RANKS[unit] and not {unit, other} <= TOP_LEVEL | LEAVES:
            problems.append(f"imports {other}, a sibling of the same layer")
    return sorted(set(problems))


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; the package's own ``__init__`` counts for nothing,
    since its one import (the Python API) happens on first use, not at import."""
    known = known_modules() - {"simvuefs"}
    return {
        module_of(p): {t for t in imported(parse(p)) if t in known and t != module_of(p)}
        for p in all_modules()
        if module_of(p) != "simvuefs"
    }


def test_every_unit_has_a_rank():
    units = {unit_of(m) for m in known_modules()} - {DEVSERVER}
    assert units <= RANKS.keys(), f"add to RANKS (and architecture.md): {units - RANKS.keys()}"


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    problems = violations(module_of(path), imported(parse(path)), known_modules())
    assert not problems, f"{path.relative_to(PACKAGE)}: " + "; ".join(problems)


def test_no_import_cycles():
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            cycle = stack[stack.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            # a package's __init__ is imported by its own modules' import machinery
            if module.startswith(target + "."):
                continue
            visit(target, [*stack, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_fs_uses_fuse_error(path):
    if module_of(path) in FUSE_ERROR_ALLOWED:
        return
    uses = [
        node.lineno
        for node in ast.walk(parse(path))
        if (isinstance(node, ast.Name) and node.id == "FUSEError")
        or (isinstance(node, ast.Attribute) and node.attr == "FUSEError")
    ]
    assert not uses, f"{path.relative_to(PACKAGE)} uses FUSEError at lines {uses}"


KNOWN = {
    "simvuefs.fuse.tree",
    "simvuefs.fuse.mount",
    "simvuefs.read.reader",
    "simvuefs.write.upload",
    "simvuefs.backends.client",
    "simvuefs.control.status",
    "simvuefs.models",
    "simvuefs.config",
    "simvuefs.errors",
    "simvuefs.devserver.app",
    "simvuefs.fuse.fs",
}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("simvuefs.fuse.tree", "from simvuefs.fuse.mount import run", None),
        ("simvuefs.backends.client", "import simvuefs.read.reader", "imports read from a higher"),
        ("simvuefs.read.reader", "from simvuefs.write import upload", "imports write, a sibling"),
        ("simvuefs.fuse.inodes", "import httpx", "imports httpx (only simvuefs.backends may)"),
        ("simvuefs.read.reader", "import httpcore", "imports httpcore (only simvuefs.backends"),
        ("simvuefs.control.status", "from httpcore import X", "imports httpcore (only simvue"),
        ("simvuefs.read.reader", "from pyfuse3 import FUSEError", "imports pyfuse3"),
        ("simvuefs.control.status", "import pyfuse3", "imports pyfuse3"),
        ("simvuefs.control.status", "from simvuefs.fuse import mount", "imports fuse from a hig"),
        ("simvuefs.models", "from simvuefs.backends import client", "imports backends from a"),
        ("simvuefs.fuse.fs", "from simvuefs.devserver import app", "fuse imports devserver"),
        ("simvuefs.devserver.app", "from simvuefs.fuse.fs import Operations", "devserver imp"),
    ],
)
def test_the_checker_reports_violations(module, source, expected):
    problems = violations(module, imported(ast.parse(source)), KNOWN)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        assert problems[0].startswith(expected)


def test_the_checker_accepts_downward_and_leaf_imports():
    source = (
        "from simvuefs.fuse.tree import Tree\nfrom simvuefs.read import reader\n"
        "from simvuefs import errors, config\nimport trio\n"
    )
    assert violations("simvuefs.fuse.fs", imported(ast.parse(source)), KNOWN) == []


# -- underscore attributes --------------------------------------------------------------------

PRIVATE_ACCESS_ALLOWED: dict[tuple[str, str], str] = {}
"""(module, expression) pairs the rule lets through, each with its reason."""
OWNERS = {"self", "cls"}


def private_accesses(tree: ast.AST) -> list[tuple[int, str]]:
    """Return (line, expression) of each ``x._name`` (not a dunder) whose ``x`` is not
    ``self``, ``cls`` or ``super()``, nor a standard-library module (``os._exit``,
    ``sys._getframe``, ``hashlib._Hash`` in annotations)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") and node.attr.endswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and (
            owner.id in OWNERS or owner.id in sys.stdlib_module_names
        ):
            continue
        if (
            isinstance(owner, ast.Call)
            and isinstance(owner.func, ast.Name)
            and owner.func.id == "super"
        ):
            continue
        found.append((node.lineno, ast.unparse(node)))
    return found


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_underscore_attributes_of_others(path):
    module = module_of(path)
    uses = [
        f"line {line}: {text}"
        for line, text in private_accesses(parse(path))
        if (module, text) not in PRIVATE_ACCESS_ALLOWED
    ]
    assert not uses, f"{path.relative_to(PACKAGE)} reaches into another object: " + "; ".join(uses)


def test_every_allowed_private_access_still_exists():
    present = {
        (module_of(p), text) for p in all_modules() for _, text in private_accesses(parse(p))
    }
    assert PRIVATE_ACCESS_ALLOWED.keys() <= present, "stale: remove from PRIVATE_ACCESS_ALLOWED"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("self._x = 1\ncls._y\nsuper()._z()\nx.__class__\nos._exit(1)\nsys._getframe()", []),
        ("def f(a: hashlib._Hash) -> None: ...", []),
        ("other._state = 1", [(1, "other._state")]),
        ("self.tree._nodes.clear()", [(1, "self.tree._nodes")]),
        ("f()._cache", [(1, "f()._cache")]),
    ],
)
def test_the_checker_reports_underscore_attributes(source, expected):
    assert private_accesses(ast.parse(source)) == expected
