"""SimvueBackend: what the layers above use of a Simvue client, as a ``typing.Protocol``.

Two classes satisfy it: :class:`simvuefs.backends.client.SimvueClient` (a Simvue server over HTTP)
and :class:`simvuefs.backends.offline.OfflineClient` (the official client's offline cache on disk).
The tree, the reader and the uploader are written against this protocol only, so the same
filesystem runs on either. Both keep the contract of docs/architecture.md "Client API":
every coroutine finishes within ``settings.request_timeout`` (uploads: a deadline scaled
by size) or raises :class:`~simvuefs.errors.DeadlineExceeded`, and raises only
:mod:`simvuefs.errors` exceptions (and ``OSError`` for local files being uploaded).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from simvuefs.models import Artifact, Run, UploadSlot


class RangeBody(Protocol):
    """An open download of a byte range."""

    async def receive(self, max_bytes: int) -> bytes:
        """Return the next 1..*max_bytes* bytes of the range, or ``b""`` at its end."""
        ...


@runtime_checkable
class BlockBody(RangeBody, Protocol):
    """A range body that can also fill a caller's buffer (a whole block) in one call:
    storage range GETs (``client.RangeStream``), whose bytes then go from the socket
    straight into the block (read/readahead.py)."""

    async def readinto(self, view: memoryview) -> int:
        """Fill *view* with the next bytes of the range; return how many, fewer than
        ``len(view)`` only at its end."""
        ...


async def fill_by_receive(receive: Callable[[int], Awaitable[bytes]], view: memoryview) -> int:
    """Fill *view* with what *receive* (``receive(max_bytes)``, ``b""`` at the end) returns;
    return how many bytes, fewer than ``len(view)`` only at the end: ``readinto`` where the
    bytes come as pieces anyway."""
    filled = 0
    while filled < len(view) and (piece := await receive(len(view) - filled)):
        view[filled : filled + len(piece)] = piece
        filled += len(piece)
    return filled


class RangeSource(Protocol):
    """The download half of a backend: what the reader uses (tests give it fakes)."""

    def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AbstractAsyncContextManager[RangeBody]: ...

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes: ...


class SimvueBackend(RangeSource, Protocol):
    """Runs, artifacts, their content, and the official client's upload sequence."""

    def counters(self) -> tuple[str, dict[str, Any]]:
        """The name of this backend's counters for ``simvuefs status`` (``"client"`` or
        ``"offline"``) and a snapshot of them."""
        ...

    async def list_runs(self, filters: Sequence[str] = ()) -> list[Run]:
        """The runs; a server leaves out those not matching *filters* (protocol 3.4
        grammar), the offline cache ignores them: callers keep their own check."""
        ...

    async def get_run(self, run_id: str) -> Run: ...

    async def whoami(self) -> str | None:
        """The user the server knows the token by (compared with ``Run.user``), or None
        when unknown (the offline cache: every run in it is the user's own)."""
        ...

    async def list_artifacts(
        self,
        run_id: str,
        category: str | None = None,
        name: str | None = None,
        known: Mapping[str, Artifact] | None = None,
    ) -> list[Artifact]: ...

    async def get_artifact(self, artifact_id: str) -> Artifact: ...

    async def content_length(self, artifact: Artifact) -> int: ...

    async def create_artifact(
        self,
        *,
        name: str,
        original_path: str,
        size: int,
        mime_type: str,
        checksum: str,
        metadata: dict[str, Any] | None = None,
    ) -> UploadSlot: ...

    async def upload_content(
        self, slot: UploadSlot, path: Path, size: int, filename: str
    ) -> None: ...

    async def mark_uploaded(self, artifact_id: str) -> None: ...

    async def attach(self, run_id: str, artifact_id: str, category: str) -> None: ...

    async def delete_artifact(self, artifact_id: str) -> None: ...

    async def artifact_runs(self, artifact_id: str) -> list[str]:
        """The ids of the runs the artifact is attached to, as far as the user can see
        (the uploader asks before it deletes one)."""
        ...
