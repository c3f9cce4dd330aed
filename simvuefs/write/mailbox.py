"""Requests from host-side commands (``simvuefs pending``) to the process that holds a spool.

Only the process holding a spool's lock changes its journal (``spool.py``), since it keeps
the state of every pending file in memory. A host-side command never edits a locked spool.
It either

- takes the lock itself when no process holds it (:func:`unlocked_spool`) and changes the
  journal directly (:func:`apply_unlocked`); a mount starting at that very moment fails
  with "in use" and can be started again; or
- posts a request (:func:`post`: ``pending/<rid>.request``, JSON written atomically) that
  the holder takes within POLL_INTERVAL (:func:`serve`: renamed to ``<rid>.taken``, so it is
  taken once), applies through its Uploader, and answers (``<rid>.answer``, atomically; the
  claim goes after it). The command reads and removes the answer (:func:`collect`), or
  withdraws a request nobody took (:func:`withdraw`).

Export marks (``pending/<id>.exported``, :func:`mark_exported`): where ``simvuefs pending
export`` copied a pending upload, so that ``pending drop`` can check the copy is still
there (:func:`exported_copy`); written by the command without the lock (the holder never
reads them; the spool removes a mark with its record).

Requests: ``retry`` clears the final refusal and attempts now; ``drop`` forgets a pending
upload that is not attached yet (with ``only_failed``, only one still failed). A claim left
by a process that stopped before answering is answered with an error at the next start
(:func:`tidy`), never applied: its command has already told the user it failed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from simvuefs.errors import SimvueError
from simvuefs.localio import TEMP_SUFFIX, RateLimitedWarner, write_atomically
from simvuefs.write.spool import (
    JournalRecord,
    Spool,
    export_mark_path,
    new_spool_id,
    read_pending,
)

log = logging.getLogger(__name__)

ACTIONS = ("retry", "drop")
POLL_INTERVAL = 1.0
"""How often the process holding a spool looks for requests (seconds)."""
STALE_AFTER = 300.0
"""Answers and temporary files older than this are removed at start (their command is gone)."""
NOT_PENDING = "no longer pending (it landed, or was dropped)"
ATTACHED = "attached to its run already; its upload finishes by itself"
NOT_FAILED = "no longer failed (retried or renamed meanwhile); --all drops it"
NOT_ANSWERED = "the process that took this request stopped before answering it"
_REQUEST, _TAKEN, _ANSWER = ".request", ".taken", ".answer"
_LEFTOVERS = (_ANSWER, _REQUEST + TEMP_SUFFIX, _ANSWER + TEMP_SUFFIX)


@dataclass(frozen=True)
class Request:
    """Apply *action* (one of ACTIONS) to the pending uploads *ids* (spool ids); a ``drop``
    with *only_failed* skips those no longer failed when it is applied."""

    action: str
    ids: tuple[str, ...]
    only_failed: bool = False

    def to_bytes(self) -> bytes:
        data = {"action": self.action, "ids": list(self.ids), "only_failed": self.only_failed}
        return json.dumps(data).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Request:
        """Parse a request; ValueError if it is not one."""
        data = json.loads(raw)
        action, ids = data.get("action"), data.get("ids")
        only_failed = data.get("only_failed", False)
        if action not in ACTIONS or not isinstance(ids, list):
            raise ValueError("not a request")
        if not all(isinstance(item, str) for item in ids):
            raise ValueError("ids must be strings")
        if not isinstance(only_failed, bool):
            raise ValueError("only_failed must be a boolean")
        return cls(action, tuple(ids), only_failed)


@dataclass(frozen=True)
class Answer:
    """What became of a request: the ids *done*, those *skipped* (id -> why), or an *error*
    that stopped it."""

    done: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def to_bytes(self) -> bytes:
        data = {"done": list(self.done), "skipped": self.skipped, "error": self.error}
        return json.dumps(data).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Answer:
        data = json.loads(raw)
        return cls(tuple(data["done"]), dict(data["skipped"]), str(data["error"]))


def _path(root: Path, rid: str, suffix: str) -> Path:
    return root / "pending" / f"{rid}{suffix}"


# -- the host side --------------------------------------------------------------------------


@contextmanager
def unlocked_spool(root: Path) -> Iterator[Spool | None]:
    """Yield the spool at *root* locked for this process, or None while another process
    holds it (the lock is released at the end)."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield None
        return
    spool = Spool(root, 0, fd)
    try:
        yield spool
    finally:
        spool.close()


