"""Naming rules: what the server's runs and artifacts are called in the mount (pure, no I/O).

Names come from the server and are not always usable as file names, so they are mapped like
this (SEMANTICS.md has the user-facing version):

- Run names: ``/`` becomes U+2215 DIVISION SLASH ``∕`` (reversible: the Simvue client only
  accepts ASCII names). Control characters (and NUL, and unpaired surrogates) become U+FFFD
  ``�`` in run names and artifact name parts alike.
- Duplicated run names: the newest run (largest ``created``, ties broken by the larger id)
  shows the plain name; the others are listed as ``<name>@<run id>``. Every run can also be
  looked up (not listed) as ``<name>@<run id>``.
- Artifact names containing ``/`` become nested directories; empty parts are dropped
  (``a//b`` and ``/a/b`` are ``a/b``). Artifacts with the same name in one directory follow
  the run rule (``<name>@<artifact id>`` for all but the newest), and when a file and a
  directory want the same name, the directory keeps it and the file gets ``@<artifact id>``.
- Names that still cannot be shown (empty, ``.``, ``..``, longer than 255 bytes, or clashing
  with a name already taken) are left out and returned as problems; the caller logs them.

Invariant: every name these functions hand out passes :func:`name_problem`, and no two
entries of one directory share a name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from simvuefs.models import Artifact, Run

if TYPE_CHECKING:
    from simvuefs.write.staged import StagedFile

RUN_SLASH = "\u2215"
"""Stands for ``/`` in run directory names."""
REPLACEMENT = "\ufffd"
"""Stands for characters a file name must not (or should not) contain."""
ALIAS_SEPARATOR = "@"
"""Joins a name and an id: ``<name>@<id>`` names a run or artifact whose name is taken."""
MAX_NAME_BYTES = 255
"""The longest directory entry name (bytes of UTF-8), as for most Linux filesystems."""

Problem = tuple[str, str]
"""An object that could not be shown (a description) and why."""


class _Named(Protocol):
    """What naming needs of a run or an artifact."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def created(self) -> datetime | None: ...


Record = TypeVar("Record", bound=_Named)

_OLDEST = datetime.min.replace(tzinfo=UTC)


def join_path(path: str, part: str) -> str:
    """Return the path of *part* in the directory *path* (``""`` is the category directory)."""
    return f"{path}/{part}" if path else part


def alias_name(name: str, ident: str) -> str:
    """Return ``<name>@<ident>``, the name of the object *ident* when *name* is taken."""
    return f"{name}{ALIAS_SEPARATOR}{ident}"


def split_alias(name: str) -> tuple[str, str] | None:
    """Return ``(name, id)`` of an :func:`alias_name`, or None if *name* has no ``@``."""
    base, sep, ident = name.rpartition(ALIAS_SEPARATOR)
    return (base, ident) if sep else None


def clean_part(text: str) -> str:
    """Replace control characters, NUL and unpaired surrogates in *text* with U+FFFD."""
    if text.isprintable():  # none of those (they are all "Other"): keep the string itself
        return text
    return "".join(REPLACEMENT if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)


def run_base_name(name: str) -> str:
    """Return the directory name for a run called *name* (before duplicate handling)."""
    return clean_part(name).replace("/", RUN_SLASH)


def name_problem(name: str) -> str | None:
    """Return why *name* cannot be a directory entry, or None if it can."""
    if name in ("", ".", ".."):
        return f"{name!r} is not a usable file name"
    if "/" in name:
        return "contains '/'"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


def _newest_first(record: _Named) -> tuple[datetime, str]:
    return (record.created or _OLDEST, record.id)


def _share_names(
    groups: Mapping[str, list[Record]], taken: Callable[[str], bool], kind: str
) -> tuple[dict[str, Record], list[Problem]]:
    """Name the records of *groups* (wanted name -> records of that name).

    The newest record of a group gets the plain name unless *taken* says it cannot; every
    other record gets its alias. Aliases that cannot be shown or are taken become problems.
    """
    named: dict[str, Record] = {}
    aliases: list[tuple[str, Record]] = []
    for base in sorted(groups):
        first, *others = sorted(groups[base], key=_newest_first, reverse=True)
        if taken(base):
            aliases.append((alias_name(base, first.id), first))
        else:
            named[base] = first
        aliases.extend((alias_name(base, record.id), record) for record in others)
    problems: list[Problem] = []
    for name, record in aliases:
        problem = name_problem(name)
        if problem is None and (name in named or taken(name)):
            problem = "name already taken"
        if problem is not None:
            problems.append((f"{kind} {record.id} ({record.name!r})", problem))
            continue
        named[name] = record
    return named, problems


