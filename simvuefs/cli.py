"""The ``simvuefs`` command: argument parsing, logging setup and exit codes.

This is the only module that calls ``sys.exit``. Every subcommand either returns an exit
status or raises :class:`simvuefs.logs.UsageError` / :class:`simvuefs.errors.SimvueError`,
which are printed as one line (never a traceback, never the token).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from simvuefs import __version__
from simvuefs.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CONTENT_CACHE_SIZE,
    DEFAULT_READ_PART_SIZE,
    DEFAULT_READ_STREAMS,
    DEFAULT_READAHEAD_PER_FILE,
    DEFAULT_READAHEAD_TOTAL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_UPLOAD_WAIT,
    MAX_READ_STREAMS,
    MIB,
)
from simvuefs.control import mounts, registry
from simvuefs.control.readiness import Readiness
from simvuefs.errors import ConfigError, SimvueError
from simvuefs.logs import UsageError, setup_logging

if TYPE_CHECKING:
    from simvuefs.config import Settings
    from simvuefs.fuse.tree import RunSelection

Handler = Callable[[argparse.Namespace], int]


def _add_devserver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "devserver",
        help="run a local Simvue-compatible server (demos, tests, benchmarks)",
        description="Run a local Simvue-compatible server. Needs the 'devserver' extra.",
    )

    def run(args: argparse.Namespace) -> int:
        try:
            from simvuefs.devserver import cli as devserver_cli
        except ImportError as exc:
            raise UsageError(
                f"the devserver needs extra packages ({exc.name} is missing): "
                "pip install 'simvuefs[devserver]'"
            ) from None
        return devserver_cli.run(args)

    from simvuefs.devserver.arguments import add_arguments

    add_arguments(parser)
    parser.set_defaults(handler=run)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MEMORY_FLAGS = ("--cache-size", "--read-ahead", "--read-ahead-total", "--read-part-size")
"""The mount's memory caps (sizes), passed on to the daemon as given."""
READ_STREAMS_FLAG = "--read-streams"
"""Parts of one file's read-ahead in flight at most (a number), passed on as given."""


def _given(args: argparse.Namespace, flag: str) -> str | None:
    """The text given for the option *flag* (``--read-ahead``), None if not given."""
    value: str | None = getattr(args, flag.removeprefix("--").replace("-", "_"))
    return value


def _mib(size: int) -> str:
    """*size* bytes as the memory options' help writes it: ``128MiB``."""
    return f"{size // MIB}MiB"


