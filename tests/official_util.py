"""The OFFICIAL simvue 2.6.2 client, run in subprocesses, for tests that compare against it.

:class:`OfficialClient` runs ``tests/official_client.py`` scenarios (and small scripts) in a
subprocess: the client caches its configuration and server version per process and starts
background threads, so each call gets a fresh process with a private HOME, its offline cache
in a given directory, and no config file. Online it talks to a devserver; without one the
URL points at a closed port and the token is :func:`offline_token` (offline mode makes no
network calls, but the client still insists on a JWT-shaped, unexpired token: protocol 1.1,
1.5).
"""

from __future__ import annotations

import base64
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


def offline_token(lifetime: float = 86400.0) -> str:
    """Return an unsigned JWT with an ``exp`` claim: all the client checks of a token."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': int(time.time() + lifetime)})}."


class OfficialClient:
    """The official client against *server* (a DevServer, or None), run from *workdir*.

    Its offline cache is *offline_dir* (default ``workdir/offline``); *token* replaces the
    server's own (another user's, from ``POST /admin/tokens``).
    """

    def __init__(
        self,
        server: Any,
        workdir: Path,
        offline_dir: Path | None = None,
        token: str | None = None,
    ) -> None:
        self.server = server
        self.workdir = workdir
        self.offline_dir = offline_dir if offline_dir is not None else workdir / "offline"
        self.token = token
        (workdir / "home").mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
        if self.server is not None:
            env.update(self.server.env())
        else:
            env.update(SIMVUE_URL=CLOSED_PORT_URL, SIMVUE_TOKEN=offline_token())
        if self.token is not None:
            env["SIMVUE_TOKEN"] = self.token
        env.update(
            HOME=str(self.workdir / "home"),
            SIMVUE_OFFLINE_DIRECTORY=str(self.offline_dir),
            SIMVUE_DISABLE_ENVIRONMENT_METRICS="1",
            SIMVUE_DISABLE_GIT_METRICS="1",
        )
        return env

    def create_run(self, **spec: Any) -> dict[str, Any]:
        """Create one run with the official client (see official_client.create_run)."""
        [created] = self.call("create_runs", runs=[spec])
        result: dict[str, Any] = created
        return result

    def call(self, scenario: str, expect_failure: bool = False, **args: Any) -> Any:
        """Run *scenario*; return its RESULT (or, with *expect_failure*, its output)."""
        return self._run([str(SCRIPT), scenario, json.dumps(args)], expect_failure)

    def script(self, code: str, *args: str) -> Any:
        """Run the Python *code* (which prints ``RESULT: <json>``) with *args* in sys.argv."""
        return self._run(["-c", code, *args], expect_failure=False)

    def _run(self, argv: list[str], expect_failure: bool) -> Any:
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
        if expect_failure:
            assert completed.returncode != 0, output
            return output
        assert completed.returncode == 0, output
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT: ")]
        assert lines, output
        return json.loads(lines[-1].removeprefix("RESULT: "))


def official_inputs(server: Any, workdir: Path, run_id: str) -> dict[str, str]:
    """{path: sha256} of what the official client downloads from the run's input category."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = OfficialClient(server, workdir).call(
        "download", run_id=run_id, output_dir=str(workdir / "out"), categories=["input"]
    )
    found: dict[str, str] = result["categories"]["input"]
    return found
