"""A streaming ``multipart/form-data`` parser for S3-style POST uploads.

Starlette's form parser needs python-multipart and spools whole files; this one yields the
file part's bytes as they arrive, so a 300 MiB upload needs only a few chunks of memory.
The parser holds at most one incoming chunk plus the length of the boundary.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

MAX_HEADER_BYTES = 16 * 1024
_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


class MultipartError(ValueError):
    """The body is not well-formed multipart data."""


@dataclass(frozen=True)
class PartStart:
    """The headers of a part have been read; its data follows as ``bytes`` events."""

    name: str
    filename: str | None


@dataclass(frozen=True)
class PartEnd:
    """The current part is complete."""


def boundary_from(content_type: str) -> bytes:
    """Return the boundary of a ``multipart/form-data`` *content_type*."""
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {kind.strip() or 'nothing'!r}")
    params = _parse_params(";" + rest)
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise MultipartError("multipart/form-data without a usable boundary")
    return boundary.encode("latin-1")


def _parse_params(text: str) -> dict[str, str]:
    return {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(text)
    }


def _part_start(header_block: bytes) -> PartStart:
    headers: dict[str, str] = {}
    for line in header_block.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    params = _parse_params(disposition[disposition.find(";") :] if ";" in disposition else "")
    if "name" not in params:
        raise MultipartError("multipart part without a name")
    return PartStart(name=params["name"], filename=params.get("filename"))


async def iter_parts(
    chunks: AsyncIterator[bytes], boundary: bytes
) -> AsyncIterator[PartStart | bytes | PartEnd]:
    """Yield, for each part of the body given as *chunks*: a PartStart, its data as bytes
    (possibly several pieces), then a PartEnd. Raises MultipartError on malformed input."""
    delimiter = b"--" + boundary
    separator = b"\r\n" + delimiter
    buffer = bytearray()
    source = chunks.__aiter__()

    async def fill() -> None:
        try:
            buffer.extend(await source.__anext__())
        except StopAsyncIteration:
            raise MultipartError("multipart body ends too early") from None

    while (found := buffer.find(delimiter)) < 0:
        del buffer[: max(0, len(buffer) - len(delimiter))]
        await fill()
    del buffer[: found + len(delimiter)]
    while True:
        while len(buffer) < 2:
            await fill()
        if buffer.startswith(b"--"):
            return
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise MultipartError("multipart part headers too long")
            await fill()
        yield _part_start(bytes(buffer[:end]))
        del buffer[: end + 4]
        while (found := buffer.find(separator)) < 0:
            keep = len(separator) - 1
            if len(buffer) > keep:
                yield bytes(buffer[:-keep])
                del buffer[:-keep]
            await fill()
        if found:
            yield bytes(buffer[:found])
        del buffer[: found + len(separator)]
        yield PartEnd()
