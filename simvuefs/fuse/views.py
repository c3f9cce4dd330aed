"""The read-only views beside ``runs/``: ``by-id/``, ``folders/`` and ``tags/`` (pure layout).

Every view entry is a relative symbolic link to the run's directory in ``runs/``, so tools
that follow links (``cp -rL``, ``find -L``, ``tar -h``, any path through the link) see the
run itself:

- ``by-id/<run id>`` -> ``../runs/<run dir>``;
- ``folders/<folder parts as nested directories>/<run dir>`` -> ``../`` once per level
  plus ``runs/<run dir>`` (runs of the folder ``/`` sit in ``folders/`` itself);
- ``tags/<tag>/<run dir>`` -> ``../../runs/<run dir>``.

``<run dir>`` is the run's name in ``runs/`` (``<name>@<id>`` when a newer run has the
plain name), so a link always reaches the run it is named after. Folder parts are cleaned
like run name parts (control characters become U+FFFD) and tags are named like runs (``/``
becomes U+2215), by the rules of ``names.py``. Entries whose name cannot be shown
(:func:`~simvuefs.fuse.names.name_problem`) or is taken (a subfolder keeps its name over a
run link of the same name; two tags with one mapped name: the first in sorted order) are
left out and reported as problems.

The layout is built from the runs listing only (the names under ``runs/``), so the views
show exactly the runs of the mount's selection and refresh with that listing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from simvuefs.fuse.names import Problem, clean_part, join_path, name_problem, run_base_name
from simvuefs.models import Run

BY_ID_DIR = "by-id"
FOLDERS_DIR = "folders"
TAGS_DIR = "tags"
RUNS_DIR = "runs"


def link_target(depth: int, run_dir: str) -> str:
    """The relative target of a link *depth* directories below the mount root."""
    return "../" * depth + f"{RUNS_DIR}/{run_dir}"


def folder_depth(path: str) -> int:
    """How many directories below the mount root a link in ``folders/<path>`` sits."""
    return 1 + (path.count("/") + 1 if path else 0)


@dataclass(frozen=True)
class Folder:
    """One directory of ``folders/``: its subfolders' names and its run links."""

    folders: set[str] = field(default_factory=set)
    runs: dict[str, Run] = field(default_factory=dict)


@dataclass(frozen=True)
class Views:
    """The whole layout: *run_dirs* maps run id -> name in ``runs/``; *by_id* link name ->
    run; *folders* folder path (mapped parts joined by ``/``, ``""`` for ``folders/``) ->
    Folder; *tags* tag directory name -> (tag, {link name: run}); *tag_dirs* tag -> its
    directory name."""

    run_dirs: Mapping[str, str]
    by_id: Mapping[str, Run]
    folders: Mapping[str, Folder]
    tags: Mapping[str, tuple[str, Mapping[str, Run]]]
    tag_dirs: Mapping[str, str]


def build_views(listed: Mapping[str, Run]) -> tuple[Views, list[Problem]]:
    """Lay out the views of the runs *listed* under ``runs/`` (name -> run)."""
    problems: list[Problem] = []
    run_dirs = {run.id: name for name, run in listed.items()}
    by_id: dict[str, Run] = {}
    folders: dict[str, Folder] = {"": Folder()}
    links: list[tuple[str, str, Run]] = []
    tags: dict[str, tuple[str, dict[str, Run]]] = {}
    for name, run in sorted(listed.items()):
        what = f"run {run.id} ({run.name!r})"
        if name_problem(run.id) is None:
            by_id[run.id] = run
        else:
            problems.append((f"{what} in {BY_ID_DIR}/", "its id is not a usable name"))
        path = _add_folder(folders, run.folder)
        if path is None:
            problems.append((f"{what} in {FOLDERS_DIR}/", f"folder {run.folder!r}"))
        else:
            links.append((path, name, run))
        for tag in sorted(set(run.tags)):
            tag_dir = run_base_name(tag)
            reason = name_problem(tag_dir)
            entry = tags.setdefault(tag_dir, (tag, {})) if reason is None else None
            if entry is None or entry[0] != tag:
                problems.append((f"tag {tag!r}", reason or "name already taken"))
                continue
            entry[1][name] = run
    for path, name, run in links:
        folder = folders[path]
        if name in folder.folders:
            problems.append((f"run {run.id} ({run.name!r}) in {FOLDERS_DIR}/", "name taken"))
            continue
        folder.runs[name] = run
    tag_dirs = {tag: name for name, (tag, _) in tags.items()}
    return Views(run_dirs, by_id, folders, tags, tag_dirs), problems


def _add_folder(folders: dict[str, Folder], folder: str) -> str | None:
    """Make the directories of Simvue folder *folder*; return its path, None if unshowable."""
    parts = [clean_part(part) for part in folder.split("/") if part]
    if any(name_problem(part) is not None for part in parts):
        return None
    path = ""
    for part in parts:
        folders[path].folders.add(part)
        path = join_path(path, part)
        folders.setdefault(path, Folder())
    return path