@dataclass(frozen=True)
class RunNames:
    """The names under ``runs/``: *listed* maps each shown name to its run."""

    listed: Mapping[str, Run]
    by_id: Mapping[str, Run]

    def find(self, name: str) -> Run | None:
        """Return the run called *name* in ``runs/``, including the ``<name>@<id>`` aliases."""
        run = self.listed.get(name)
        if run is not None:
            return run
        alias = split_alias(name)
        if alias is None:
            return None
        base, run_id = alias
        run = self.by_id.get(run_id)
        if run is not None and run_base_name(run.name) == base:
            return run
        return None


def name_runs(runs: Iterable[Run]) -> tuple[RunNames, list[Problem]]:
    """Give every run a directory name (see the module docstring for the rules)."""
    by_id: dict[str, Run] = {}
    for run in runs:
        by_id.setdefault(run.id, run)
    groups: dict[str, list[Run]] = {}
    for run in by_id.values():
        groups.setdefault(run_base_name(run.name), []).append(run)
    listed, problems = _share_names(groups, lambda name: name_problem(name) is not None, "run")
    return RunNames(listed, by_id), problems


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a category directory or below: a file (*artifact* from the server, or
    *local*, written through this mount) or a directory (neither).

    *path* is the directory's own path below the category (for directories) or the path of
    the directory holding the file (for files); ``""`` is the category directory itself.
    """

    artifact: Artifact | None
    path: str
    local: StagedFile | None = None

    @property
    def is_dir(self) -> bool:
        """True for a directory entry."""
        return self.artifact is None and self.local is None


class Directory(Mapping[str, Entry]):
    """The entries of one directory of a listing, *path* below the category.

    Its files are kept as their records and their entries made when asked for: a listing is
    kept for as long as it is used, and an :class:`Entry` per file would cost about 56 bytes
    each for all that time (docs/reliability.md "Memory and files written"). Invariant: no
    name is both a file and a directory.
    """

    __slots__ = ("path", "_files", "_dirs")

    def __init__(self, path: str, files: Mapping[str, Artifact], dirs: Mapping[str, Entry]):
        self.path = path
        self._files = files
        self._dirs = dirs

    def __getitem__(self, name: str) -> Entry:
        artifact = self._files.get(name)
        return self._dirs[name] if artifact is None else Entry(artifact, self.path)

    def __contains__(self, name: object) -> bool:
        return name in self._files or name in self._dirs

    def __iter__(self) -> Iterator[str]:
        yield from self._dirs
        yield from self._files

    def __len__(self) -> int:
        return len(self._dirs) + len(self._files)


_EMPTY = Directory("", {}, {})


@dataclass(frozen=True)
class CategoryListing:
    """Every directory of one category of one run: ``dirs[path][name] -> Entry``."""

    dirs: Mapping[str, Directory]

    def entries(self, path: str) -> Mapping[str, Entry]:
        """Return the entries of the directory at *path* (empty if there is none)."""
        return self.dirs.get(path, _EMPTY)


def name_artifacts(artifacts: Iterable[Artifact]) -> tuple[CategoryListing, list[Problem]]:
    """Lay the artifacts of one category out as directories (rules in the module docstring)."""
    problems: list[Problem] = []
    subdirs: dict[str, set[str]] = {"": set()}
    files: dict[str, dict[str, list[Artifact]]] = {}
    seen: set[str] = set()
    for artifact in artifacts:
        if artifact.id in seen:
            continue
        seen.add(artifact.id)
        parts = [clean_part(part) for part in artifact.name.split("/") if part]
        problem = (
            next((p for p in map(name_problem, parts) if p is not None), None)
            if parts
            else "empty name"
        )
        if problem is not None:
            problems.append((f"artifact {artifact.id} ({artifact.name!r})", problem))
            continue
        path = ""
        for part in parts[:-1]:
            subdirs[path].add(part)
            path = join_path(path, part)
            subdirs.setdefault(path, set())
        files.setdefault(path, {}).setdefault(parts[-1], []).append(artifact)

    dirs = {
        path: {name: Entry(None, join_path(path, name)) for name in names}
        for path, names in subdirs.items()
    }
    shown: dict[str, Directory] = {}
    for path, entries in dirs.items():
        named, clashes = _share_names(files.get(path, {}), entries.__contains__, "artifact")
        problems.extend(clashes)
        shown[path] = Directory(path, named, entries)
    return CategoryListing(shown), problems
