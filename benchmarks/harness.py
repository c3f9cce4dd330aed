"""The child processes of a benchmark run: nginx, the devserver and the FUSE contenders.

The devserver and the mounts come from the shared harness (:mod:`testbed.devserver`,
:mod:`testbed.mounts`); this module adds what only the benchmark needs: nginx serving the
blobs, the contenders' command lines (simvuefs, rclone, httpdirfs), one work directory, and
their CPU and memory figures.

Every process and mount is registered on the :class:`Harness`'s ExitStack when it starts,
so :meth:`Harness.close` (called from a ``finally``, also after Ctrl-C or SIGTERM) stops
and unmounts everything, lazily if it must, and removes the work directory only when
nothing is mounted below it any more.

Signed URL queries never leave this module: the devserver hands download URLs to the mount
itself, and the benchmark reads blobs through nginx's plain ``/blobs/<sha256>`` path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import tools
from benchmarks.profile import Profile
from testbed.devserver import DevServer, DevServerError
from testbed.mounts import (
    Mount,
    MountFailed,
    mount_command,
    mounts_below,
    start_foreground,
    tear_down,
    unmount,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_FORMAT = '$msec $uri $status $body_bytes_sent "$http_range"'
"""nginx access log line: ``$uri`` has no query string, so signed URLs are never logged."""
FAILURE_LOG_CHARS = 800
"""How much of a contender's log a failure message quotes."""


class ContenderFailed(Exception):
    """A contender failed (did not mount, crashed, returned wrong bytes)."""


