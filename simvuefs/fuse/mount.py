"""The life of a mount: checks, pyfuse3 init/main/close, signals, readiness, daemonising.

Order of events in :func:`run` (all before the first request is served):

1. Check the mountpoint (exists, is a directory, is empty, is not mounted or a dead mount).
2. Inside ``trio.run``: install the SIGINT/SIGTERM receiver, open the client, check the
   server (``server_version`` with the token) or, offline, open the offline cache
   (``OfflineClient``), open the reader and (unless read-only) the
   uploader, which locks the spool and resumes its pending uploads in the background;
   record the mount (``registry.py``); start publishing the counters (``stats.py``);
   ``pyfuse3.init``.
3. ``pyfuse3.main()`` serves requests. A helper task stats the mountpoint from a worker
   thread (answered by ``main`` itself: never stat the mountpoint before ``main`` runs),
   then raises the mount's ``read_ahead_kb`` to 1 MiB (design guide 4.15, best effort) and
   reports readiness.
4. SIGINT/SIGTERM during start-up abandon it (nothing is left mounted). Once mounted, a
   signal calls ``pyfuse3.terminate()``; ``main`` returns, the remaining lookups are
   forgotten and the mount is closed and unmounted. If serving fails after the mount was
   ready, the mount is left in place (dead: ``ENOTCONN``) so programs see an error instead
   of the empty directory underneath; ``simvuefs unmount`` clears it.
5. Uploads at the end (bounded, nothing is lost): after a signal, ``close()`` calls still
   waiting for their upload get ``settings.shutdown_upload_wait`` seconds, then they are
   cancelled (their files stay journaled). Leaving the uploader waits as long again for
   background attempts in progress. Whatever is still pending is logged (and printed to
   stderr in the foreground) and resumes at the next mount of the same server at the same
   mount point; the mount record then stays for ``simvuefs status``. Otherwise the record
   and an empty default spool are removed.

Daemon mode (:func:`spawn_daemon`) starts the same command again with ``--foreground`` and
``--ready-fd N`` in a new session, and waits on the pipe (protocol:
:mod:`simvuefs.control.readiness`) for ``ready`` or the error that stopped the mount.
"""

from __future__ import annotations

import errno
import faulthandler
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from simvuefs.backends.client import SimvueClient
from simvuefs.backends.offline import OfflineClient
from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import Settings
from simvuefs.control import registry
from simvuefs.control.readiness import failure, wait_for_line
from simvuefs.errors import AuthError, ProtocolError, StatusError, TransportError
from simvuefs.fuse.attrs import AttrPolicy
from simvuefs.fuse.fs import Operations
from simvuefs.fuse.stats import MountStats
from simvuefs.fuse.tree import RunSelection, Tree
from simvuefs.logs import UsageError
from simvuefs.read.reader import Reader, open_reader
from simvuefs.write.spool import default_spool_dir
from simvuefs.write.upload import Uploader, open_uploader

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024
"""Kernel read-ahead for the mount: 1 MiB FUSE reads instead of 128 KiB (guide 4.15)."""
READY_TIMEOUT = 30.0
"""How long the mount may take to answer its first request once mounted."""
DAEMON_READY_TIMEOUT = 120.0
"""How long the daemon parent waits for the child's verdict (server checks included)."""
UNMOUNT_TIMEOUT = 30.0
PROBE_TIMEOUT = 5.0
"""How long an existing mount at the mountpoint may take to answer ``statvfs``."""
DEAD_MOUNT_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)
"""What the kernel answers on a FUSE mount whose daemon has gone."""


@dataclass(frozen=True)
class MountOptions:
    """How to mount: where, the FUSE-level switches, and the end-of-mount housekeeping.

    *remove_empty_spool*: delete the spool at unmount when nothing is left in it (for the
    per-mount default spool, not one the user named). *report_to_stderr*: say on stderr
    what stays pending at unmount (a foreground mount; a daemon's stderr is its log).
    """

    mountpoint: Path
    read_only: bool = False
    allow_other: bool = False
    debug_fuse: bool = False
    remove_empty_spool: bool = False
    report_to_stderr: bool = False
    offline: bool = False
    """Serve ``settings.offline_directory`` (the official client's offline cache), no server."""
    selection: RunSelection = RunSelection()
    """Which runs to show (``--folder``, ``--run``)."""

    def fuse_options(self) -> set[str]:
        """Return the options for ``pyfuse3.init``.

        The mount is private to the mounting user unless *allow_other*; the kernel checks
        permissions against the modes we report (``default_permissions``).
        """
        options = set(pyfuse3.default_options)
        options |= {"fsname=simvuefs", "subtype=simvuefs", "default_permissions"}
        options |= {"nosuid", "nodev"}
        if self.read_only:
            options.add("ro")  # writable mounts refuse writes outside input/ themselves
        if self.allow_other:
            options.add("allow_other")
        if self.debug_fuse:
            options.add("debug")
        return options