def default_log_file() -> Path:
    """Return where a daemonised mount logs without --log-file (the XDG state directory)."""
    return registry.state_dir() / "mount.log"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _ttl_text(text: str) -> str:
    from simvuefs.config import parse_ttl

    try:
        parse_ttl(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_mount(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "mount",
        help="mount a Simvue server's runs at MOUNTPOINT",
        description=(
            "Mount a Simvue server at MOUNTPOINT as MOUNTPOINT/runs/<run>/<input|output|code>/"
            "<artifact>. The server URL and token are found as the simvue client finds them "
            "(SIMVUE_URL/SIMVUE_TOKEN, then simvue.toml). Without --foreground the mount runs "
            "in the background and this command returns once it is ready; its log then goes "
            f"to --log-file or to {default_log_file()} ($XDG_STATE_HOME/simvuefs/mount.log). "
            "Files written into runs/<run>/input/ are uploaded as input artifacts when they "
            "are closed (see SEMANTICS.md). SIGINT/SIGTERM to the mount process unmount it "
            "cleanly."
        ),
    )
    parser.add_argument("mountpoint", type=Path, help="an existing empty directory")
    parser.add_argument("--url", help="Simvue server URL (SIMVUE_URL wins, as in the client)")
    parser.add_argument("--profile", help="read [profiles.PROFILE] of the config file")
    parser.add_argument("--config", type=Path, metavar="FILE", help="read this simvue.toml")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="mount read-only (default: new files can be written into input/ of every run)",
    )
    parser.add_argument(
        "--offline",
        nargs="?",
        const="",
        metavar="CACHE_DIR",
        help="mount the official client's offline cache instead of a server (no URL, token or "
        "network; CACHE_DIR default: SIMVUE_OFFLINE_DIRECTORY, [offline] cache, ~/.simvue); "
        "files written into input/ are sent later by simvue-sender",
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        metavar="DIR",
        help="keep files being written and pending uploads here (default: "
        "$XDG_CACHE_HOME/simvuefs/spool/<key of server and mount point>)",
    )
    parser.add_argument(
        "--upload-wait",
        type=_seconds,
        default=DEFAULT_UPLOAD_WAIT,
        metavar="SECONDS",
        help="at unmount, how long uploads in progress may still take before they are left "
        "pending for the next mount (default: %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="longest time a file operation waits for the server, retries included; then it "
        f"fails with ETIMEDOUT/EIO (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--metadata-ttl",
        type=_ttl_text,
        default="minimal",
        metavar="SECONDS|minimal|indefinite",
        help="how long listings are trusted (minimal = 1 s; default: %(default)s)",
    )
    memory = parser.add_argument_group(
        "memory",
        "caps on the mount's memory, e.g. 64MiB or 1G (see SEMANTICS.md, Memory); the daemon "
        "stays near --cache-size plus --read-ahead-total plus about 100 MiB",
    )
    memory.add_argument(
        "--cache-size",
        metavar="SIZE",
        help="the cache of read blocks kept for re-reads (read-ahead is held beside it) "
        f"(default: {_mib(DEFAULT_CACHE_BYTES)})",
    )
    memory.add_argument(
        "--read-ahead",
        metavar="SIZE",
        help="most content fetched ahead of one sequential reader "
        f"(default: {_mib(DEFAULT_READAHEAD_PER_FILE)})",
    )
    memory.add_argument(
        "--read-ahead-total",
        metavar="SIZE",
        help="most content fetched ahead over all open files, held beside --cache-size "
        f"(default: {_mib(DEFAULT_READAHEAD_TOTAL)})",
    )
    memory.add_argument(
        "--read-part-size",
        metavar="SIZE",
        help="read-ahead fetches a file in parts of this size, one ranged GET each, at most "
        f"--read-ahead (default: {_mib(DEFAULT_READ_PART_SIZE)})",
    )
    memory.add_argument(
        READ_STREAMS_FLAG,
        metavar="N",
        help="most read-ahead parts of one file in flight at once, each on a connection of "
        f"its own (1-{MAX_READ_STREAMS}; default: {DEFAULT_READ_STREAMS})",
    )
    content = parser.add_argument_group(
        "content cache",
        "keep read content on disk, by checksum, for later reads and other mounts (off by "
        "default; see SEMANTICS.md, Content cache)",
    )
    content.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the content cache; any number of mounts, on one machine or on many sharing a "
        "file system, may use one directory",
    )
    content.add_argument(
        "--cache-dir-size",
        metavar="SIZE",
        help="evict least recently used content beyond this size "
        f"(default: {_mib(DEFAULT_CONTENT_CACHE_SIZE)})",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the sha256 of files read from start to end (saves about 0.9 "
        "CPU-s per GiB; wrong bytes from storage then go unnoticed)",
    )
    parser.add_argument(
        "--no-delete",
        action="store_true",
        help="never delete an artifact on the server: renaming a file after it was uploaded "
        "(rsync's temporary name) then fails with EXDEV instead of replacing the artifact "
        "(use rsync --inplace, or --temp-dir outside the mount)",
    )
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO", help="default: INFO"
    )
    parser.add_argument("--log-file", type=Path, metavar="FILE", help="append the log here")
    parser.add_argument(
        "--debug-fuse", action="store_true", help="log every FUSE request (libfuse debug)"
    )
    parser.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users see the mount (needs user_allow_other in /etc/fuse.conf)",
    )
    parser.add_argument(
        "--folder",
        metavar="PATH",
        help="show only the runs in this Simvue folder and the folders below it (e.g. /demo)",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="NAME_OR_ID",
        help="show only this run (a run name or id; repeat for more runs)",
    )
    parser.add_argument(
        "--own-runs-only",
        action="store_true",
        help="show only your own runs (default: also runs other users share with you, as "
        "the simvue client lists them; their input/ is read-only)",
    )
    # Internal: the daemonised child reports readiness on this pipe.
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(handler=_mount)


