"""Security rules that need neither a server nor a mount.

- There is no ``--token`` option: a token is never on a command line.
- No module of simvuefs unpickles, evaluates or executes anything (checked on the source).

The properties that need a mount are ``tests/mount/test_security.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from testbed import REPO
from testbed.processes import run_tool


def test_there_is_no_token_option(tmp_path: Path) -> None:
    """A token on a command line would be visible to every user (ps, /proc)."""
    result = run_tool(
        [sys.executable, "-m", "simvuefs", "mount", tmp_path, "--token", "x.y.z"], check=False
    )
    assert result.returncode == 2
    assert b"unrecognized arguments: --token" in result.stderr


# Names whose use on artifact content would mean executing or unpickling it.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRIBUTES = {("os", "system"), ("os", "popen"), ("yaml", "load"), ("numpy", "load")}


def test_no_module_unpickles_evaluates_or_executes_anything() -> None:
    problems = []
    for path in sorted((REPO / "simvuefs").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            problems += [f"{where}:{node.lineno} imports {n}" for n in names & FORBIDDEN_MODULES]
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                problems.append(f"{where}:{node.lineno} calls {func.id}")
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in FORBIDDEN_ATTRIBUTES
            ):
                problems.append(f"{where}:{node.lineno} calls {func.value.id}.{func.attr}")
            if any(k.arg == "shell" for k in node.keywords):
                problems.append(f"{where}:{node.lineno} runs a shell")
    assert problems == []