# -- mount table and mountpoint checks ----------------------------------------------------


def _unescape(field: str) -> str:
    """Decode the octal escapes (``\\040`` ...) of a ``/proc/self/mountinfo`` field."""
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        digits = raw[i + 1 : i + 4]
        if raw[i] == 0x5C and len(digits) == 3 and all(0x30 <= d <= 0x37 for d in digits):
            out.append(int(digits, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def mount_table() -> dict[str, str]:
    """Return ``{mount point: filesystem type}`` from ``/proc/self/mountinfo``."""
    table: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split()
            if "-" not in fields:
                continue
            separator = fields.index("-")
            if len(fields) > separator + 1 and len(fields) > 4:
                table[_unescape(fields[4])] = fields[separator + 1]
    return table


def check_mountpoint(path: Path) -> None:
    """Raise UsageError unless *path* is an existing, empty, unmounted directory."""
    if str(path) in mount_table():
        problem = _probe_mount(path)
        if problem is None:
            raise UsageError(f"{path} is already mounted (run 'simvuefs unmount {path}' first)")
        raise UsageError(f"{path} is a {problem}: run 'simvuefs unmount {path}' first")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot use mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"mountpoint {path} is not a directory")
    try:
        with os.scandir(path) as entries:
            occupied = any(True for _ in entries)
    except OSError as exc:
        raise UsageError(f"cannot read mountpoint {path}: {exc.strerror}") from None
    if occupied:
        raise UsageError(f"mountpoint {path} is not empty")


def _probe_mount(path: Path) -> str | None:
    """Return what is wrong with the existing mount at *path*, or None if it answers.

    ``statvfs`` always reaches the filesystem (``stat`` may be answered from the kernel's
    cache); it runs in a thread so that a hung filesystem cannot hang this command.
    """
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            os.statvfs(path)
        except OSError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT)
    if not outcome:
        return "mount that does not answer"
    error = outcome[0]
    if isinstance(error, OSError) and error.errno in DEAD_MOUNT_ERRNOS:
        return f"dead mount ({error.strerror})"
    return None


# -- serving ------------------------------------------------------------------------------


async def check_server(client: SimvueClient, url: str) -> str:
    """Return the server's version, or raise UsageError with one line saying what is wrong."""
    try:
        return await client.server_version()
    except AuthError as exc:
        raise UsageError(
            f"the Simvue server at {url} rejected the token (HTTP {exc.status}): "
            "check SIMVUE_TOKEN or the token in simvue.toml"
        ) from None
    except TransportError as exc:
        raise UsageError(f"cannot reach the Simvue server at {url}: {exc}") from None
    except (StatusError, ProtocolError) as exc:
        raise UsageError(f"{url} does not look like a Simvue server: {exc}") from None


