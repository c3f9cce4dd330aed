"""The Python API: ``with simvuefs.mounted(path, ...) as root:`` mounts for a ``with`` block.

The mount is made by the real command line (``python -m simvuefs mount PATH --foreground
--ready-fd N``) in a child process of its own session, started by the same function as
``simvuefs mount`` starts its daemon (``control.mounts.start_mount``), so the API and the
command behave the same. Invariants:

- The token never appears on a command line: it goes to the child as ``SIMVUE_TOKEN``
  (``ps`` shows every process's arguments to every user). The URL goes as ``SIMVUE_URL``
  too, so an explicit ``url=`` wins over one in the environment, as ``--url`` would not.
- ``mounted`` returns only once the mount answers requests, or raises :class:`MountError`
  with the command's one-line message (nothing is left mounted or running then).
- Leaving the block, normally or by an exception, unmounts as ``simvuefs unmount`` does and
  waits for the mount process to finish (its uploads in progress get ``upload_wait``
  seconds, as at any unmount); an unmount failure is raised as :class:`MountError` unless
  the block is already raising.

This module imports nothing of the FUSE side, so ``import simvuefs`` stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from simvuefs.config import DEFAULT_UPLOAD_WAIT
from simvuefs.control.mounts import ExitedEarly, MountProcess, StartFailed, start_mount, unmount
from simvuefs.logs import UsageError

EXIT_MARGIN = 30.0
"""How much longer than the upload wait the mount process may take to exit after unmount."""


class MountError(Exception):
    """A mount could not be made or undone; the message is one line, without the token."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def mount_argv(
    path: Path,
    *,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    offline: str | os.PathLike[str] | bool | None = None,
    log_file: Path,
    options: Mapping[str, object],
) -> list[str]:
    """Return the ``simvuefs mount`` arguments (without the program) for these options.

    *options* are the command's long options by their Python names: ``True`` adds the flag
    (``read_only=True`` -> ``--read-only``), ``False``/None leaves it out, a list repeats
    it, anything else is its value (``metadata_ttl=5`` -> ``--metadata-ttl 5``).
    """
    argv = ["mount", str(path), "--foreground", "--log-file", str(log_file)]
    if config is not None:
        argv += ["--config", os.fspath(Path(config).absolute())]
    if profile is not None:
        argv += ["--profile", profile]
    if offline is True or offline == "":
        argv.append("--offline")
    elif offline not in (None, False):
        assert not isinstance(offline, bool)
        argv += ["--offline", os.fspath(Path(offline).absolute())]
    for name, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(_flag(name))
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [_flag(name), str(item)]
        else:
            argv += [_flag(name), str(value)]
    return argv


def _start(argv: list[str], env: dict[str, str], log_file: Path) -> MountProcess:
    """Start the mount process and return it once it reports ``ready``; MountError if not."""
    try:
        return start_mount(argv, log_file, env=env)
    except ExitedEarly as exc:
        message = exc.last_logged or f"the mount process failed (log: {log_file})"
    except StartFailed as exc:
        message = str(exc)
    raise MountError(message.removeprefix("simvuefs: "))


def _stop(path: Path, process: MountProcess, wait: float) -> str | None:
    """Unmount *path* and wait for *process*; return what went wrong, if anything."""
    problem = None
    try:
        unmount(path)
    except UsageError as exc:
        problem = str(exc)
    if not process.end(wait + EXIT_MARGIN):
        problem = problem or f"the mount process of {path} did not exit and was killed"
    return problem


@contextmanager
def mounted(
    path: str | os.PathLike[str],
    *,
    url: str | None = None,
    token: str | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    offline: str | os.PathLike[str] | bool | None = None,
    log_file: str | os.PathLike[str] | None = None,
    **options: object,
) -> Iterator[Path]:
    """Mount a Simvue server (or, with *offline*, an offline cache) at *path* for a block.

    Yields *path* as an absolute :class:`pathlib.Path`; ``root / "runs"`` holds the runs.
    *url*, *token*, *config* and *profile* are found like the command's (environment,
    then ``simvue.toml``) when not given. *offline*: True for the default cache, or its
    directory. *options* are further ``simvuefs mount`` options by Python name, e.g.
    ``read_only=True, metadata_ttl=5, cache_size="64MiB"``. The log goes to *log_file*
    (default: ``$XDG_STATE_HOME/simvuefs/mount.log``). Raises MountError (one line).
    """
    root = Path(os.path.realpath(path))
    env = dict(os.environ)
    if url is not None:
        env["SIMVUE_URL"] = url
    if token is not None:
        env["SIMVUE_TOKEN"] = token
    if log_file is None:
        from simvuefs.cli import default_log_file

        log_path = default_log_file()
    else:
        log_path = Path(log_file).absolute()
    argv = mount_argv(
        root, config=config, profile=profile, offline=offline, log_file=log_path, options=options
    )
    process = _start(argv, env, log_path)
    wait = float(str(options.get("upload_wait", DEFAULT_UPLOAD_WAIT)))
    try:
        yield root
    except BaseException:
        _stop(root, process, wait)
        raise
    problem = _stop(root, process, wait)
    if problem is not None:
        raise MountError(problem)
