"""Node -> ``pyfuse3.EntryAttributes`` and extended attributes: the one attribute factory.

Rules (SEMANTICS.md has the user-facing version):

- ``runs/<run>/.simvue-run.json`` (``runinfo.py``): a regular ``0444`` file whose size is
  the exact length of the document, attributes trusted for the runs listing's TTL.
- View links (``views.py``): symbolic links, mode ``0777``, ``st_size`` the length of the
  target, the run's times, attributes trusted for the runs listing's TTL.
- Owner: the mounting user's uid/gid. Modes: artifacts ``0444``, directories ``0555``; in a
  writable mount, ``input/`` and the directories below it ``0755`` (but ``0555`` in runs of
  other users, shared with the mounting user: only a run's owner adds artifacts), files
  being written ``0644`` and files waiting for their upload ``0444``; in a writable mount,
  artifacts in ``input/`` of the user's runs that are ``created`` (not started: inputs can
  still change, ``tree.py``) are ``0644`` too, with attributes trusted for the listing TTL
  only (the mode follows the run's state), and so is a file this mount uploaded less than
  ``LANDED_RETENTION`` seconds ago (its writer may still overwrite it as a transient file,
  ``tree.py``), with attributes trusted until then only. Directories report
  ``st_nlink = 1`` ("not counted", so ``find`` never uses the leaf optimisation), files 1.
- Times: an artifact's ``created`` for files (the last write for files not uploaded yet);
  the run's ``created`` for the run directory
  and everything below it; the mount time for ``/`` and ``runs/`` (and when a record has no
  time). atime = mtime = ctime.
- ``st_size`` is the real content size. When it is not known yet (an object artifact listed
  by ``readdir``), the server's size minus the 33 bytes the official client adds is
  reported with ``attr_timeout = 0``, so the next ``stat`` or read past it asks again.
- ``st_blocks = ceil(size / 512)``, ``st_blksize`` = ``PREFERRED_IO_SIZE`` (4 KiB), but
  ``WRITE_IO_SIZE`` (1 MiB) for files not uploaded yet (their content is local).
- Timeouts: names (``entry_timeout``) are trusted for the listing TTL of their directory;
  attributes of artifacts (immutable) for :data:`ARTIFACT_ATTR_TIMEOUT`; of files not
  uploaded yet for 0 s (they grow while written); everything else for the listing TTL. No
  timeout exceeds :data:`MAX_TIMEOUT`.
- Extended attributes ``user.simvue.*``: an artifact's id, checksum, MIME type and original
  path, and its run id; a run's id, name, status, folder, tags (comma-separated), created,
  started and endtime (ISO 8601 UTC, when known) and description (when set); for
  files not uploaded yet, their ``state`` (``staged``: being written, ``pending``:
  waiting for the server) and ``pending`` (attempts and the last error); for ``input/`` and
  the directories below it, ``input_mode`` (``editable``, ``append-only``, ``read-only``).
"""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyfuse3

from simvuefs.fuse.inodes import Node, NodeKind
from simvuefs.fuse.overlay import WRITABLE_CATEGORY
from simvuefs.fuse.runinfo import run_document, run_fields
from simvuefs.models import Artifact, Run
from simvuefs.write.landing import LANDED_RETENTION
from simvuefs.write.staged import FileState, StagedFile