def apply_unlocked(spool: Spool, request: Request) -> Answer:
    """Apply *request* to the journal of *spool*, which this process holds."""
    records = {record.id: record for record in read_pending(spool.root)}
    done: list[str] = []
    skipped: dict[str, str] = {}
    for spool_id in request.ids:
        record = records.get(spool_id)
        if record is None:
            skipped[spool_id] = NOT_PENDING
        elif request.action == "retry":
            if record.failed:
                spool.save(record.retried())
            done.append(spool_id)
        elif record.stage == "attached":
            skipped[spool_id] = ATTACHED
        elif request.only_failed and not record.failed:
            skipped[spool_id] = NOT_FAILED
        else:
            spool.drop(spool_id)
            done.append(spool_id)
    return Answer(tuple(done), skipped)


def post(root: Path, request: Request) -> str:
    """Post *request* to the process holding the spool at *root*; return its id."""
    rid = new_spool_id()
    write_atomically(_path(root, rid, _REQUEST), request.to_bytes())
    return rid


def collect(root: Path, rid: str) -> Answer | None:
    """Return (and remove) the answer to request *rid*, or None while there is none."""
    path = _path(root, rid, _ANSWER)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return Answer.from_bytes(raw)


def withdraw(root: Path, rid: str) -> bool:
    """Remove request *rid* unless it was taken; True if it was still waiting."""
    try:
        _path(root, rid, _REQUEST).unlink()
    except FileNotFoundError:
        return False
    return True


def mark_exported(root: Path, record: JournalRecord, copy: Path) -> None:
    """Note that the pending upload *record* of the spool at *root* was copied to *copy*."""
    mark = {"path": str(copy), "size": record.size}
    write_atomically(export_mark_path(root, record.id), json.dumps(mark).encode())


def exported_copy(root: Path, record: JournalRecord) -> Path | None:
    """The exported copy of the pending upload *record*, if it was exported and the copy is
    still there with its size; None otherwise."""
    try:
        mark = json.loads(export_mark_path(root, record.id).read_bytes())
        copy = Path(mark["path"])
        if copy.stat().st_size == record.size:
            return copy
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


# -- the holder's side ----------------------------------------------------------------------


def tidy(root: Path) -> None:
    """At start, before serving: answer claims of a process that stopped with an error
    (NOT_ANSWERED; they are not applied: their command already reported a failure); remove
    answers and temporary files nobody collected for STALE_AFTER."""
    stale = time.time() - STALE_AFTER
    for path in list((root / "pending").iterdir()):  # answering adds files
        name = path.name
        if name.endswith(_TAKEN):
            _answer(root, name.removesuffix(_TAKEN), Answer(error=NOT_ANSWERED))
        elif name.endswith(_LEFTOVERS) and path.stat().st_mtime < stale:
            path.unlink(missing_ok=True)


def _take(root: Path) -> list[tuple[str, Request | None]]:
    """Claim every waiting request (None: unreadable)."""
    taken: list[tuple[str, Request | None]] = []
    for path in sorted((root / "pending").glob(f"*{_REQUEST}")):
        rid = path.name.removesuffix(_REQUEST)
        claim = _path(root, rid, _TAKEN)
        try:
            path.rename(claim)
            taken.append((rid, Request.from_bytes(claim.read_bytes())))
        except FileNotFoundError:
            continue  # withdrawn meanwhile
        except ValueError:
            taken.append((rid, None))
    return taken


def _answer(root: Path, rid: str, answer: Answer) -> None:
    write_atomically(_path(root, rid, _ANSWER), answer.to_bytes(), durable=False)
    _path(root, rid, _TAKEN).unlink(missing_ok=True)


async def serve(root: Path, apply: Callable[[Request], Awaitable[Answer]]) -> None:
    """Apply the requests posted to the spool at *root* with *apply*, every POLL_INTERVAL,
    until cancelled. Local errors are logged (rate-limited), never raised."""
    warner = RateLimitedWarner(log)
    while True:
        try:
            for rid, request in await trio.to_thread.run_sync(_take, root):
                answer = await _applied(request, apply)
                await trio.to_thread.run_sync(_answer, root, rid, answer)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                warner.warn("cannot serve requests in %s: %s", root / "pending", exc)
        await trio.sleep(POLL_INTERVAL)


async def _applied(
    request: Request | None, apply: Callable[[Request], Awaitable[Answer]]
) -> Answer:
    if request is None:
        return Answer(error="unreadable request")
    log.info("applying a '%s' request for %d upload(s)", request.action, len(request.ids))
    try:
        return await apply(request)
    except SimvueError as exc:
        log.error("the '%s' request failed: %s", request.action, exc)
        return Answer(error=str(exc))
