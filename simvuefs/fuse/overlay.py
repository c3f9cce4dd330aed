"""Directory entries, and what this mount wrote shown on top of the server's listing.

Pure bookkeeping, no I/O. Entries (:class:`~simvuefs.fuse.names.Entry`) are names in a
category directory or below. One :class:`LocalFiles` per ``(run id, category)`` holds:

- *files*: files written through the mount, by full name (``system/mesh.dat``), from
  ``create`` until a listing of the server accounts for their artifact: STAGED and PENDING
  files, and LANDED ones until a listing shows their artifact or one asked after their
  landing comes (read-your-writes: a listing asked before the landing must not make a file
  vanish for a metadata TTL; one asked after it is the server's word, and a file it leaves
  out was deleted or moved to another category by another client meanwhile: kept, it would
  be a phantom, listed and in the way of a new file of its name, until the unmount);
- *landings*: the landing number (:meth:`LocalFiles.landed`, in the order of the tree's
  landings) of each LANDED file of *files* shown under the name it landed with;
- *dirs*: directories made with ``mkdir`` (shown while empty, until ``rmdir``);
- *hidden*: ids of artifacts that a rename or an overwrite replaced, or ``rm`` deleted (the
  uploader deletes them; until then the server, or a cached listing, may still list them);
- *removed_dirs*: directories removed with ``rmdir`` that a cached listing may still show
  (their artifacts are all hidden); cleared when a fresh listing comes, which leaves out the
  hidden artifacts and so the directories only they made.

Invariants: every name of *landings* is a name of *files* (``add_file`` and ``remove_file``
drop it: a file shown under a name it did not land with, a rename under way, has none);
``_implied`` counts, for every directory path, the files and made directories at
or below it, so "is there a local directory here" is one dictionary lookup.

Merge rules (:func:`merge_entries` for a whole directory, :func:`merge_entry` for one name;
they always agree): hidden artifacts and removed directories are left out; a directory wins
over a file of the same name; a local file replaces a server artifact of the same name and
checksum (its own upload, attached but not yet confirmed) and pushes any other artifact aside to
``<name>@<artifact id>``; a local directory pushes a server file aside the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from simvuefs.fuse.names import CategoryListing, Entry, alias_name, join_path, split_alias

if TYPE_CHECKING:
    from simvuefs.write.staged import StagedFile


WRITABLE_CATEGORY = "input"
"""The only category files can be written into."""


def _ancestors(path: str) -> list[str]:
    """``a/b/c`` -> ``[a, a/b]``: the directories that hold *path*."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class LocalFiles:
    """Local files and directories of one category of one run (module docstring)."""

    def __init__(self) -> None:
        self.files: dict[str, StagedFile] = {}
        self.dirs: set[str] = set()
        self.hidden: set[str] = set()
        self.removed_dirs: set[str] = set()
        self.landings: dict[str, int] = {}
        self._implied: Counter[str] = Counter()

    def __bool__(self) -> bool:
        return bool(self.files or self.dirs or self.hidden or self.removed_dirs)

    # -- changes --------------------------------------------------------------------------

    def add_file(self, name: str, f: StagedFile) -> None:
        """Show *f* under *name* (replacing whatever file had that name)."""
        self.landings.pop(name, None)
        if self.files.pop(name, None) is None:
            self._count(_ancestors(name), 1)
        self.files[name] = f

    def landed(self, f: StagedFile, number: int) -> None:
        """*f* landed, the *number*-th landing: noted if it is shown under its name."""
        if self.files.get(f.name) is f:
            self.landings[f.name] = number

    def remove_file(self, name: str) -> StagedFile | None:
        """Stop showing the file called *name*; return it (None if there was none)."""
        self.landings.pop(name, None)
        f = self.files.pop(name, None)
        if f is not None:
            self._count(_ancestors(name), -1)
        return f

    def add_dir(self, path: str) -> None:
        """Show the directory *path* (and its parents) even while it is empty."""
        if path not in self.dirs:
            self.dirs.add(path)
            self._count([*_ancestors(path), path], 1)

    def remove_dir(self, path: str) -> None:
        """Forget the made directory *path* (its parents stay if they were made too)."""
        if path in self.dirs:
            self.dirs.remove(path)
            self._count([*_ancestors(path), path], -1)

    def drop_listed(self, artifact_ids: Iterable[str], landings_before: int) -> None:
        """Forget the landed files a listing accounts for: those whose artifact it lists (it
        shows them itself), and those that landed before it was asked (landing number at
        most *landings_before*), which it would list if the server still had them here."""
        listed = set(artifact_ids)
        for name, f in list(self.files.items()):
            landing = self.landings.get(name)
            if (f.artifact is not None and f.artifact.id in listed) or (
                landing is not None and landing <= landings_before
            ):
                self.remove_file(name)

    def _count(self, paths: list[str], delta: int) -> None:
        for path in paths:
            self._implied[path] += delta
            if self._implied[path] <= 0:
                del self._implied[path]

    # -- queries --------------------------------------------------------------------------

    def is_dir(self, path: str) -> bool:
        """True when a local file or made directory is at or below *path*."""
        return path in self._implied

    def file(self, name: str) -> StagedFile | None:
        """Return the local file called *name* (full name), if any."""
        return self.files.get(name)

    def children(self, path: str) -> tuple[dict[str, StagedFile], set[str]]:
        """Return the local files (leaf name -> file) and directory names directly in the
        directory *path*. Costs one pass over this category's local files and directories."""
        prefix = f"{path}/" if path else ""
        files: dict[str, StagedFile] = {}
        subdirs: set[str] = set()
        for name, f in self.files.items():
            if name.startswith(prefix):
                rest = name[len(prefix) :]
                head, sep, _ = rest.partition("/")
                if sep:
                    subdirs.add(head)
                else:
                    files[rest] = f
        for made in self.dirs:
            if made.startswith(prefix) and len(made) > len(prefix):
                subdirs.add(made[len(prefix) :].partition("/")[0])
        return files, subdirs


