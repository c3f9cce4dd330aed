"""The devserver's parts that need no running server: seeding a store directly, and the
streaming multipart parser of S3-style upload forms. The devserver over HTTP is
``tests/server/test_devserver.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import multipart_body
from hypothesis import given, settings
from hypothesis import strategies as st

from simvuefs.devserver import multipart
from simvuefs.devserver.seed import large_content, seed_demo
from simvuefs.devserver.store import Store

MIB = 1024 * 1024


def test_seeding_a_store_writes_the_large_artifact_in_place(tmp_path: Path) -> None:
    store = Store(tmp_path / "direct")
    ids = seed_demo(store, large_size=256 * MIB)
    blob = store.blob_path(store.get_artifact(ids["large"])["checksum"])  # type: ignore[index]
    store.close()
    with blob.open("rb") as file:
        assert file.read(MIB + 10) == large_content(0, MIB + 10)
        file.seek(200 * MIB - 5)
        assert file.read(10) == large_content(200 * MIB - 5, 10)
    assert blob.stat().st_size == 256 * MIB


async def collect(chunks: list[bytes], boundary: bytes) -> list[tuple[str, str | None, bytes]]:
    async def source() -> Any:
        for chunk in chunks:
            yield chunk

    parts: list[tuple[str, str | None, bytes]] = []
    async for event in multipart.iter_parts(source(), boundary):
        if isinstance(event, multipart.PartStart):
            parts.append((event.name, event.filename, b""))
        elif isinstance(event, bytes):
            name, filename, data = parts[-1]
            parts[-1] = (name, filename, data + event)
    return parts


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8),
)
async def test_multipart_parser_any_chunking(payload: bytes, cuts: list[int]) -> None:
    boundary = b"b0und4ry"
    body = b"".join(multipart_body({"key": "k1", "x": "--b0und"}, iter([payload]), "b0und4ry"))
    points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    chunks = [body[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert await collect(chunks, boundary) == [
        ("key", None, b"k1"),
        ("x", None, b"--b0und"),
        ("file", "data.bin", payload),
    ]


async def test_multipart_parser_rejects_truncated_body() -> None:
    body = b"".join(multipart_body({}, iter([b"abc"]), "zz"))
    with pytest.raises(multipart.MultipartError):
        await collect([body[:-12]], b"zz")
    assert multipart.boundary_from('multipart/form-data; boundary="a b"') == b"a b"
    with pytest.raises(multipart.MultipartError):
        multipart.boundary_from("application/json")
