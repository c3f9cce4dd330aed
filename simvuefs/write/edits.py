"""Bringing an input's content into the spool, so that it can be changed in place.

Opening an input of a ``created`` run for writing without ``O_TRUNC`` (append, rewrite in
place, ``truncate`` to a non-zero size, a rename of an input this mount did not write)
starts a new file in the spool that will replace the artifact when it lands; that file
must first hold the artifact's content. :func:`download_into` fetches it, within a deadline
scaled like an upload's (``landing.commit_deadline``) and only if the spool has room for
it, so a huge or unreachable artifact fails the ``open`` (ETIMEDOUT, ENOSPC, EIO) instead
of hanging it.
"""

from __future__ import annotations

import logging

import trio

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import MIB, Settings
from simvuefs.errors import DeadlineExceeded
from simvuefs.models import Artifact
from simvuefs.write.landing import commit_deadline
from simvuefs.write.spool import Spool

log = logging.getLogger(__name__)

CHUNK = 1 * MIB
"""Bytes received and written at a time: bounds the memory of a download."""


async def download_into(
    client: SimvueBackend, settings: Settings, spool: Spool, artifact: Artifact, fd: int
) -> int:
    """Write the content of *artifact* to the start of the empty spool file *fd*; return
    its size. Raises LocalError (ENOSPC: no room in the spool), DeadlineExceeded, or the
    client's errors."""
    await trio.to_thread.run_sync(spool.check_free, artifact.size)
    seconds = commit_deadline(artifact.size, settings)
    received = 0
    with trio.move_on_after(seconds):
        if artifact.size == 0:
            return 0
        async with client.open_range(artifact, 0) as body:
            while chunk := await body.receive(CHUNK):
                await trio.to_thread.run_sync(spool.write, fd, received, chunk)
                received += len(chunk)
        log.debug("copied %d bytes of artifact %s into the spool", received, artifact.id)
        return received
    raise DeadlineExceeded(
        f"downloading {artifact.name} to change it did not finish within {seconds:.0f} s"
    )
