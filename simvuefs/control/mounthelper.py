"""``mount.simvuefs``: the mount(8) helper, so that ``mount -t fuse.simvuefs`` and fstab work.

mount(8) (libmount) runs ``/sbin/mount.fuse.simvuefs SOURCE MOUNTPOINT [-n] [-s] [-v]
[-o OPTIONS]`` for ``-t fuse.simvuefs``; that name is a symlink to this console script
(README, "mount and fstab"). The helper maps the comma-separated fstab options to
``simvuefs mount`` flags and execs the daemonising ``simvuefs mount``, which returns once
the mount answers, so mount(8) returns when the mount is ready. SOURCE is ignored (write
``simvuefs``). libmount itself drops ``x-*`` and ``comment=`` options; the helper ignores
the generic ones mount(8) passes on (``_netdev``, ``nofail``, ``rw``, ``nosuid`` ...). An
unknown option is a one-line error with exit status 1 (``-s``, sloppy: a warning instead).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from simvuefs.logs import UsageError

IGNORED = frozenset(
    {
        "_netdev",
        "nofail",
        "rw",
        "defaults",
        "auto",
        "noauto",
        "user",
        "users",
        "nosuid",
        "nodev",
        "noexec",
        "exec",
    }
)
"""Generic mount(8) options that mean nothing to simvuefs (it is always nosuid, nodev)."""
IGNORED_PREFIXES = ("x-systemd.", "comment=")

FLAGS = {
    "ro": "--read-only",
    "read_only": "--read-only",
    "allow_other": "--allow-other",
    "no_verify": "--no-verify",
    "no_delete": "--no-delete",
    "own_runs_only": "--own-runs-only",
}
"""Options without a value, and the flag each becomes."""
VALUED = {
    "config": "--config",
    "profile": "--profile",
    "metadata_ttl": "--metadata-ttl",
    "request_timeout": "--request-timeout",
    "upload_wait": "--upload-wait",
    "folder": "--folder",
    "run": "--run",
    "log_file": "--log-file",
    "log_level": "--log-level",
    "spool_dir": "--spool-dir",
    "cache_size": "--cache-size",
    "read_ahead": "--read-ahead",
    "read_ahead_total": "--read-ahead-total",
    "cache_dir": "--cache-dir",
    "cache_dir_size": "--cache-dir-size",
    "read_part_size": "--read-part-size",
    "read_streams": "--read-streams",
}
"""Options of the form ``name=value``, and the flag each becomes (``run=`` may repeat)."""
NOT_OPTIONS = {
    "--foreground": "mount(8) waits for the helper, so the mount always runs as a daemon",
    "--debug-fuse": "libfuse's trace of every request is for debugging a foreground mount",
    "--url": "a server needs its token, which never goes into fstab: config= names both",
    "--ready-fd": "internal: the pipe between the daemonising command and its mount process",
}
"""``simvuefs mount`` flags deliberately not reachable as mount options, and why. Every other
flag is an option above (or ``offline``/``offline=DIR``); a test checks both tables against
the command's parser."""


def option_flags(options: str, *, sloppy: bool = False) -> list[str]:
    """Return the ``simvuefs mount`` flags for a comma-separated mount(8) option string.

    Raises UsageError for an unknown option (unless *sloppy*: then it is skipped with a
    warning on stderr) and for an option given without its value or with one it takes none.
    """
    flags: list[str] = []
    for option in filter(None, options.split(",")):
        name, has_value, value = option.partition("=")
        if option in IGNORED or option.startswith(IGNORED_PREFIXES):
            continue
        if name == "offline":
            flags += ["--offline", value] if value else ["--offline"]
        elif name in FLAGS and not has_value:
            flags.append(FLAGS[name])
        elif name in VALUED and has_value and value:
            flags += [VALUED[name], value]
        elif name in FLAGS or name in VALUED:
            takes = "takes no value" if name in FLAGS else "needs a value"
            raise UsageError(f"mount option {name!r} {takes}")
        elif sloppy:
            print(f"mount.simvuefs: ignoring unknown option {option!r}", file=sys.stderr)
        else:
            raise UsageError(f"unknown mount option {option!r}")
    return flags


def mount_argv(argv: Sequence[str]) -> list[str]:
    """Return the ``simvuefs`` arguments for the helper's own arguments (mount(8) order:
    SOURCE MOUNTPOINT, then ``-n``, ``-s``, ``-v``, ``-o OPTIONS`` in any order; ``-oOPTS``
    and repeated ``-o`` are accepted)."""
    positional: list[str] = []
    options: list[str] = []
    sloppy = verbose = False
    words = iter(argv)
    for word in words:
        if word == "-o":
            options.append(next(words, ""))
        elif word.startswith("-o"):
            options.append(word[2:])
        elif word in ("-n", "-s", "-v"):
            sloppy = sloppy or word == "-s"
            verbose = verbose or word == "-v"
        elif word.startswith("-"):
            raise UsageError(f"unknown argument {word!r}")
        else:
            positional.append(word)
    if len(positional) != 2:
        raise UsageError("usage: mount.simvuefs simvuefs MOUNTPOINT [-n] [-s] [-v] [-o OPTIONS]")
    flags = [flag for text in options for flag in option_flags(text, sloppy=sloppy)]
    arguments = ["mount", positional[1], *flags]
    if verbose:
        print("mount.simvuefs: simvuefs " + " ".join(arguments), file=sys.stderr)
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    """Exec ``python -m simvuefs mount ...`` for mount(8)'s arguments (*argv* without the
    program name); a bad argument is one line on stderr and exit status 1."""
    try:
        arguments = mount_argv(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"mount.simvuefs: {exc}", file=sys.stderr)
        sys.exit(1)
    os.execv(sys.executable, [sys.executable, "-m", "simvuefs", *arguments])
