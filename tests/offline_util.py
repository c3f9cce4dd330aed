"""The official client in offline mode, for tests of simvuefs's offline mount.

:class:`OfflineOfficial` runs ``tests/official_client.py`` scenarios (and small scripts) in
a subprocess whose offline cache is a given directory, with a private HOME and no config
file. Offline mode makes no network calls, but the client still insists on a JWT-shaped,
unexpired token (protocol 1.1, 1.5): :func:`offline_token` mints one, and the URL points at
a closed port unless a devserver is given (the sender needs one).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("official_client.py")
SCENARIO_TIMEOUT = 120
CLOSED_PORT_URL = "http://127.0.0.1:9"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def offline_token(lifetime: float = 86400.0) -> str:
    """Return an unsigned JWT with an ``exp`` claim: all the client checks of a token."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': int(time.time() + lifetime)})}."


def snapshot_of(root: Path) -> dict[str, bytes]:
    """Return {relative path: bytes} of every file under *root*."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class OfflineOfficial:
    """The official client with its offline cache at *cache*, run from *workdir*."""

    def __init__(self, workdir: Path, cache: Path, server: Any = None) -> None:
        self.workdir = workdir
        self.cache = cache
        self.server = server
        (workdir / "home").mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
        if self.server is not None:
            env.update(self.server.env())
        else:
            env.update(SIMVUE_URL=CLOSED_PORT_URL, SIMVUE_TOKEN=offline_token())
        env.update(
            HOME=str(self.workdir / "home"),
            SIMVUE_OFFLINE_DIRECTORY=str(self.cache),
            SIMVUE_DISABLE_ENVIRONMENT_METRICS="1",
            SIMVUE_DISABLE_GIT_METRICS="1",
        )
        return env

    def create_run(self, **spec: Any) -> dict[str, Any]:
        """``Run(mode="offline")`` with files and objects (official_client.create_run)."""
        [created] = self.call("create_runs", runs=[{"mode": "offline", **spec}])
        result: dict[str, Any] = created
        return result

    def call(self, scenario: str, **args: Any) -> Any:
        """Run an official_client.py *scenario*; return its RESULT."""
        return self._result([str(SCRIPT), scenario, json.dumps(args)])

    def script(self, code: str, *args: str) -> Any:
        """Run the Python *code* (which prints ``RESULT: <json>``) with *args* in sys.argv."""
        return self._result(["-c", code, *args])

    def _result(self, argv: list[str]) -> Any:
        completed = subprocess.run(
            [sys.executable, *argv],
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=SCENARIO_TIMEOUT,
            check=False,
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT: ")]
        assert lines, output
        return json.loads(lines[-1].removeprefix("RESULT: "))


# The files and objects of the official offline run most tests look at:
# (local file, category, explicit name or None, name in the run).
FILES = {
    "in.txt": b"input parameters\nalpha = 1\n",
    "case/mesh.dat": b"mesh " * 1000,
    "big.bin": os.urandom(3 * 1024 * 1024 + 17),
    "empty.log": b"",
    "src/solver.py": b"print('solving')\n",
}
SAVED = [
    ("in.txt", "input", None, "in.txt"),
    ("case/mesh.dat", "input", "system/mesh.dat", "system/mesh.dat"),
    ("big.bin", "output", "data/big.bin", "data/big.bin"),
    ("empty.log", "output", None, "empty.log"),
    ("src/solver.py", "code", "src/solver.py", "src/solver.py"),
]
OBJECT = ({"converged": True, "n": 3}, "output", "summary")
RUN_NAME = "offline run"
RUN_FOLDER = "/offline/case"


def make_official_run(workdir: Path, cache: Path) -> dict[str, Any]:
    """Write FILES under *workdir* and save them (and OBJECT) in an offline run in *cache*."""
    for name, content in FILES.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return OfflineOfficial(workdir, cache).create_run(
        name=RUN_NAME,
        folder=RUN_FOLDER,
        files=[[local, category, name] for local, category, name, _ in SAVED],
        objects=[list(OBJECT)],
    )


def expected_by_category() -> dict[str, dict[str, bytes]]:
    """{category: {artifact name: content}} of the files of the official run."""
    found: dict[str, dict[str, bytes]] = {"input": {}, "output": {}, "code": {}}
    for local, category, _, name in SAVED:
        found[category][name] = FILES[local]
    return found