FILE_MODE = stat.S_IFREG | 0o444
DIR_MODE = stat.S_IFDIR | 0o555
WRITABLE_DIR_MODE = stat.S_IFDIR | 0o755
STAGED_FILE_MODE = stat.S_IFREG | 0o644
LINK_MODE = stat.S_IFLNK | 0o777
PREFERRED_IO_SIZE = 4 * 1024
"""``st_blksize``: what Python's buffered files (and other programs sizing buffers from it)
read at a time; ext4's value, so they behave as on a local disk. Each of a program's random
small reads costs a whole buffer (16 KiB records moved 4.3x with 64 KiB, 1.25x with 4 KiB);
sequential readers are not slowed, as the kernel's read-ahead sizes the FUSE reads and
coreutils read at least 128 KiB (docs/performance.md, "st_blksize")."""
WRITE_IO_SIZE = 1024 * 1024
"""``st_blksize`` of files not uploaded yet: what ``cp`` (the larger of 128 KiB and this) and
Python's buffered writers write at a time. 1 MiB is FUSE's largest write (``max_write``), and
each FUSE write costs the daemon a request: 128 KiB writes cost 1.5 CPU-s/GiB more than 1 MiB
ones (docs/performance.md). Reads of these files are local, so the size wastes no bytes."""
OBJECT_SIZE_OVERHEAD = 33
"""What ``sys.getsizeof`` adds to ``len`` of a bytes object: the official client reports
``getsizeof(serialized)`` as the size of object artifacts (protocol section 4.1)."""
ARTIFACT_ATTR_TIMEOUT = 3600.0
"""Artifacts never change, so the kernel may keep their attributes for an hour."""
MAX_TIMEOUT = 86400.0
"""Cap on any timeout handed to the kernel ("indefinite" metadata TTL included)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
XATTR_PREFIX = "user.simvue."
"""Every extended attribute simvuefs shows starts with this."""


@dataclass(frozen=True)
class AttrPolicy:
    """Everything attributes depend on besides the node itself."""

    uid: int
    gid: int
    mount_time_ns: int
    block_size: int
    writable: bool = False
    """True when ``input/`` directories accept new files (not ``--read-only``)."""
    user: str | None = None
    """Who the server knows the mounting user as (``Tree.user``): ``input/`` of runs that
    belong to another user stays ``0555`` (``Run.belongs_to_another``)."""


def estimated_size(artifact: Artifact) -> int:
    """Return the best size guess without a request (exact for file artifacts)."""
    if artifact.is_object:
        return max(artifact.size - OBJECT_SIZE_OVERHEAD, 0)
    return artifact.size


def _time_ns(node: Node, policy: AttrPolicy) -> int:
    when = None
    if node.kind is NodeKind.FILE and node.artifact is not None:
        when = node.artifact.created
    if when is None and node.run is not None:
        when = node.run.created
    if when is None:
        return policy.mount_time_ns
    return (when - _EPOCH) // _MICROSECOND * 1000


def entry_attributes(node: Node, policy: AttrPolicy, listing_ttl: float) -> pyfuse3.EntryAttributes:
    """Build the attributes of *node*; *listing_ttl* is the TTL of the listing it came from."""
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = node.inode
    attr.generation = 0
    attr.st_uid = policy.uid
    attr.st_gid = policy.gid
    ttl = min(listing_ttl, MAX_TIMEOUT)
    attr.entry_timeout = ttl
    when = _time_ns(node, policy)
    local = node.unfinished
    if local is not None:
        attr.attr_timeout = 0
        attr.st_mode = STAGED_FILE_MODE if local.state is FileState.STAGED else FILE_MODE
        attr.st_size = local.size
        attr.st_blocks = -(-local.size // 512)
        when = int(local.mtime * 1e9)
    elif node.kind is NodeKind.FILE:
        assert node.artifact is not None
        size = node.size
        if size is None:
            size = estimated_size(node.artifact)
            attr.attr_timeout = 0
        else:
            attr.attr_timeout = ARTIFACT_ATTR_TIMEOUT
        attr.st_mode = FILE_MODE
        if _editable_input(node, policy):
            attr.st_mode = STAGED_FILE_MODE
            attr.attr_timeout = min(attr.attr_timeout, ttl)
        transient_for = _transient_for(node)
        if transient_for > 0:
            attr.st_mode = STAGED_FILE_MODE
            attr.attr_timeout = min(attr.attr_timeout, transient_for)
        attr.st_size = size
        attr.st_blocks = -(-size // 512)
    elif node.kind is NodeKind.RUN_INFO:
        assert node.run is not None
        size = len(run_document(node.run))
        attr.attr_timeout = ttl
        attr.st_mode = FILE_MODE
        attr.st_size = size
        attr.st_blocks = -(-size // 512)
    elif node.kind is NodeKind.LINK:
        size = len(node.target.encode("utf-8"))
        attr.attr_timeout = ttl
        attr.st_mode = LINK_MODE
        attr.st_size = size
        attr.st_blocks = 0
    else:
        attr.attr_timeout = ttl
        writable = _writable_input(node, policy)
        attr.st_mode = WRITABLE_DIR_MODE if writable else DIR_MODE
        attr.st_size = 0
        attr.st_blocks = 0
    attr.st_nlink = 1
    attr.st_blksize = PREFERRED_IO_SIZE if local is None else WRITE_IO_SIZE
    attr.st_atime_ns = when
    attr.st_mtime_ns = when
    attr.st_ctime_ns = when
    return attr


def _writable_input(node: Node, policy: AttrPolicy) -> bool:
    """True for nodes in ``input/`` of a writable mount, in runs of the mounting user."""
    return (
        policy.writable
        and node.category == WRITABLE_CATEGORY
        and not (node.run is not None and node.run.belongs_to_another(policy.user))
    )


def _editable_input(node: Node, policy: AttrPolicy) -> bool:
    """True for artifacts that can still change: inputs of the user's ``created`` runs."""
    return _writable_input(node, policy) and node.run is not None and node.run.status == "created"