def _same_upload(entry: Entry, f: StagedFile) -> bool:
    """True when server *entry* is the artifact of local file *f* (same checksum)."""
    return entry.artifact is not None and bool(f.checksum) and entry.artifact.checksum == f.checksum


def _shown(entry: Entry | None, local: LocalFiles) -> Entry | None:
    """*entry* unless it is an artifact replaced or deleted (``local.hidden``) or a
    directory removed (``local.removed_dirs``) and not made again."""
    if entry is not None and entry.artifact is not None and entry.artifact.id in local.hidden:
        return None
    if entry is not None and entry.is_dir and entry.path in local.removed_dirs:
        return None
    return entry


def server_dir_empty(listing: CategoryListing, path: str, local: LocalFiles) -> bool:
    """True when the server's directory *path* holds nothing that is still shown: every
    artifact below it is hidden and every subdirectory removed or empty the same way."""
    for entry in listing.entries(path).values():
        if entry.artifact is not None:
            if entry.artifact.id not in local.hidden:
                return False
        elif entry.path not in local.removed_dirs and not server_dir_empty(
            listing, entry.path, local
        ):
            return False
    return True


def _pushed_aside(name: str, entry: Entry) -> tuple[str, Entry] | None:
    """The alias a server file gets when a local file or directory takes its name."""
    if entry.artifact is None:
        return None
    return alias_name(name, entry.artifact.id), entry


def merge_entries(
    server: Mapping[str, Entry], local: LocalFiles | None, path: str
) -> dict[str, Entry]:
    """Return the entries of directory *path*: the server's, with the local ones on top
    (rules in the module docstring)."""
    if not local:
        return dict(server)
    merged = {name: entry for name, entry in server.items() if _shown(entry, local)}
    files, subdirs = local.children(path)
    for name in subdirs:
        current = merged.get(name)
        if current is None or not current.is_dir:
            alias = None if current is None else _pushed_aside(name, current)
            if alias is not None:
                merged.setdefault(*alias)
            merged[name] = Entry(None, join_path(path, name))
    for name, f in files.items():
        current = merged.get(name)
        if current is not None and current.is_dir:
            continue
        if current is not None and not _same_upload(current, f):
            alias = _pushed_aside(name, current)
            if alias is not None:
                merged.setdefault(*alias)
        merged[name] = Entry(None, path, f)
    return merged


def merge_entry(
    server: Mapping[str, Entry], local: LocalFiles | None, path: str, name: str
) -> Entry | None:
    """Return ``merge_entries(server, local, path).get(name)`` without building the whole
    directory (lookups must not cost a pass over a large directory)."""
    if not local:
        return server.get(name)
    current = _shown(server.get(name), local)
    full = join_path(path, name)
    if local.is_dir(full):
        return current if current is not None and current.is_dir else Entry(None, full)
    if current is not None and current.is_dir:
        return current
    f = local.file(full)
    if f is not None:
        return Entry(None, path, f)
    if current is not None:
        return current
    alias = split_alias(name)
    if alias is None:
        return None
    base, ident = alias
    pushed = _shown(server.get(base), local)
    if pushed is None or pushed.artifact is None or pushed.artifact.id != ident:
        return None
    full_base = join_path(path, base)
    other = local.file(full_base)
    if local.is_dir(full_base) or (other is not None and not _same_upload(pushed, other)):
        return pushed
    return None