def _absolute(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _daemon_argv(args: argparse.Namespace, mountpoint: Path, log_file: Path) -> list[str]:
    argv = ["mount", str(mountpoint), "--foreground", "--log-file", str(log_file)]
    argv += ["--log-level", args.log_level, "--metadata-ttl", args.metadata_ttl]
    argv += ["--upload-wait", repr(args.upload_wait)]
    if args.request_timeout is not None:
        argv += ["--request-timeout", repr(args.request_timeout)]
    for flag in (*MEMORY_FLAGS, READ_STREAMS_FLAG):
        value = _given(args, flag)
        if value is not None:
            argv += [flag, value]
    if args.spool_dir is not None:
        argv += ["--spool-dir", str(_absolute(args.spool_dir))]
    if args.cache_dir is not None:
        argv += ["--cache-dir", str(_absolute(args.cache_dir))]
    if args.cache_dir_size is not None:
        argv += ["--cache-dir-size", args.cache_dir_size]
    if args.url is not None:
        argv += ["--url", args.url]
    if args.profile is not None:
        argv += ["--profile", args.profile]
    if args.config is not None:
        argv += ["--config", str(_absolute(args.config))]
    for flag in (
        "read_only",
        "debug_fuse",
        "allow_other",
        "no_verify",
        "own_runs_only",
        "no_delete",
    ):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    if args.folder is not None:
        argv += ["--folder", args.folder]
    for run in args.run:
        argv += ["--run", run]
    if args.offline is not None:
        argv += ["--offline"] + ([str(_absolute(Path(args.offline)))] if args.offline else [])
    return argv


def _memory_caps(args: argparse.Namespace) -> dict[str, int]:
    """The Settings memory caps of ``--cache-size``, ``--read-ahead``, ``--read-ahead-total``,
    ``--read-part-size`` and ``--read-streams``; UsageError (exit status 2, one line) for a
    bad or inconsistent value."""
    from simvuefs.config import memory_caps, parse_count, parse_size

    def size_of(flag: str) -> int | None:
        text = _given(args, flag)
        try:
            return None if text is None else parse_size(text)
        except ConfigError as exc:
            raise UsageError(f"{flag}: {exc}", exitcode=2) from None

    cache_size, read_ahead, read_ahead_total, part_size = map(size_of, MEMORY_FLAGS)
    streams_text = _given(args, READ_STREAMS_FLAG)
    try:
        streams = None if streams_text is None else parse_count(streams_text)
    except ConfigError as exc:
        raise UsageError(f"{READ_STREAMS_FLAG}: {exc}", exitcode=2) from None
    try:
        return memory_caps(
            cache_size=cache_size,
            read_ahead=read_ahead,
            read_ahead_total=read_ahead_total,
            read_part_size=part_size,
            read_streams=streams,
        )
    except ConfigError as exc:
        raise UsageError(str(exc), exitcode=2) from None


def _content_cache(args: argparse.Namespace) -> dict[str, object]:
    """The Settings of ``--cache-dir`` and ``--cache-dir-size``; UsageError (exit status 2,
    one line) for a bad size or a size without a directory."""
    from simvuefs.config import MIN_CONTENT_CACHE_SIZE, format_size, parse_size

    options: dict[str, object] = {}
    if args.cache_dir is not None:
        options["content_cache_dir"] = _absolute(args.cache_dir)
    if args.cache_dir_size is not None:
        if args.cache_dir is None:
            raise UsageError("--cache-dir-size needs --cache-dir", exitcode=2)
        try:
            size = parse_size(args.cache_dir_size)
        except ConfigError as exc:
            raise UsageError(f"--cache-dir-size: {exc}", exitcode=2) from None
        if size < MIN_CONTENT_CACHE_SIZE:
            raise UsageError(
                f"--cache-dir-size {format_size(size)} is less than "
                f"{format_size(MIN_CONTENT_CACHE_SIZE)}",
                exitcode=2,
            )
        options["content_cache_size"] = size
    return options


def _offline_settings(args: argparse.Namespace, spool_dir: Path | None) -> Settings:
    """Settings for ``--offline``: the cache directory, no server."""
    from simvuefs.config import Settings, parse_ttl, resolve_offline_directory

    if args.url is not None or args.profile is not None:
        raise UsageError("--offline mounts a cache, not a server: drop --url and --profile")
    if args.offline:
        cache = _absolute(Path(args.offline))
    else:
        cache = resolve_offline_directory(config_file=args.config)
    return Settings.for_offline(
        cache,
        **_memory_caps(args),
        **_content_cache(args),
        verify_content=not args.no_verify,
        delete_artifacts=not args.no_delete,
        metadata_ttl=parse_ttl(args.metadata_ttl),
        spool_dir=spool_dir,
        shutdown_upload_wait=args.upload_wait,
        request_timeout=args.request_timeout,
    )


def _selection(args: argparse.Namespace) -> RunSelection:
    from simvuefs.fuse.tree import RunSelection

    folder = args.folder
    if folder is not None and not folder.startswith("/"):
        raise UsageError(f"--folder {folder!r}: Simvue folder paths start with '/'")
    return RunSelection(folder=folder, runs=frozenset(args.run), own_only=args.own_runs_only)


def _settings(args: argparse.Namespace, mountpoint: Path) -> Settings:
    """The mount's Settings: the server's (or the offline cache's) and the options'."""
    from simvuefs.config import Settings, parse_ttl, resolve_server, token_reloader

    spool_dir = args.spool_dir and _absolute(args.spool_dir)
    if args.offline is not None:
        return _offline_settings(args, spool_dir)
    server = resolve_server(url=args.url, profile=args.profile, config_file=args.config)
    return Settings.from_server(
        server,
        mountpoint=mountpoint,
        **_memory_caps(args),
        **_content_cache(args),
        verify_content=not args.no_verify,
        delete_artifacts=not args.no_delete,
        metadata_ttl=parse_ttl(args.metadata_ttl),
        spool_dir=spool_dir,
        shutdown_upload_wait=args.upload_wait,
        request_timeout=args.request_timeout,
        token_reload=token_reloader(url=args.url, profile=args.profile, config_file=args.config),
    )


def _mount(args: argparse.Namespace) -> int:
    mountpoint = _absolute(args.mountpoint)
    if not args.foreground:
        _memory_caps(args)  # bad values fail here, before any daemon starts
        _content_cache(args)
        log_file = _absolute(args.log_file or default_log_file())
        try:
            mounts.start_mount(_daemon_argv(args, mountpoint, log_file), log_file)
        except OSError as exc:
            raise UsageError(f"cannot start the mount process: {exc}") from None
        return 0
    from simvuefs.fuse import mount

    readiness = Readiness(args.ready_fd)
    try:
        try:
            setup_logging(args.log_level, args.log_file)
        except OSError as exc:
            raise UsageError(f"cannot write the log file {args.log_file}: {exc.strerror}") from None
        settings = _settings(args, mountpoint)
        options = mount.MountOptions(
            mountpoint=mountpoint,
            read_only=args.read_only,
            allow_other=args.allow_other,
            debug_fuse=args.debug_fuse,
            remove_empty_spool=args.spool_dir is None,
            report_to_stderr=args.ready_fd is None,
            offline=args.offline is not None,
            selection=_selection(args),
        )
        mount.run(settings, options, readiness.ready)
    except UsageError as exc:
        readiness.failed(str(exc), exc.exitcode)
        raise
    except SimvueError as exc:
        readiness.failed(str(exc), 1)
        raise
    return 0


def _add_unmount(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "unmount",
        help="unmount a simvuefs mount",
        description=(
            "Unmount MOUNTPOINT with fusermount3 -u; if it is busy, detach it lazily (-uz) and "
            "say so. Also clears a dead mount (transport endpoint is not connected)."
        ),
    )
    parser.add_argument("mountpoint", type=Path)
    parser.set_defaults(handler=_unmount)


def _unmount(args: argparse.Namespace) -> int:
    note = mounts.unmount(_absolute(args.mountpoint))
    if note:
        print(f"simvuefs: {note}", file=sys.stderr)
    return 0


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="list the uploads a mount has not finished, and a live mount's counters",
        description=(
            "List the pending uploads of the mount at MOUNTPOINT (of every mount this user "
            "made, without MOUNTPOINT): run, name, size, failed attempts and the last error; "
            "for a live mount also its counters (server requests, retries and bytes, reads "
            "and block cache use, uploads), refreshed every few seconds. "
            "Works while the mount runs and after it is gone (pending uploads resume at the "
            "next mount of the same server at the same mount point). Reads the records in "
            "$XDG_STATE_HOME/simvuefs/mounts and the spool's journal; --spool-dir reads one "
            "spool directly."
        ),
    )
    parser.add_argument("mountpoint", type=Path, nargs="?")
    parser.add_argument("--spool-dir", type=Path, metavar="DIR", help="read this spool")
    parser.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    from simvuefs.control import status

    if args.spool_dir is not None:
        print(status.describe_spool(_absolute(args.spool_dir)), end="")
    elif args.mountpoint is not None:
        print(status.describe_mount(_absolute(args.mountpoint)), end="")
    else:
        print(status.describe_all(), end="")
    return 0


