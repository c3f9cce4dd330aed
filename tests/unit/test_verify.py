"""ContentVerifier: checks fed in order, held out-of-order pieces, the hash budget, suspects.

The first part drives :mod:`simvuefs.read.verify` directly; the second a whole reader against
``FakeStorage`` (tests/reader_util.py). What a mismatch does to a reader's handles is
``test_reader_integrity.py``.
"""

from __future__ import annotations

import pytest
import trio
from reader_util import (
    BLOCK,
    FakeStorage,
    make_artifact,
    make_content,
    make_settings,
    read_through,
)

from simvuefs.errors import IntegrityError
from simvuefs.models import Artifact
from simvuefs.read import verify
from simvuefs.read.reader import open_reader
from simvuefs.read.verify import ContentVerifier

CONTENT = make_content(10 * BLOCK + 17)
ARTIFACT = make_artifact("checked.bin", CONTENT)
KEY = ARTIFACT.checksum


async def test_content_fed_in_order_is_verified() -> None:
    async with trio.open_nursery() as nursery:
        verifier = ContentVerifier(nursery, enabled=True)
        check = verifier.open(ARTIFACT, KEY, len(CONTENT))
        assert check is not None
        for off in range(0, len(CONTENT), 3000):
            await verifier.feed(check, off, CONTENT[off : off + 3000])
        assert check.ended
        await verifier.feed(check, 0, b"wrong")  # ended: not fed
        stats = verifier.statistics()
    assert (stats.verified, stats.verify_failures, stats.hashed_bytes) == (1, 0, len(CONTENT))
    assert verifier.trusts(KEY)


async def test_pieces_completing_out_of_order_wait_for_the_gap() -> None:
    pieces = [(off, CONTENT[off : off + BLOCK]) for off in range(0, len(CONTENT), BLOCK)]
    order = [1, 0, 3, 2, 2, 5, 4, 0, 7, 6, 10, 9, 8]  # with repeats, as the kernel may retry
    async with trio.open_nursery() as nursery:
        verifier = ContentVerifier(nursery, enabled=True)
        check = verifier.open(ARTIFACT, KEY, len(CONTENT))
        assert check is not None
        for index in order:
            await verifier.feed(check, *pieces[index])
        assert verifier.statistics().verified == 1


async def test_a_mismatch_fails_the_completing_feed_and_makes_the_content_suspect() -> None:
    corrupt = CONTENT[:5000] + bytes([CONTENT[5000] ^ 1]) + CONTENT[5001:]
    async with trio.open_nursery() as nursery:
        verifier = ContentVerifier(nursery, enabled=True)
        check = verifier.open(ARTIFACT, KEY, len(CONTENT))
        assert check is not None
        await verifier.feed(check, 0, corrupt[: 4 * BLOCK])  # not complete: no verdict yet
        with pytest.raises(IntegrityError, match="does not match its checksum"):
            await verifier.feed(check, 4 * BLOCK, corrupt[4 * BLOCK :])
        assert not verifier.trusts(KEY)
        again = verifier.open(ARTIFACT, KEY, len(CONTENT))
        assert again is not None
        await verifier.feed(again, 0, CONTENT)
        assert verifier.trusts(KEY)  # verified since
        stats = verifier.statistics()
    assert (stats.verified, stats.verify_failures) == (1, 1)


async def test_a_read_too_far_ahead_ends_the_check_and_drops_its_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify, "VERIFY_BACKLOG", 4 * BLOCK)
    async with trio.open_nursery() as nursery:
        verifier = ContentVerifier(nursery, enabled=True)
        check = verifier.open(ARTIFACT, KEY, len(CONTENT))
        assert check is not None
        await verifier.feed(check, 0, CONTENT[:BLOCK])
        await verifier.feed(check, 2 * BLOCK, CONTENT[2 * BLOCK : 3 * BLOCK])  # held
        assert not check.ended
        await verifier.feed(check, 8 * BLOCK, CONTENT[8 * BLOCK : 9 * BLOCK])  # too far
        assert check.ended
        assert check.queued == 0
        await verifier.feed(check, BLOCK, CONTENT[BLOCK:])  # ended: no verdict
        released = verifier.open(ARTIFACT, KEY, len(CONTENT))
        assert released is not None
        await verifier.feed(released, 0, CONTENT[:BLOCK])
        verifier.forget(released)  # its handle was released
        assert released.ended
        stats = verifier.statistics()
    assert (stats.verified, stats.verify_failures) == (0, 0)


async def test_a_read_waits_for_hashing_only_beyond_the_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify, "HASH_BATCH", BLOCK)
    monkeypatch.setattr(verify, "VERIFY_BACKLOG", 2 * BLOCK)
    async with trio.open_nursery() as nursery:
        verifier = ContentVerifier(nursery, enabled=True)
        check = verifier.open(ARTIFACT, KEY, len(CONTENT))
        assert check is not None
        await verifier.feed(check, 0, CONTENT[:BLOCK])
        assert check.hashing  # a batch is being hashed, the read did not wait for it
        await verifier.feed(check, BLOCK, CONTENT[BLOCK : 4 * BLOCK])
        assert not check.hashing  # more than the backlog queued: the read waited
        assert check.queued == 0
        assert verifier.statistics().hashed_bytes == 4 * BLOCK


async def test_only_content_with_a_sha256_is_checked() -> None:
    async with trio.open_nursery() as nursery:
        enabled = ContentVerifier(nursery, enabled=True)
        assert enabled.open(ARTIFACT, KEY, len(CONTENT)) is not None
        upper = Artifact(id="u", name="u", size=1, checksum=ARTIFACT.checksum.upper())
        assert enabled.open(upper, KEY, 1) is not None
        for checksum in ("", "md5:abc", ARTIFACT.checksum[:-1]):
            other = Artifact(id="x", name="x", size=len(CONTENT), checksum=checksum)
            assert enabled.open(other, "x", len(CONTENT)) is None
        assert enabled.open(ARTIFACT, KEY, 0) is None  # empty: nothing to check
        disabled = ContentVerifier(nursery, enabled=False)  # --no-verify
        assert disabled.open(ARTIFACT, KEY, len(CONTENT)) is None


# -- a reader's verification, against FakeStorage ----------------------------------------------


async def test_concurrent_verified_readers_keep_the_hash_backlog_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the total cap, each of the 16 handles would queue up to HASH_BATCH.
    monkeypatch.setattr(verify, "HASH_BATCH", 32 * BLOCK)
    monkeypatch.setattr(verify, "HASH_BACKLOG_TOTAL", 8 * BLOCK)
    contents = [make_content(48 * BLOCK + i, seed=i) for i in range(16)]
    artifacts = [make_artifact(f"v{i}", c) for i, c in enumerate(contents)]
    storage = FakeStorage(*zip(artifacts, contents, strict=True), chunk=4 * BLOCK)
    async with open_reader(storage, make_settings(readahead_total=64 * BLOCK)) as reader:

        async def read_whole(i: int) -> None:
            handle = reader.open(artifacts[i], len(contents[i]))
            assert await read_through(reader, handle, BLOCK) == contents[i]
            await reader.release(handle)

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(read_whole, i)
        stats = reader.statistics()
    assert (stats.verified, stats.verify_failures) == (16, 0)
    assert stats.hashed_bytes == sum(len(c) for c in contents)
    assert stats.hash_backlog_peak <= 8 * BLOCK + 16 * BLOCK  # the cap, one read per handle