def _transient_for(node: Node) -> float:
    """Seconds for which *node*, a file this mount uploaded (and created the artifact of),
    stays a tool's transient file that its writer may overwrite; 0 for any other node."""
    f = node.staged
    if f is None or f.state is not FileState.LANDED or f.artifact is None:
        return 0.0
    if f.artifact.name != f.name:
        return 0.0
    return max(0.0, LANDED_RETENTION - (time.monotonic() - f.landed_at))


def extended_attributes(node: Node, input_mode: str | None = None) -> dict[str, str]:
    """Return the ``user.simvue.*`` extended attributes of *node* (name -> value);
    *input_mode* is how ``input/`` may change, for ``input/`` and its directories."""
    values: dict[str, str] = {}
    if input_mode is not None:
        values["input_mode"] = input_mode
    artifact = node.artifact
    local = node.unfinished
    if local is not None:
        values["run_id"] = local.run_id
        values["state"] = local.state.value
        if local.checksum:
            values["checksum"] = local.checksum
        values["pending"] = pending_text(local)
    elif node.kind is NodeKind.FILE and artifact is not None:
        values["id"] = artifact.id
        values["checksum"] = artifact.checksum
        values["mime_type"] = artifact.mime_type
        values["original_path"] = artifact.original_path
        if node.run is not None:
            values["run_id"] = node.run.id
    elif node.kind is NodeKind.RUN and node.run is not None:
        values.update(run_values(node.run))
    return {XATTR_PREFIX + name: value for name, value in values.items()}


def run_values(run: Run) -> dict[str, str]:
    """The xattr values of a run directory (without the prefix); times as in
    ``.simvue-run.json``, tags comma-separated, absent ones left out."""
    values = {"id": run.id, "name": run.name, "status": run.status, "folder": run.folder}
    values["tags"] = ",".join(run.tags)
    for name, value in run_fields(run).items():
        if name in ("created", "started", "endtime") and isinstance(value, str):
            values[name] = value
    if run.description:
        values["description"] = run.description
    return values


def pending_text(f: StagedFile) -> str:
    """Describe where the upload of *f* stands, for ``user.simvue.pending``."""
    if f.state is FileState.STAGED:
        return "being written; uploaded when closed"
    if f.state is FileState.DISCARDED:
        return "deleted before its upload"
    if f.failed:
        return f"refused by the server, not retried ('simvuefs pending'): {f.last_error}"
    if not f.attempts:
        return "uploading"
    return f"{f.attempts} failed attempt(s), retrying; last error: {f.last_error}"
