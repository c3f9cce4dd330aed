"""The life of a mount in its daemon: pyfuse3 init/main/close, signals, readiness.

Order of events in :func:`run` (all before the first request is served):

1. Check the mountpoint (``control.mounts.check_mountpoint``: exists, is a directory, is
   empty, is not mounted or a dead mount).
2. Inside ``trio.run``: install the SIGINT/SIGTERM receiver, open the backend
   (``backends.open_backend``: the client, after checking the server with the token, or
   the offline cache), ask it who the user is (``whoami``: the tree keeps other users'
   runs read-only), open the reader and (unless read-only) the uploader, which locks
   the spool (``settings.spool_dir``) and resumes its pending uploads in the background;
   record the mount (``control.registry``); start publishing the counters (``stats.py``);
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

The parts of a mount travel together: :class:`_Mount` (what was asked, and the lifecycle
the signal watcher steers) and :class:`_Parts` (what it serves from, once opened). A daemon
is started by ``control.mounts.start_mount``; *on_ready* answers it on the readiness pipe.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import trio

from simvuefs.backends import SimvueBackend, open_backend
from simvuefs.config import Settings
from simvuefs.control import registry
from simvuefs.control.mounts import check_mountpoint, mount_id_of
from simvuefs.diskcache.source import open_content_cache
from simvuefs.fuse.attrs import AttrPolicy
from simvuefs.fuse.fs import Operations
from simvuefs.fuse.heap import limit_arenas
from simvuefs.fuse.stats import MountStats
from simvuefs.fuse.tree import RunSelection, Tree
from simvuefs.logs import UsageError
from simvuefs.read.reader import Reader, open_reader
from simvuefs.write.staged import StagedFile
from simvuefs.write.upload import Uploader, open_uploader

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024
"""Kernel read-ahead for the mount: 1 MiB FUSE reads instead of 128 KiB (guide 4.15)."""
READY_TIMEOUT = 30.0
"""How long the mount may take to answer its first request once mounted."""


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


@dataclass
class _Lifecycle:
    """Where the mount is, for the signal watcher: starting, serving, ready, or interrupted.

    *startup* encloses everything until the end (a signal before serving cancels it);
    *requests* is the scope of ``pyfuse3.main`` (its request handlers) while it runs;
    *ready* is set once the mount answers requests.
    """

    startup: trio.CancelScope = field(default_factory=trio.CancelScope)
    ready: trio.Event = field(default_factory=trio.Event)
    serving: bool = False
    interrupted: str | None = None
    requests: trio.CancelScope | None = None
    terminating: bool = False


@dataclass(frozen=True)
class _Mount:
    """One mount as it was asked for, and where it stands."""

    settings: Settings
    options: MountOptions
    on_ready: Callable[[], None]
    lifecycle: _Lifecycle = field(default_factory=_Lifecycle)


@dataclass(frozen=True)
class _Parts:
    """What a mount serves from, once opened (*uploader*: writable mounts only)."""

    backend: SimvueBackend
    tree: Tree
    reader: Reader
    stats: MountStats
    uploader: Uploader | None = None


def run(settings: Settings, options: MountOptions, on_ready: Callable[[], None]) -> None:
    """Mount, call *on_ready* once the mount answers requests, and serve until unmounted.

    Raises UsageError (or a SimvueError) with a one-line message when the mount cannot start.
    """
    check_mountpoint(options.mountpoint)
    # `kill -USR1 <pid>` dumps every thread's stack to stderr (the log file of a daemon).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    limit_arenas()  # before any worker thread: freed memory stays in few heaps (heap.py)
    try:
        trio.run(_serve, _Mount(settings, options, on_ready))
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


async def _serve(mount: _Mount) -> None:
    lifecycle = mount.lifecycle
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, lifecycle.startup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, mount)
            await _open_and_serve(mount)
            nursery.cancel_scope.cancel()
    if lifecycle.interrupted is not None and not lifecycle.serving:
        raise UsageError(f"{lifecycle.interrupted} received before the mount was ready")


async def _watch_signals(signals: AsyncIterator[int], mount: _Mount) -> None:
    """Unmount on SIGINT/SIGTERM; before the mount exists, abandon the start-up instead.

    Once mounted, requests still running (``close()`` waiting for its upload) get
    ``settings.shutdown_upload_wait`` seconds before they are cancelled; a second signal
    cancels them at once.
    """
    lifecycle = mount.lifecycle
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
        requests.deadline = trio.current_time() + mount.settings.shutdown_upload_wait
        pyfuse3.terminate()  # main() returns even if it has not started yet


async def _open_and_serve(mount: _Mount) -> None:
    settings, options = mount.settings, mount.options
    async with (
        open_backend(settings, offline=options.offline) as backend,
        open_content_cache(backend, settings, enabled=not options.offline) as content,
        open_reader(backend if content is None else content, settings, content) as reader,
        trio.open_nursery() as publisher,
    ):
        stats = MountStats(options.mountpoint, backend, reader, content)
        publisher.start_soon(stats.publish)
        tree = Tree(backend, settings, options.selection, user=await backend.whoami())
        tree.start_lookahead(publisher)  # its tasks end with the publisher's
        parts = _Parts(backend, tree, reader, stats)
        if options.read_only:
            await _serve_tree(mount, parts)
        else:
            await _serve_writable(mount, parts)
        publisher.cancel_scope.cancel()


async def _serve_writable(mount: _Mount, parts: _Parts) -> None:
    """Open the uploader around the mount (its counters go to the stats), record the
    mount, and report what stays pending (also when the mount fails)."""
    settings = mount.settings
    record = registry.MountRecord(
        mountpoint=str(mount.options.mountpoint),
        pid=os.getpid(),
        url=settings.url,
        spool_dir=str(settings.spool_dir),
    )
    opened: Uploader | None = None
    try:
        async with open_uploader(
            parts.backend, settings, on_landed=_on_landed(parts), on_dropped=parts.tree.dropped
        ) as uploader:
            opened = parts.stats.uploader = uploader
            parts.tree.start_writing(uploader)
            await trio.to_thread.run_sync(registry.save, record)
            await _serve_tree(mount, dataclasses.replace(parts, uploader=uploader))
    finally:
        if opened is not None:
            _report_pending(mount, opened.statistics().pending)


def _on_landed(parts: _Parts) -> Callable[[StagedFile], None]:
    """The uploader's ``on_landed``: the tree shows the artifact; the content cache, if
    any, copies the landed content (reading back what was written moves nothing)."""
    content = parts.stats.content

    def landed(f: StagedFile) -> None:
        parts.tree.landed(f)
        if content is not None:
            content.adopt(f.checksum, f.data, f.size)

    return landed


def _report_pending(mount: _Mount, left: int) -> None:
    """After the uploader closed: say what stays pending (the record stays for ``simvuefs
    status``), or forget the mount and its empty default spool."""
    options, spool_dir = mount.options, mount.settings.spool_dir
    if left:
        message = (
            f"{left} upload(s) still pending in {spool_dir}; they resume at the next mount "
            f"of this server at {options.mountpoint}, but for those the server refused for "
            "good ('simvuefs status' lists them; 'simvuefs pending' deals with them)"
        )
        if options.report_to_stderr:
            print(f"simvuefs: {message}", file=sys.stderr, flush=True)
        return
    registry.remove(options.mountpoint)
    if options.remove_empty_spool and registry.remove_empty_spool(spool_dir):
        log.debug("removed the empty spool %s", spool_dir)


def _operations(mount: _Mount, parts: _Parts) -> Operations:
    """The FUSE handlers over *parts*, with attributes for the mounting user."""
    policy = AttrPolicy(
        uid=os.getuid(),
        gid=os.getgid(),
        mount_time_ns=time.time_ns(),
        block_size=mount.settings.block_size,
        writable=parts.uploader is not None,
        user=parts.tree.user,
    )
    return Operations(parts.tree, parts.reader, policy, parts.uploader)


async def _serve_tree(mount: _Mount, parts: _Parts) -> None:
    mountpoint, lifecycle = str(mount.options.mountpoint), mount.lifecycle
    ops = _operations(mount, parts)
    try:
        pyfuse3.init(ops, mountpoint, mount.options.fuse_options())
    except RuntimeError as exc:
        raise UsageError(f"cannot mount {mountpoint}: {exc}") from None
    parts.tree.forget_entry = _forget_entry
    requests = lifecycle.requests = trio.CancelScope()
    lifecycle.serving = True
    clean_unmount = True
    try:
        with requests:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_announce, mount, ops)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        if requests.cancelled_caught:
            log.warning(
                "requests still running %.0f s after the signal were cancelled "
                "(their uploads stay pending)",
                mount.settings.shutdown_upload_wait,
            )
    except BaseException:
        # Leave a dead mount only once programs may be using it (module doc).
        clean_unmount = not lifecycle.ready.is_set()
        raise
    finally:
        lifecycle.requests = None
        parts.tree.forget_entry = None  # pyfuse3.close ends the thread that sends them
        held = ops.forget_all()
        log.debug("released %d lookups held by the kernel", held)
        pyfuse3.close(unmount=clean_unmount)
        log.info("unmounted %s", mountpoint)


def _forget_entry(parent: int, name: str) -> None:
    """Ask the kernel to drop its entry *name* in directory *parent* (a settled file's, so
    that it forgets the inode): queued for pyfuse3's notify thread, which sends it once no
    request on the entry is running (so it never blocks a handler); errors are logged
    there, ENOENT (the kernel had dropped it) ignored."""
    pyfuse3.invalidate_entry_async(pyfuse3.InodeT(parent), os.fsencode(name), ignore_enoent=True)


async def _announce(mount: _Mount, ops: Operations) -> None:
    """Wait until the mount answers a request, tune read-ahead, then report readiness."""
    mountpoint = str(mount.options.mountpoint)
    with trio.fail_after(READY_TIMEOUT):
        info = await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    await trio.to_thread.run_sync(_set_read_ahead, info.st_dev)
    ops.mount_id = await trio.to_thread.run_sync(mount_id_of, info.st_dev)
    mount.lifecycle.ready.set()
    log.info("mounted at %s", mountpoint)
    mount.on_ready()


def _set_read_ahead(device: int) -> None:
    path = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    try:
        path.write_text(f"{READ_AHEAD_KB}\n")
    except OSError as exc:
        log.debug("could not set %s: %s", path, exc)
    else:
        log.debug("set %s to %d", path, READ_AHEAD_KB)
