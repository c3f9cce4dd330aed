"""Directory semantics: what each directory contains and what its entries are called.

The tree is ``/runs/<run>/<input|output|code>/<artifact name>``. Names come from the server
and are not always usable as file names, so they are mapped like this (SEMANTICS.md has the
user-facing version):

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
  with a name already taken) are left out, with one warning per object in the log.

Listings are fetched through :class:`simvuefs.cache.MetaCache`: ``runs/`` costs one
``list_runs`` per metadata TTL, a category directory (and every directory below it) one
``list_artifacts(run, category)`` per TTL (``finished_run_ttl`` once the run is finished).
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from simvuefs.cache import MetaCache
from simvuefs.errors import NotFound
from simvuefs.inodes import ROOT_INODE, InodeTable, Node, NodeKind
from simvuefs.models import CATEGORIES, Artifact, Run

if TYPE_CHECKING:
    from simvuefs.client import SimvueClient
    from simvuefs.config import Settings

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
RUN_SLASH = "\u2215"
"""Stands for ``/`` in run directory names."""
REPLACEMENT = "\ufffd"
"""Stands for characters a file name must not (or should not) contain."""
ALIAS_SEPARATOR = "@"
MAX_NAME_BYTES = 255

# How many category listings and artifact sizes to remember (both are small records).
LISTINGS_CACHED = 4096
SIZES_CACHED = 65536
# Warnings about unshowable names are logged once per object; forget them past this many.
WARNED_MAX = 10000

_OLDEST = datetime.min.replace(tzinfo=UTC)

Problem = tuple[str, str]
"""An object that could not be shown (a description) and why."""


def clean_part(text: str) -> str:
    """Replace control characters, NUL and unpaired surrogates in *text* with U+FFFD."""
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


def _newest_first(created: datetime | None, ident: str) -> tuple[datetime, str]:
    return (created or _OLDEST, ident)


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
        base, sep, run_id = name.rpartition(ALIAS_SEPARATOR)
        if not sep:
            return None
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
    listed: dict[str, Run] = {}
    problems: list[Problem] = []
    aliases: list[tuple[str, Run]] = []
    for base in sorted(groups):
        group = sorted(groups[base], key=lambda r: _newest_first(r.created, r.id), reverse=True)
        first, *others = group
        if name_problem(base) is None:
            listed[base] = first
        else:
            aliases.append((f"{base}{ALIAS_SEPARATOR}{first.id}", first))
        aliases.extend((f"{base}{ALIAS_SEPARATOR}{run.id}", run) for run in others)
    for name, run in aliases:
        problem = name_problem(name) or ("name already taken" if name in listed else None)
        if problem is not None:
            problems.append((f"run {run.id} ({run.name!r})", problem))
            continue
        listed[name] = run
    return RunNames(listed, by_id), problems


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a category directory or below: a file (*artifact*) or a directory.

    *path* is the directory's own path below the category (for directories) or the path of
    the directory holding the file (for files); ``""`` is the category directory itself.
    """

    artifact: Artifact | None
    path: str


def _join(path: str, part: str) -> str:
    return f"{path}/{part}" if path else part


