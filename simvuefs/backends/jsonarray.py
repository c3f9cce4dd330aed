"""Decode a JSON array chunk by chunk, one element at a time, as its body arrives.

A listing of 10,000 artifacts is a JSON array of 10,000 objects, about 5 MB. Reading the
whole body, joining its chunks and decoding its text put two or three copies of it in memory
beside the records made from it, at every re-listing of the directory (issue 17: they made
the resident size's peaks). :class:`ArrayReader` takes the body as it comes off the socket
(:meth:`ArrayReader.feed`), decodes each element as soon as its last byte has arrived, and
hands it to its ``take`` callback: what it holds is the text of one slice of a chunk
(:data:`SLICE_BYTES`) and the tail of an element not complete yet, never the whole body.

Invariants:

- For any body fed in any cut into chunks, the elements given to ``take`` are exactly those
  of ``json.loads(body)`` when it is an array, in order, and a body that ``json.loads``
  refuses raises ProtocolError (``"<what>: the answer is not valid JSON (...)"``, as
  ``transport.parse_json``), possibly after some elements were taken; a body cut short raises
  it at :meth:`ArrayReader.finish` at the latest.
- A body that is valid JSON but not an array is kept whole and decoded at
  :meth:`~ArrayReader.finish`: an object whose ``"data"`` is a list (the paged envelope some
  endpoints use) gives its elements; anything else raises ProtocolError.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable

from simvuefs.errors import ProtocolError

SLICE_BYTES = 64 * 1024
"""The most bytes of a chunk decoded to text at once (a socket read can bring megabytes)."""
_SPACE = re.compile(r"[ \t\n\r]*")
"""JSON's whitespace (nothing else may stand between tokens)."""
_NUMBER = re.compile(r"[-+0-9.eE]*")
"""The characters a JSON number is made of."""
_DECODER = json.JSONDecoder()
_BEFORE, _FIRST, _ELEMENT, _AFTER, _DONE, _WHOLE = range(6)
"""Where the reader is: before the ``[``, after it, before an element (after a ``,``),
after an element, after the ``]``; or not in an array (the body is kept whole)."""


class ArrayReader:
    """The elements of one JSON answer, given to *take* as its chunks are fed (module
    docstring). One body per reader: feed every chunk, then call :meth:`finish` once."""

    def __init__(self, what: str, take: Callable[[object], None]) -> None:
        self._what = what
        self._take = take
        self._start = b""  # the first bytes, until there are four to tell the encoding by
        self._decoder: codecs.IncrementalDecoder | None = None
        self._text = ""  # decoded text not consumed yet (all of it for a non-array)
        self._more: list[str] = []  # text decoded since, not looked at yet
        self._more_length = 0
        self._wait_for = 0  # look again once this much text is held (an element not whole)
        self._state = _BEFORE

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body; give every element they complete to ``take``."""
        if self._decoder is None:
            self._start += chunk
            if len(self._start) < 4:  # json.detect_encoding looks at the first four bytes
                return
            chunk, self._start = self._start, b""
            self._decoder = _decoder_for(chunk)
        view = memoryview(chunk)
        for start in range(0, len(view), SLICE_BYTES):
            self._decode(view[start : start + SLICE_BYTES], final=False)

    def finish(self) -> None:
        """The body has ended: take the last elements; ProtocolError if it is not a complete
        array (or a ``"data"`` envelope of one)."""
        if self._decoder is None:
            self._decoder = _decoder_for(self._start)
        self._decode(self._start, final=True)
        if self._state == _WHOLE:
            self._whole()
        elif self._state != _DONE:
            raise ProtocolError(f"{self._what}: the answer is not valid JSON (cut short)")

    def _decode(self, data: bytes | memoryview, *, final: bool) -> None:
        assert self._decoder is not None
        try:
            piece = self._decoder.decode(data, final)
            self._more.append(piece)
            self._more_length += len(piece)
            if not final and (
                self._state == _WHOLE or len(self._text) + self._more_length < self._wait_for
            ):
                return
            self._text += "".join(self._more)
            self._more.clear()
            self._more_length = 0
            if self._state != _WHOLE:
                self._scan(final)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ProtocolError(f"{self._what}: the answer is not valid JSON ({exc})") from None

    def _scan(self, final: bool) -> None:
        """Consume what the text holds; keep the tail that may be the start of an element."""
        text, index, state = self._text, 0, self._state
        self._wait_for = 0
        try:
            while (index := _skip_space(text, index)) < len(text):
                char = text[index]
                if state == _BEFORE:
                    if char != "[":
                        state = _WHOLE  # kept whole, decoded by finish()
                        return
                    state, index = _FIRST, index + 1
                elif state == _DONE:
                    raise ValueError(f"extra data at {char!r}")
                elif state == _AFTER:
                    if char not in ",]":
                        raise ValueError(f"expected ',' or ']' at {char!r}")
                    state, index = (_ELEMENT if char == "," else _DONE), index + 1
                elif state == _FIRST and char == "]":
                    state, index = _DONE, index + 1
                else:
                    if not final and _NUMBER.match(text, index).end() == len(text):  # type: ignore[union-attr]
                        return  # a number that may go on in the next chunk
                    try:
                        element, end = _DECODER.raw_decode(text, index)
                    except ValueError:
                        if final:
                            raise
                        # Maybe an element not complete yet: tried again once the text held
                        # doubled, so a long element (or a broken body) is decoded O(n) times.
                        self._wait_for = 2 * (len(text) - index)
                        return
                    self._take(element)
                    state, index = _AFTER, end
        finally:
            self._state, self._text = state, text[index:]

    def _whole(self) -> None:
        """Decode a body that is not an array: the elements of a ``"data"`` list, or refuse."""
        try:
            data = json.loads(self._text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"{self._what}: the answer is not valid JSON ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ProtocolError(f"{self._what}: expected a JSON list, got {type(data).__name__}")
        for element in data:
            self._take(element)


def _skip_space(text: str, index: int) -> int:
    match = _SPACE.match(text, index)
    return index if match is None else match.end()


def _decoder_for(start: bytes) -> codecs.IncrementalDecoder:
    """The incremental decoder of the encoding ``json.loads`` would detect from *start*."""
    return codecs.getincrementaldecoder(json.detect_encoding(start))("surrogatepass")