def run(settings: Settings, options: MountOptions, on_ready: Callable[[], None]) -> None:
    """Mount, call *on_ready* once the mount answers requests, and serve until unmounted.

    Raises UsageError (or a SimvueError) with a one-line message when the mount cannot start.
    """
    check_mountpoint(options.mountpoint)
    # `kill -USR1 <pid>` dumps every thread's stack to stderr (the log file of a daemon).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        trio.run(_serve, settings, options, on_ready)
    except BaseExceptionGroup as group:
        # The reader's nursery wraps what the mount raises; a single error is shown as is.
        only = _sole_exception(group)
        if only is None:
            raise
        raise only from None


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """Return the one exception inside *group* (however nested), or None if there are more."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


@dataclass
class _Lifecycle:
    """Where the mount is, for the signal watcher: starting, serving, or interrupted.

    *requests* is the scope of ``pyfuse3.main`` (its request handlers) while it runs.
    """

    startup: trio.CancelScope
    serving: bool = False
    interrupted: str | None = None
    requests: trio.CancelScope | None = None
    terminating: bool = False


async def _serve(settings: Settings, options: MountOptions, on_ready: Callable[[], None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            lifecycle = _Lifecycle(startup=nursery.cancel_scope)
            nursery.start_soon(_watch_signals, signals, lifecycle, settings)
            await _mount_and_serve(settings, options, on_ready, lifecycle)
            nursery.cancel_scope.cancel()
    if lifecycle.interrupted is not None and not lifecycle.serving:
        raise UsageError(f"{lifecycle.interrupted} received before the mount was ready")


async def _watch_signals(
    signals: AsyncIterator[int], lifecycle: _Lifecycle, settings: Settings
) -> None:
    """Unmount on SIGINT/SIGTERM; before the mount exists, abandon the start-up instead.

    Once mounted, requests still running (``close()`` waiting for its upload) get
    ``settings.shutdown_upload_wait`` seconds before they are cancelled; a second signal
    cancels them at once.
    """
    async for signum in signals:
        lifecycle.interrupted = signal.Signals(signum).name
        if not lifecycle.serving:
            log.info("%s received: giving up the start-up", lifecycle.interrupted)
            lifecycle.startup.cancel()
            return
        requests = lifecycle.requests
        if requests is None:
            return
        if lifecycle.terminating:
            log.info("%s received again: cancelling requests still running", lifecycle.interrupted)
            requests.cancel()
            return
        log.info("%s received: unmounting", lifecycle.interrupted)
        lifecycle.terminating = True
        requests.deadline = trio.current_time() + settings.shutdown_upload_wait
        pyfuse3.terminate()  # main() returns even if it has not started yet


async def _mount_and_serve(
    settings: Settings,
    options: MountOptions,
    on_ready: Callable[[], None],
    lifecycle: _Lifecycle,
) -> None:
    async with (
        open_backend(settings, offline=options.offline) as client,
        open_reader(client, settings) as reader,
        trio.open_nursery() as publisher,
    ):
        stats = MountStats(options.mountpoint, client, reader)
        publisher.start_soon(stats.publish)
        tree = Tree(client, settings, options.selection)
        if options.read_only:
            await _serve_tree(settings, tree, reader, None, options, on_ready, lifecycle)
        else:
            await _serve_writable(
                client, settings, tree, reader, options, on_ready, lifecycle, stats
            )
        publisher.cancel_scope.cancel()


@asynccontextmanager
async def open_backend(settings: Settings, *, offline: bool) -> AsyncIterator[SimvueBackend]:
    """Open what the mount shows: the offline cache, or the server (checked first)."""
    if offline:
        async with OfflineClient.open(settings) as cache:
            log.info("serving the offline cache %s", settings.offline_directory)
            yield cache
        return
    async with SimvueClient.open(settings) as client:
        version = await check_server(client, settings.url)
        log.info("server %s answers (version %s)", settings.url, version)
        yield client
        log.debug("client: %s", client.statistics())


async def _serve_writable(
    client: SimvueBackend,
    settings: Settings,
    tree: Tree,
    reader: Reader,
    options: MountOptions,
    on_ready: Callable[[], None],
    lifecycle: _Lifecycle,
    stats: MountStats,
) -> None:
    """Open the uploader around the mount (its counters go to *stats*), record the mount,
    and report what stays pending (also when the mount fails)."""
    spool_dir = settings.spool_dir or default_spool_dir()
    record = registry.MountRecord(
        mountpoint=str(options.mountpoint),
        pid=os.getpid(),
        url=settings.url,
        spool_dir=str(spool_dir),
    )
    opened: Uploader | None = None
    try:
        async with open_uploader(client, settings, on_landed=tree.landed) as uploader:
            opened = stats.uploader = uploader
            tree.start_writing(uploader)
            await trio.to_thread.run_sync(registry.save, record)
            await _serve_tree(settings, tree, reader, uploader, options, on_ready, lifecycle)
    finally:
        if opened is not None:
            _report_pending(opened.statistics().pending, spool_dir, options)


def _report_pending(left: int, spool_dir: Path, options: MountOptions) -> None:
    """After the uploader closed: say what stays pending (the record stays for ``simvuefs
    status``), or forget the mount and its empty default spool."""
    if left:
        message = (
            f"{left} upload(s) still pending in {spool_dir}; they resume at the next mount "
            f"of this server at {options.mountpoint} ('simvuefs status' lists them)"
        )
        if options.report_to_stderr:
            print(f"simvuefs: {message}", file=sys.stderr, flush=True)
        return
    registry.remove(options.mountpoint)
    if options.remove_empty_spool and registry.remove_empty_spool(spool_dir):
        log.debug("removed the empty spool %s", spool_dir)


async def _serve_tree(
    settings: Settings,
    tree: Tree,
    reader: Reader,
    uploader: Uploader | None,
    options: MountOptions,
    on_ready: Callable[[], None],
    lifecycle: _Lifecycle,
) -> None:
    mountpoint = str(options.mountpoint)
    policy = AttrPolicy(
        uid=os.getuid(),
        gid=os.getgid(),
        mount_time_ns=time.time_ns(),
        block_size=settings.block_size,
        writable=uploader is not None,
    )
    ops = Operations(tree, reader, policy, uploader)
    try:
        pyfuse3.init(ops, mountpoint, options.fuse_options())
    except RuntimeError as exc:
        raise UsageError(f"cannot mount {mountpoint}: {exc}") from None
    requests = lifecycle.requests = trio.CancelScope()
    lifecycle.serving = True
    ready = trio.Event()
    clean_unmount = True
    try:
        with requests:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_announce, ops, mountpoint, ready, on_ready)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        if requests.cancelled_caught:
            log.warning(
                "requests still running %.0f s after the signal were cancelled "
                "(their uploads stay pending)",
                settings.shutdown_upload_wait,
            )
    except BaseException:
        # Leave a dead mount only once programs may be using it (module doc).
        clean_unmount = not ready.is_set()
        raise
    finally:
        lifecycle.requests = None
        held = ops.forget_all()
        log.debug("released %d lookups held by the kernel", held)
        pyfuse3.close(unmount=clean_unmount)
        log.info("unmounted %s", mountpoint)


async def _announce(
    ops: Operations, mountpoint: str, ready: trio.Event, on_ready: Callable[[], None]
) -> None:
    """Wait until the mount answers a request, tune read-ahead, then report readiness."""
    with trio.fail_after(READY_TIMEOUT):
        info = await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    await trio.to_thread.run_sync(_set_read_ahead, info.st_dev)
    ops.mount_id = await trio.to_thread.run_sync(mount_id_of, info.st_dev)
    ready.set()
    log.info("mounted at %s", mountpoint)
    on_ready()


def mount_id_of(device: int) -> int | None:
    """Return the mount id (``/proc/self/mountinfo``) of the mount on *device*, if found."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split()
            if len(fields) > 2 and fields[2] == wanted:
                return int(fields[0])
    return None


