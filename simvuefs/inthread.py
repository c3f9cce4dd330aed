"""Work started in a worker thread at once, its outcome awaited later from the trio thread.

``trio.to_thread.run_sync`` starts the work and waits for it in one step; the upload and the
write-behind need the work to run *while* they do something else (send the chunk before,
write the batch), then its result. :class:`InThread` starts *work* with
``trio.lowlevel.start_thread_soon`` when it is made and hands its outcome back to the trio
thread.

Invariant: the work runs exactly once, to its end, whatever the owner does; the owner awaits
:meth:`InThread.result` once, or :meth:`InThread.finished` before it releases what the work
uses (a descriptor, a hash).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from outcome import Outcome  # trio's own dependency: what start_thread_soon delivers

T = TypeVar("T")


class InThread(Generic[T]):
    """*work()* running in a worker thread from the moment this object is made."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._done = trio.Event()
        self._outcome: Outcome[T] | None = None
        token = trio.lowlevel.current_trio_token()

        def deliver(result: Outcome[T]) -> None:
            token.run_sync_soon(self._deliver, result)

        trio.lowlevel.start_thread_soon(work, deliver)

    def _deliver(self, result: Outcome[T]) -> None:
        self._outcome = result
        self._done.set()

    async def finished(self) -> None:
        """Wait until the work is over (whatever its outcome)."""
        await self._done.wait()

    async def result(self) -> T:
        """Wait for the work; return what it returned, or raise what it raised."""
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome.unwrap()
