"""The spool's record of what the mount replaced and deleted on the server, for
``simvuefs status`` (the log says the same at INFO).

``<spool>/changes.log`` holds one JSON object per line: ``time`` (ISO 8601 UTC), ``action``
(``deleted`` or ``replaced``), ``run_id``, ``name`` (``<category>/<name>``), ``artifact``
(the id of the artifact that went) and ``detail``. It is appended to by the process that
holds the spool and read by anyone without locking; once it passes MAX_BYTES it is renamed
to ``changes.log.1`` (replacing the previous one), so it never grows without bound and
nothing of it is kept in memory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "changes.log"
MAX_BYTES = 256 * 1024
"""Size at which the log is rotated (about 1,000 changes)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One artifact the mount removed from a run (module docstring)."""

    time: str
    action: str
    run_id: str
    name: str
    artifact: str
    detail: str

    def describe(self) -> str:
        """One line for ``simvuefs status``."""
        return (
            f"  {self.time[:19]} run {self.run_id}: {self.action} {self.name} "
            f"(artifact {self.artifact}){': ' + self.detail if self.detail else ''}\n"
        )


def note(root: Path, action: str, run_id: str, name: str, artifact: str, detail: str = "") -> None:
    """Append one change to the log of the spool at *root* (blocking: call it in a worker
    thread) and log it at INFO. A log that cannot be written is a warning, never an error:
    the change happened on the server either way."""
    change = Change(datetime.now(UTC).isoformat(), action, run_id, name, artifact, detail)
    log.info(
        "run %s: %s %s (artifact %s)%s",
        run_id,
        action,
        name,
        artifact,
        f": {detail}" if detail else "",
    )
    path = root / FILE_NAME
    try:
        if path.exists() and path.stat().st_size > MAX_BYTES:
            os.replace(path, root / f"{FILE_NAME}.1")
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(change)) + "\n")
    except OSError as exc:
        log.warning("cannot record the change in %s: %s", path, exc.strerror)


def recent(root: Path, limit: int = 20) -> list[Change]:
    """The last *limit* changes recorded in the spool at *root*, oldest first."""
    changes: list[Change] = []
    for path in (root / f"{FILE_NAME}.1", root / FILE_NAME):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                changes.append(Change(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line cut by a crash
    return changes[-limit:]