def _set_read_ahead(device: int) -> None:
    path = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    try:
        path.write_text(f"{READ_AHEAD_KB}\n")
    except OSError as exc:
        log.debug("could not set %s: %s", path, exc)
    else:
        log.debug("set %s to %d", path, READ_AHEAD_KB)


# -- daemon mode --------------------------------------------------------------------------


def spawn_daemon(argv: list[str], log_file: Path, timeout: float = DAEMON_READY_TIMEOUT) -> None:
    """Run ``python -m simvuefs *argv* --ready-fd N`` detached; return once it is mounted.

    The child gets a new session, ``/dev/null`` as stdin and *log_file* as stdout/stderr.
    Raises UsageError with the child's own message (and exit code) if it fails, exits, or
    is not ready within *timeout* seconds.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    try:
        os.set_inheritable(write_end, True)
        with open(log_file, "ab") as log_stream:
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_stream.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log_stream.fileno(), 2),
            ]
            command = [sys.executable, "-m", "simvuefs", *argv, "--ready-fd", str(write_end)]
            pid = os.posix_spawn(
                sys.executable, command, os.environ, file_actions=actions, setsid=True
            )
    finally:
        os.close(write_end)
    try:
        line = wait_for_line(read_end, timeout)
    finally:
        os.close(read_end)
    if line == "ready":
        return
    if failed := failure(line):
        _reap(pid)
        raise UsageError(failed[1], exitcode=failed[0])
    if line is None and _reap(pid) is None:
        os.kill(pid, signal.SIGTERM)
        raise UsageError(f"the mount was not ready after {timeout:.0f} s (log: {log_file})")
    raise UsageError(f"the mount process exited before the mount was ready (log: {log_file})")


def _reap(pid: int, wait: float = 2.0) -> int | None:
    """Return the exit status of child *pid* if it exits within *wait* seconds, else None."""
    deadline = time.monotonic() + wait
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


# -- unmount ------------------------------------------------------------------------------


def fusermount() -> str:
    """Return the fusermount binary (fuse3-only systems ship only ``fusermount3``)."""
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise UsageError("fusermount3 is not installed (Debian/Ubuntu package fuse3)")


def unmount(mountpoint: Path) -> str | None:
    """Unmount the FUSE mount at *mountpoint*; return a note for the user, if any.

    Uses ``fusermount3 -u``; when the mount is busy, falls back to a lazy ``-uz`` (detached
    now, gone once the last process leaves it) and says so. Dead (``ENOTCONN``) mounts are
    cleared the same way. Raises UsageError if it is not a FUSE mount or cannot be unmounted.
    """
    path = str(mountpoint)
    fstype = mount_table().get(path)
    if fstype is None:
        raise UsageError(f"{path} is not mounted")
    if not fstype.startswith("fuse"):
        raise UsageError(f"{path} is not a FUSE mount (type {fstype})")
    tool = fusermount()
    first = _run([tool, "-u", path])
    if first.returncode == 0 or path not in mount_table():
        return None
    lazy = _run([tool, "-uz", path])
    if lazy.returncode == 0 or path not in mount_table():
        return f"{path} was busy: detached it lazily (it goes away when no process uses it)"
    reason = (lazy.stderr or first.stderr).strip().splitlines()
    raise UsageError(f"cannot unmount {path}: {reason[-1] if reason else 'fusermount failed'}")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=UNMOUNT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"{argv[0]} did not finish within {UNMOUNT_TIMEOUT:.0f} s") from None
