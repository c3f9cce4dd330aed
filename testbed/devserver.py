"""A real ``simvuefs devserver`` subprocess, and its admin API over HTTP.

:class:`DevServer` starts ``python -m simvuefs devserver --port 0 --write-config FILE`` in a
work directory, reads the URL from its listening line and the token from the written
``simvue.toml``, and offers the admin routes (faults, counters)::

    server = DevServer(workdir, ["--seed", "demo"]).start()
    server.url          # "http://127.0.0.1:PORT" (what simvue.toml's [server] url holds;
                        # https:// with --tls-cert)
    server.api_url      # server.url + "/api" (simvuefs Settings.url)
    server.token        # a valid bearer token
    server.config_path  # the simvue.toml written by --write-config
    server.data_dir     # DIR/simvue.db, DIR/blobs/, DIR/secret
    server.env()        # {"SIMVUE_URL": ..., "SIMVUE_TOKEN": ...} for the official client
    server.set_faults(api_error_status=503, api_error_count=2)
    server.stats()["bytes_served"]
    server.api("GET", "/runs").json()   # authenticated request to /api/...
    server.stop()

An HTTPS server (``--tls-cert``, certificates from :mod:`testbed.certs`) is started with
``ca_file=`` (the CA that signed its certificate: the admin client trusts it, and
:meth:`DevServer.env` hands it to the official client) and, when it requires client
certificates (``--tls-client-ca``), ``client_cert=`` for the admin client. With
``--redirect-port``, ``server.redirect_url`` is the redirecting front's URL.

The server's stderr goes to ``<workdir>/devserver.log``. Invariant: a started server is
stopped by :meth:`DevServer.stop` - SIGTERM, a wait, then SIGKILL and a DevServerError - so
a server that does not stop cleanly is a failure, never a process left behind; a server
that does not start is stopped before DevServerError is raised.
"""

from __future__ import annotations

import os
import select
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

LISTENING_PREFIX = "simvuefs devserver listening on "
REDIRECT_PREFIX = "simvuefs devserver redirecting from "
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class DevServerError(AssertionError):
    """The devserver did not start or stop as it should."""


def devserver_command(data_dir: Path, config_path: Path, *extra: str) -> list[str]:
    """Return the command line that starts a devserver on a free port."""
    return [
        sys.executable,
        "-m",
        "simvuefs",
        "devserver",
        "--data",
        str(data_dir),
        "--port",
        "0",
        "--write-config",
        str(config_path),
        *extra,
    ]


def read_token(config_path: Path) -> str:
    """Return the token from a simvue.toml written by ``--write-config``."""
    with config_path.open("rb") as file:
        token: str = tomllib.load(file)["server"]["token"]
    return token


class DevServer:
    """A running devserver subprocess (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        extra_args: Sequence[str] = (),
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        *,
        ca_file: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
    ) -> None:
        """Prepare a server in *workdir* on *data_dir* (default ``workdir/data``), started
        with *extra_args* and environment *env* (default: this process's). *ca_file* and
        *client_cert* (certificate, key) are for HTTPS servers (module docstring)."""
        self.workdir = workdir
        self.data_dir = data_dir or workdir / "data"
        self.config_path = workdir / "simvue.toml"
        self.log_path = workdir / "devserver.log"
        self.extra_args = list(extra_args)
        self.environment = env
        self.ca_file = ca_file
        self.client_cert = client_cert
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.redirect_url = ""
        self.token = ""
        self.startup_seconds = 0.0
        self._http: httpx.Client | None = None

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def start(self, timeout: float = START_TIMEOUT) -> DevServer:
        """Start the process and wait for its listening line."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                devserver_command(self.data_dir, self.config_path, *self.extra_args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.environment,
            )
        lines = self._read_lines(timeout)
        if not lines[-1].startswith(LISTENING_PREFIX) or any(
            not line.startswith(REDIRECT_PREFIX) for line in lines[:-1]
        ):
            self.stop()
            raise DevServerError(f"unexpected devserver output {lines!r}; log: {self.log()}")
        self.startup_seconds = time.monotonic() - began
        self.url = lines[-1].removeprefix(LISTENING_PREFIX)
        self.redirect_url = "".join(line.removeprefix(REDIRECT_PREFIX) for line in lines[:-1])
        self.token = read_token(self.config_path)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            verify=self._ssl_context(),
        )
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        """What the admin client trusts: *ca_file* (else the system's), with *client_cert*."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert is not None:
            context.load_cert_chain(*self.client_cert)
        return context

    def _read_lines(self, timeout: float) -> list[str]:
        """The server's stdout up to its listening line (or the first line that is neither
        that nor a redirect line)."""
        assert self.process is not None
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n") or data.decode().splitlines()[-1].startswith(
            REDIRECT_PREFIX
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise DevServerError(f"devserver did not start in {timeout} s; log: {self.log()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                piece = os.read(fd, 4096)
                if not piece:
                    code = self.process.wait()
                    raise DevServerError(f"devserver exited with {code}; log: {self.log()}")
                data += piece
        return data.decode().splitlines()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Stop the process with *sig*; kill it and raise DevServerError if it lingers."""
        if self._http is not None:
            self._http.close()
            self._http = None
        process, self.process = self.process, None
        if process is None:
            return 0
        try:
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    return process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    raise DevServerError(
                        f"devserver ignored signal {sig} for {timeout} s and was killed"
                    ) from None
            return process.returncode
        finally:
            if process.stdout is not None:
                process.stdout.close()

    def restart(self) -> DevServer:
        """Stop, then start again on the same data directory (a new port and token)."""
        self.stop()
        return self.start()

    def log(self) -> str:
        """Return what the server wrote to stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- HTTP helpers ---------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """An httpx client with the base URL and the bearer token set."""
        if self._http is None:
            raise DevServerError("devserver is not running")
        return self._http

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send an authenticated request to ``/api{path}``."""
        return self.http.request(method, "/api" + path, **kwargs)

    def env(self) -> dict[str, str]:
        """Environment variables that point the official client at this server (and, for
        an HTTPS server, make it trust *ca_file* for the API and storage)."""
        variables = {"SIMVUE_URL": self.url, "SIMVUE_TOKEN": self.token}
        if self.ca_file is not None:
            variables["SIMVUE_SERVER_CA_CERTIFICATE"] = str(self.ca_file)
            variables["SIMVUE_STORAGE_CA_CERTIFICATE"] = str(self.ca_file)
        return variables

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/admin/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset_stats(self) -> None:
        self.http.post("/admin/stats/reset").raise_for_status()

    def faults(self) -> dict[str, Any]:
        response = self.http.get("/admin/faults")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_faults(self, **switches: Any) -> dict[str, Any]:
        response = self.http.put("/admin/faults", json=switches)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def clear_faults(self) -> None:
        self.http.delete("/admin/faults").raise_for_status()

    # -- lookups used by many tests ---------------------------------------------------------

    def run_ids(self, name: str) -> list[str]:
        """Return the ids of the runs called *name* (oldest first)."""
        oldest_first = '[{"id": "created", "desc": false}]'  # --realistic: newest unless asked
        response = self.api(
            "GET", "/runs", params={"filters": f'["name == {name}"]', "sorting": oldest_first}
        )
        response.raise_for_status()
        return [run["id"] for run in response.json()["data"]]

    def run_artifacts(self, run_id: str, **params: str) -> list[dict[str, Any]]:
        """Return ``GET /api/runs/{run_id}/artifacts`` (with optional category/name)."""
        response = self.api("GET", f"/runs/{run_id}/artifacts", params=params)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result
