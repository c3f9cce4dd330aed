"""``simvuefs pending retry|export|drop``: what to do with uploads a mount has not finished.

A *target* is one spool: the mount recorded at a mount point, a spool directory named with
``--spool-dir``, or (neither given) every recorded mount whose spool holds pending uploads.
Changes go through :func:`submit`, which never edits a spool another process holds
(``write/mailbox.py``): a running mount applies the request itself within a second or two;
a spool nobody holds is changed here, under its lock.

- ``retry``: every pending upload of the target is attempted again now (a running mount) or
  at the next mount; those the server refused for good (``failed``) are cleared first.
- ``export DIR``: ``export.py``.
- ``drop``: forget the failed uploads (``--all``: every pending upload not attached yet)
  and delete their spooled content; one no longer failed when the drop is applied (a
  rename or a retry meanwhile) is kept. Refused unless each was exported and its copy is
  still there, or ``--yes``.

Standard library only, like every ``control`` module: no pyfuse3, no httpx. Every function
returns the text to print or raises UsageError (one line).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from simvuefs.control import registry
from simvuefs.logs import UsageError
from simvuefs.write import mailbox
from simvuefs.write.spool import JournalRecord, read_pending

ANSWER_TIMEOUT = 15.0
"""How long a command waits for a running mount to take, then to answer, its request."""
ANSWER_POLL = 0.1


@dataclass(frozen=True)
class Target:
    """One spool: its directory, and the mount point and server it belongs to ("" when
    named with ``--spool-dir``)."""

    spool_dir: Path
    mountpoint: str = ""
    url: str = ""

    @property
    def label(self) -> str:
        return self.mountpoint or f"spool {self.spool_dir}"


def targets(mountpoint: Path | None, spool_dir: Path | None) -> list[Target]:
    """The spools a command acts on (module docstring); UsageError if the one named is not."""
    if spool_dir is not None:
        if not (spool_dir / "pending").is_dir():
            raise UsageError(f"{spool_dir} is not a simvuefs spool directory")
        return [Target(spool_dir)]
    if mountpoint is not None:
        record = registry.load(mountpoint)
        if record is None:
            raise UsageError(f"{mountpoint}: no writable simvuefs mount recorded here")
        return [Target(Path(record.spool_dir), record.mountpoint, record.url)]
    found: dict[Path, Target] = {}
    for record in registry.load_all():
        spool = Path(record.spool_dir)
        if spool not in found and read_pending(spool):
            found[spool] = Target(spool, record.mountpoint, record.url)
    return list(found.values())


def submit(spool_dir: Path, request: mailbox.Request) -> tuple[mailbox.Answer, bool]:
    """Apply *request* to the spool at *spool_dir*; return the answer and whether a running
    process applied it (True) or this one, under the spool's lock (False)."""
    try:
        with mailbox.unlocked_spool(spool_dir) as spool:
            if spool is not None:
                return mailbox.apply_unlocked(spool, request), False
        rid = mailbox.post(spool_dir, request)
        answer = _wait(spool_dir, rid)
        if answer is None and mailbox.withdraw(spool_dir, rid):
            with mailbox.unlocked_spool(spool_dir) as spool:  # its holder may have exited
                if spool is not None:
                    return mailbox.apply_unlocked(spool, request), False
            raise UsageError(
                f"the mount using the spool {spool_dir} did not take the request within "
                f"{ANSWER_TIMEOUT:.0f} s; is it hung? ('simvuefs status')"
            )
        answer = answer or _wait(spool_dir, rid)
    except OSError as exc:
        raise UsageError(f"cannot use the spool {spool_dir}: {exc}") from None
    if answer is None:
        raise UsageError(
            f"the mount using the spool {spool_dir} took the request but did not answer "
            f"within {ANSWER_TIMEOUT:.0f} s; see its log"
        )
    if answer.error:
        raise UsageError(f"the mount using the spool {spool_dir} failed: {answer.error}")
    return answer, True


def _wait(spool_dir: Path, rid: str) -> mailbox.Answer | None:
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while time.monotonic() < deadline:
        answer = mailbox.collect(spool_dir, rid)
        if answer is not None:
            return answer
        time.sleep(ANSWER_POLL)
    return None


def _what(record: JournalRecord) -> str:
    return f"run {record.run_id}: {record.category}/{record.name}"


def _skipped(records: list[JournalRecord], answer: mailbox.Answer) -> str:
    by_id = {record.id: record for record in records}
    return "".join(
        f"  kept {_what(by_id[spool_id])}: {why}\n"
        for spool_id, why in answer.skipped.items()
        if spool_id in by_id
    )


def retry(chosen: list[Target]) -> str:
    """``simvuefs pending retry``: attempt every pending upload again (module docstring)."""
    if not chosen:
        return "no pending uploads\n"
    text = ""
    for target in chosen:
        records = read_pending(target.spool_dir)
        if not records:
            text += f"{target.label}: no pending uploads\n"
            continue
        failed = sum(1 for record in records if record.failed)
        answer, running = submit(target.spool_dir, mailbox.Request("retry", _ids(records)))
        when = "the running mount attempts them now" if running else "at its next mount"
        text += (
            f"{target.label}: {len(answer.done)} pending upload(s) retried, {failed} of them "
            f"had been refused ({when})\n" + _skipped(records, answer)
        )
    return text


def drop(chosen: list[Target], *, everything: bool, yes: bool) -> str:
    """``simvuefs pending drop``: forget failed uploads (*everything*: all pending ones) that
    were exported, or all of them with *yes* (module docstring)."""
    plan = []
    for target in chosen:
        records = [r for r in read_pending(target.spool_dir) if everything or r.failed]
        if records:
            plan.append((target, records))
    if not plan:
        return "nothing to drop\n" if everything else "no failed uploads (--all drops any)\n"
    if not yes:
        unexported = [
            f"{target.label}: {_what(record)}"
            for target, records in plan
            for record in records
            if mailbox.exported_copy(target.spool_dir, record) is None
        ]
        if unexported:
            raise UsageError(
                f"not dropping anything: {len(unexported)} file(s) were not exported "
                f"(first: {unexported[0]}); run 'simvuefs pending export DIR' first, or pass "
                "--yes to drop them without a copy"
            )
    text = ""
    for target, records in plan:
        request = mailbox.Request("drop", _ids(records), only_failed=not everything)
        answer, _ = submit(target.spool_dir, request)
        text += f"{target.label}: {len(answer.done)} upload(s) dropped\n"
        text += _skipped(records, answer)
    return text


def _ids(records: list[JournalRecord]) -> tuple[str, ...]:
    return tuple(record.id for record in records)