def _add_pending(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "pending",
        help="retry, export or drop the uploads a mount has not finished",
        description=(
            "Deal with files written into a mount that are not uploaded yet ('simvuefs "
            "status' lists them), above all those the server refused for good (FAILED: a "
            "name it rejects, a run that is not yours, a file over its size limit), which "
            "are kept and never retried on their own. Acts on the mount recorded at "
            "MOUNTPOINT, on the spool --spool-dir, or (neither given) on every mount with "
            "pending uploads. A running mount applies the change itself within seconds; "
            "otherwise the spool is changed here, for the next mount."
        ),
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def target_arguments(action: argparse.ArgumentParser) -> None:
        action.add_argument("mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT")
        action.add_argument("--spool-dir", type=Path, metavar="DIR", help="act on this spool")

    retry = actions.add_parser(
        "retry",
        help="attempt every pending upload again now (failed ones included)",
        description="Attempt every pending upload again: at once in a running mount, else at "
        "its next mount. Uploads the server refused for good are cleared and tried again.",
    )
    target_arguments(retry)
    export = actions.add_parser(
        "export",
        help="copy pending uploads out to DIR/<run id>/<category>/<name>, with a manifest",
        description="Copy every pending upload (failed or not) to DIR/<run id>/<category>/"
        "<name> and list them in DIR/manifest.json (run, category, name, size, sha256, "
        "state, last error, server). Never overwrites a file; exporting again is safe. "
        "The spool keeps its files until 'simvuefs pending drop'.",
    )
    export.add_argument("dest", type=Path, metavar="DIR", help="where to copy the files")
    target_arguments(export)
    drop = actions.add_parser(
        "drop",
        help="forget failed uploads (--all: every pending one) and delete their local copy",
        description="Forget the uploads the server refused for good (with --all: every "
        "pending upload not attached to its run yet) and delete their content from the "
        "spool. Refused unless each was exported with 'simvuefs pending export' and the "
        "copy is still there, or --yes is given.",
    )
    target_arguments(drop)
    drop.add_argument("--all", action="store_true", help="also uploads that are still retried")
    drop.add_argument("--yes", action="store_true", help="drop files that were not exported")
    parser.set_defaults(handler=_pending)


def _pending(args: argparse.Namespace) -> int:
    from simvuefs.control import export, pending

    spool_dir = args.spool_dir and _absolute(args.spool_dir)
    mountpoint = args.mountpoint and _absolute(args.mountpoint)
    chosen = pending.targets(mountpoint, spool_dir)
    if args.action == "retry":
        print(pending.retry(chosen), end="")
    elif args.action == "export":
        print(export.export(_absolute(args.dest), chosen), end="")
    else:
        print(pending.drop(chosen, everything=args.all, yes=args.yes), end="")
    return 0


def _add_cache(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cache",
        help="show or clean the content cache on disk (--cache-dir of the mounts)",
        description=(
            "Show the content cache DIR (without --cache-dir: those of the running mounts): "
            "its size and entries, and the hit and miss counters of the running mounts of "
            "this machine that use it. 'simvuefs cache clean' removes the least recently "
            "used entries until the cache holds at most --max-size (default: 0, all), safely "
            "while mounts use it."
        ),
    )
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="the content cache")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    clean = actions.add_parser(
        "clean",
        help="evict least recently used content down to --max-size",
        description="Remove the least recently used entries of the content cache until it "
        "holds at most --max-size (default: 0, everything).",
    )
    clean.add_argument(
        "--cache-dir", dest="clean_dir", type=Path, metavar="DIR", help="the content cache"
    )
    clean.add_argument("--max-size", default="0", metavar="SIZE", help="e.g. 10G (default: 0)")
    parser.set_defaults(handler=_cache)


def _cache(args: argparse.Namespace) -> int:
    from simvuefs.config import parse_size
    from simvuefs.control import cache

    given = getattr(args, "clean_dir", None) or args.cache_dir
    cache_dir = given and _absolute(given)
    if args.action == "clean":
        try:
            max_size = parse_size(args.max_size)
        except ConfigError as exc:
            raise UsageError(f"--max-size: {exc}", exitcode=2) from None
        print(cache.clean(cache_dir, max_size), end="")
    else:
        print(cache.describe(cache_dir), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="simvuefs", description="Mount a Simvue server's runs as directories."
    )
    parser.add_argument("--version", action="version", version=f"simvuefs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_mount(sub)
    _add_unmount(sub)
    _add_status(sub)
    _add_pending(sub)
    _add_cache(sub)
    _add_devserver(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line and exit with its status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        status = handler(args)
    except UsageError as exc:
        print(f"simvuefs: {exc}", file=sys.stderr)
        sys.exit(exc.exitcode)
    except SimvueError as exc:
        print(f"simvuefs: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status)