@dataclass(frozen=True)
class CategoryListing:
    """Every directory of one category of one run: ``dirs[path][name] -> Entry``."""

    dirs: Mapping[str, Mapping[str, Entry]]

    def entries(self, path: str) -> Mapping[str, Entry]:
        """Return the entries of the directory at *path* (empty if there is none)."""
        return self.dirs.get(path, {})


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
        what = f"artifact {artifact.id} ({artifact.name!r})"
        parts = [clean_part(part) for part in artifact.name.split("/") if part]
        if not parts:
            problems.append((what, "empty name"))
            continue
        problem = next((p for p in map(name_problem, parts) if p is not None), None)
        if problem is not None:
            problems.append((what, problem))
            continue
        path = ""
        for part in parts[:-1]:
            subdirs[path].add(part)
            path = _join(path, part)
            subdirs.setdefault(path, set())
        files.setdefault(path, {}).setdefault(parts[-1], []).append(artifact)

    dirs: dict[str, dict[str, Entry]] = {
        path: {name: Entry(None, _join(path, name)) for name in names}
        for path, names in subdirs.items()
    }
    for path, by_name in files.items():
        entries = dirs[path]
        aliases: list[tuple[str, Artifact]] = []
        for leaf in sorted(by_name):
            group = sorted(
                by_name[leaf], key=lambda a: _newest_first(a.created, a.id), reverse=True
            )
            first, *others = group
            if leaf in entries:
                aliases.append((f"{leaf}{ALIAS_SEPARATOR}{first.id}", first))
            else:
                entries[leaf] = Entry(first, path)
            aliases.extend((f"{leaf}{ALIAS_SEPARATOR}{a.id}", a) for a in others)
        for name, artifact in aliases:
            problem = name_problem(name) or ("name already taken" if name in entries else None)
            if problem is not None:
                problems.append((f"artifact {artifact.id} ({artifact.name!r})", problem))
                continue
            entries[name] = Entry(artifact, path)
    return CategoryListing(dirs), problems