def redact(text: str) -> str:
    """Return *text* with every URL query removed (signed URLs carry their signature there)."""
    return re.sub(r"\?[^\s\"'<>]*", "?<query removed>", text)


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process *pid* has used (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss(pid: int) -> int:
    """Return process *pid*'s peak resident set size (VmHWM) in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Terminate *process* (if still running), kill it after *timeout*, reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@dataclass(frozen=True)
class LogEntry:
    """One nginx access log line."""

    uri: str
    status: int
    body_bytes: int
    range: str


@dataclass
class Nginx:
    """nginx serving *blob_dir* at ``/blobs/`` on 127.0.0.1:``port``."""

    port: int
    log_path: Path

    @property
    def blobs_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/blobs"

    def url(self, sha256: str) -> str:
        return f"{self.blobs_url}/{sha256}"

    def log_mark(self) -> int:
        """Return the current end of the access log (to read what comes after it)."""
        return self.log_path.stat().st_size

    def entries_since(
        self, mark: int, settle: float = 0.3, timeout: float = 10.0
    ) -> list[LogEntry]:
        """Return the log entries written after *mark*, once the log has not grown for
        *settle* seconds (nginx logs a request when its connection finishes it)."""
        deadline = time.monotonic() + timeout
        size = -1
        while (current := self.log_mark()) != size and time.monotonic() < deadline:
            size = current
            time.sleep(settle)
        with self.log_path.open("rb") as file:
            file.seek(mark)
            lines = file.read().decode(errors="replace").splitlines()
        entries = []
        for line in lines:
            parts = line.split(" ", 4)
            if len(parts) == 5:
                entries.append(
                    LogEntry(parts[1], int(parts[2]), int(parts[3]), parts[4].strip('"'))
                )
        return entries

    def bytes_sent(self, mark: int, sha256: str) -> tuple[int, int]:
        """Return (requests, body bytes sent) for blob *sha256* since *mark*."""
        entries = [e for e in self.entries_since(mark) if e.uri.endswith("/" + sha256)]
        return len(entries), sum(e.body_bytes for e in entries)


MOUNT_KINDS = ("simvuefs", "rclone", "rclone full", "rclone new", "httpdirfs", "httpdirfs cache")
"""The FUSE contenders: simvuefs, Debian's rclone mount (default and --vfs-cache-mode full),
the current rclone with concurrent chunk streams (:data:`NEW_RCLONE_OPTIONS`), httpdirfs
(without and with --cache)."""
FIELD_KINDS = MOUNT_KINDS[:4]
"""The field profile leaves httpdirfs out: it makes one ranged GET per 128 KiB FUSE read
(each would pay a round trip), so it would only show the round trip again, slowly."""
NEW_RCLONE_OPTIONS = ("--vfs-read-chunk-streams", "16", "--vfs-read-chunk-size", "4M")
"""The current rclone's best setting for this benchmark (docs/benchmarks.md: the values
tried, in the field profile, once)."""


def mount_kinds(profile: Profile) -> tuple[str, ...]:
    """The FUSE contenders of a run in *profile*."""
    return FIELD_KINDS if profile.field else MOUNT_KINDS


@dataclass(frozen=True)
class Mounted:
    """A FUSE contender mounted at *root*, served by process *pid*."""

    kind: str
    root: Path
    pid: int

    def path(self, run: str, category: str, name: str, sha256: str) -> Path:
        """Where an artifact is: by run/category/name on simvuefs, by blob name otherwise."""
        if self.kind == "simvuefs":
            return self.root / "runs" / run / category / name
        return self.root / sha256

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss(self) -> int:
        return peak_rss(self.pid)


class Harness:
    """Owns the work directory and every child process (see the module docstring)."""

    def __init__(self, simvuefs_args: list[str]) -> None:
        self.simvuefs_args = simvuefs_args
        """Extra options for every ``simvuefs mount`` (e.g. ``--cache-size 128MiB``)."""
        self.workdir = Path(tempfile.mkdtemp(prefix="simvuefs-bench."))
        self.stack = contextlib.ExitStack()
        self.nginx: Nginx | None = None
        self.devserver: DevServer | None = None
        self._mounts = 0
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
        self._path_dir = tools.fusermount_path_dir(self.workdir / "bin")

    def close(self) -> None:
        """Stop everything, unmount everything, remove the work directory."""
        try:
            self.stack.close()
        finally:
            for point in reversed(mounts_below(self.workdir)):
                unmount(point)
            if mounts_below(self.workdir):
                print(f"still mounted below {self.workdir}; left in place", file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- servers -----------------------------------------------------------------------------

    def start_nginx(self, blob_dir: Path, profile: Profile) -> Nginx:
        """Start nginx serving *blob_dir* at /blobs/ (``user root``: blobs are mode 0600),
        behind *profile*'s network (its cap and round trips, see benchmarks.profile)."""
        directory = self.workdir / "nginx"
        directory.mkdir()
        port = free_port()
        access_log = directory / "access.log"
        config = directory / "nginx.conf"
        config.write_text(
            profile.nginx_main()
            + f"""user root; worker_processes 1; daemon off; pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 1024; }}
http {{
  log_format bench '{LOG_FORMAT}';
  access_log {access_log} bench;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi; uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  server {{ listen 127.0.0.1:{port};
    location /blobs/ {{ alias {blob_dir}/; autoindex on;
      {profile.nginx_location()} }}
    location = /blobs {{ return 301 /blobs/; }} }}
}}
"""
        )
        nginx = tools.find("nginx") or "nginx"
        with (directory / "stderr.log").open("ab") as log:
            process = subprocess.Popen(
                [nginx, "-c", str(config), "-p", str(directory)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env,
            )
        self.stack.callback(stop, process)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/blobs/", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                error_log = (directory / "error.log").read_text()[-500:]
                sys.exit(f"nginx did not start: {redact(error_log)}")
            time.sleep(0.05)
        access_log.touch()
        self.nginx = Nginx(port, access_log)
        return self.nginx

    def start_devserver(self, data_dir: Path, storage_url: str, profile: Profile) -> DevServer:
        """Start ``simvuefs devserver`` on *data_dir* handing out *storage_url* downloads,
        behind *profile*'s network; --no-dedup so that every upload is really sent."""
        extra = ["--storage-url", storage_url, "--no-dedup", *profile.devserver_args()]
        server = DevServer(self.workdir, extra, data_dir=data_dir, env=self._env)
        self.stack.callback(server.stop)
        try:
            server.start(START_TIMEOUT)
        except DevServerError:
            sys.exit(f"the devserver did not start: {redact(server.log()[-500:])}")
        self.devserver = server
        return server

    # -- mounts ------------------------------------------------------------------------------

    def _contender(
        self, kind: str, root: Path, cache: Path, log: Path, read_only: bool
    ) -> tuple[list[str], dict[str, str]]:
        """Return the argv and environment that mount contender *kind* at *root*."""
        assert self.nginx is not None
        assert self.devserver is not None
        if kind == "simvuefs":
            options = ["--spool-dir", str(cache), *(["--read-only"] if read_only else [])]
            argv = mount_command(self.devserver.config_path, root, log, *options)
            return [*argv, "--foreground", *self.simvuefs_args], self._env
        if kind.startswith("rclone"):
            program = tools.NEW_RCLONE if kind == "rclone new" else "rclone"
            argv = [tools.find(program) or program, "mount", ":http:", str(root)]
            argv += ["--http-url", self.nginx.blobs_url + "/"]
            argv += ["--read-only", "--config", "/dev/null", "--cache-dir", str(cache)]
            argv += ["--vfs-cache-mode", "full"] if kind == "rclone full" else []
            argv += NEW_RCLONE_OPTIONS if kind == "rclone new" else []
            path = f"{self._path_dir}:{self._env.get('PATH', '')}"
            return argv, {**self._env, "PATH": path}
        if kind.startswith("httpdirfs"):
            argv = ["httpdirfs", "-f", "--no-range-check"]
            argv += ["--cache", "--cache-location", str(cache)] if kind == "httpdirfs cache" else []
            return [*argv, self.nginx.blobs_url + "/", str(root)], self._env
        raise ValueError(f"unknown mount kind {kind!r}")

    @contextlib.contextmanager
    def mount(
        self, kind: str, read_only: bool = True, disk_cache: Path | None = None
    ) -> Iterator[Mounted]:
        """Mount contender *kind* fresh (empty caches) until the block exits; with
        *disk_cache*, its cache on disk is that directory, kept (``benchmarks/diskcache.py``:
        rclone's ``--cache-dir``, simvuefs's ``--cache-dir``)."""
        self._mounts += 1
        name = f"{kind.replace(' ', '-')}-{self._mounts}"
        root = self.workdir / "mnt" / name
        cache = self.workdir / "cache" / name
        root.mkdir(parents=True)
        cache.mkdir(parents=True)
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        argv, env = self._contender(kind, root, cache, log, read_only)
        if disk_cache is not None and kind == "simvuefs":
            argv += ["--cache-dir", str(disk_cache)]
        elif disk_cache is not None:
            argv[argv.index("--cache-dir") + 1] = str(disk_cache)
        # Closed when the block exits, or by close() if the run is interrupted first.
        cleanup = self.stack.enter_context(contextlib.ExitStack())
        cleanup.callback(shutil.rmtree, cache, True)
        try:
            mount = start_foreground(argv, root, log, log, env)
        except MountFailed:
            cleanup.close()
            tail = log.read_text(errors="replace")[-FAILURE_LOG_CHARS:]
            raise ContenderFailed(f"{kind} did not mount: {redact(tail)}") from None
        cleanup.callback(_report_tear_down, kind, mount)
        try:
            yield Mounted(kind, root, mount.pid)
        finally:
            cleanup.close()


def _report_tear_down(kind: str, mount: Mount) -> None:
    """Unmount contender *kind* and stop its process; say on stderr what went wrong."""
    for problem in tear_down(mount):
        print(f"{kind}: {problem}", file=sys.stderr, flush=True)