class Tree:
    """The directory structure of a mount, backed by the server through cached listings.

    Nodes handed out are owned by :attr:`table`; this class sets their run/category/artifact
    fields from the freshest listing each time it produces them. Cache expiry follows
    ``trio.current_time`` (so ``trio.testing.MockClock`` drives it in tests).
    """

    def __init__(self, client: SimvueClient, settings: Settings) -> None:
        self.table = InodeTable()
        self._client = client
        self._settings = settings
        self._runs: MetaCache[str, RunNames] = MetaCache(1)
        self._listings: MetaCache[tuple[str, str], CategoryListing] = MetaCache(LISTINGS_CACHED)
        self._sizes: MetaCache[str, int] = MetaCache(SIZES_CACHED)
        self._warned: set[Problem] = set()

    # -- timeouts -------------------------------------------------------------------------

    def listing_ttl(self, run: Run | None) -> float:
        """Seconds a listing under *run* (or of ``runs/`` for None) is trusted."""
        ttl = self._settings.metadata_ttl
        if run is not None and run.is_finished:
            return max(ttl, self._settings.finished_run_ttl)
        return ttl

    # -- listings -------------------------------------------------------------------------

    async def children(self, node: Node) -> list[tuple[str, Node]]:
        """Return the ``(name, node)`` entries of directory *node*, sorted by inode."""
        pairs: list[tuple[str, Node]]
        if node.kind is NodeKind.ROOT:
            pairs = [(RUNS_DIR, self.runs_node())]
        elif node.kind is NodeKind.RUNS:
            names = await self._run_names()
            pairs = [(name, self._run_node(run)) for name, run in names.listed.items()]
        elif node.kind is NodeKind.RUN:
            pairs = [(category, self._category_node(node, category)) for category in CATEGORIES]
        elif node.kind in (NodeKind.CATEGORY, NodeKind.DIR):
            listing = await self._listing(node)
            pairs = [
                (name, self._entry_node(node, entry))
                for name, entry in listing.entries(node.prefix).items()
            ]
        else:
            raise NotADirectoryError(f"inode {node.inode} is not a directory")
        pairs.sort(key=lambda pair: pair[1].inode)
        return pairs

    async def lookup(self, parent: Node, name: str) -> Node | None:
        """Return the node called *name* in directory *parent*, or None if there is none."""
        if parent.kind is NodeKind.ROOT:
            return self.runs_node() if name == RUNS_DIR else None
        if parent.kind is NodeKind.RUNS:
            run = (await self._run_names()).find(name)
            return None if run is None else self._run_node(run)
        if parent.kind is NodeKind.RUN:
            return self._category_node(parent, name) if name in CATEGORIES else None
        if parent.kind in (NodeKind.CATEGORY, NodeKind.DIR):
            entry = (await self._listing(parent)).entries(parent.prefix).get(name)
            return None if entry is None else self._entry_node(parent, entry)
        raise NotADirectoryError(f"inode {parent.inode} is not a directory")

    async def refresh(self, node: Node) -> None:
        """Bring a run node's record up to date from the (cached) runs listing."""
        if node.kind is not NodeKind.RUN or node.run is None:
            return
        run = (await self._run_names()).by_id.get(node.run.id)
        if run is not None:
            node.run = run

    async def exact_size(self, node: Node) -> int:
        """Return the real content size of file *node*, asking the server once if needed.

        The server reports ``len + 33`` for object artifacts, so their size comes from
        ``client.content_length``; sizes are remembered per artifact id (immutable).
        """
        if node.size is not None:
            return node.size
        artifact = node.artifact
        if artifact is None:
            raise IsADirectoryError(f"inode {node.inode} is not a file")
        client = self._client
        size = await self._sizes.get_or_load(
            artifact.id, lambda: client.content_length(artifact), math.inf
        )
        node.size = size
        return size

    def known_size(self, node: Node) -> int | None:
        """Return the real size of file *node* if known without a request."""
        if node.size is None and node.artifact is not None:
            node.size = self._sizes.get_nowait(node.artifact.id)
        return node.size

    # -- nodes ----------------------------------------------------------------------------

    def runs_node(self) -> Node:
        """Return the ``runs/`` node."""
        return self.table.ensure(("runs",), NodeKind.RUNS, ROOT_INODE)

    def _run_node(self, run: Run) -> Node:
        node = self.table.ensure(("run", run.id), NodeKind.RUN, self.runs_node().inode)
        node.run = run
        return node

    def _category_node(self, run_node: Node, category: str) -> Node:
        assert run_node.run is not None
        key = ("category", run_node.run.id, category)
        node = self.table.ensure(key, NodeKind.CATEGORY, run_node.inode)
        node.run = run_node.run
        node.category = category
        return node

    def _entry_node(self, parent: Node, entry: Entry) -> Node:
        assert parent.run is not None
        assert parent.category is not None
        run_id = parent.run.id
        artifact = entry.artifact
        if artifact is None:
            key = ("dir", run_id, parent.category, entry.path)
            node = self.table.ensure(key, NodeKind.DIR, parent.inode)
            node.prefix = entry.path
        else:
            key = ("artifact", run_id, parent.category, artifact.id)
            node = self.table.ensure(key, NodeKind.FILE, parent.inode)
            node.artifact = artifact
            if node.size is None and not artifact.is_object:
                node.size = artifact.size
        node.run = parent.run
        node.category = parent.category
        return node

    async def _run_names(self) -> RunNames:
        async def load() -> RunNames:
            names, problems = name_runs(await self._client.list_runs())
            self._warn(problems, "runs/")
            return names

        return await self._runs.get_or_load(RUNS_DIR, load, self.listing_ttl(None))

    async def _listing(self, node: Node) -> CategoryListing:
        run, category = node.run, node.category
        assert run is not None
        assert category is not None

        async def load() -> CategoryListing:
            try:
                artifacts = await self._client.list_artifacts(run.id, category)
            except NotFound:
                # Servers answer 404 for "no artifacts" as well as for "no such run".
                artifacts = []
            listing, problems = name_artifacts(artifacts)
            self._warn(problems, f"run {run.id} {category}/")
            return listing

        return await self._listings.get_or_load((run.id, category), load, self.listing_ttl(run))

    def _warn(self, problems: list[Problem], where: str) -> None:
        for problem in problems:
            if problem in self._warned:
                continue
            if len(self._warned) >= WARNED_MAX:
                self._warned.clear()
            self._warned.add(problem)
            log.warning("not shown in %s: %s: %s", where, problem[0], problem[1])
