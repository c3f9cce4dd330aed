"""Decode a JSON array one element at a time.

A listing of 10,000 artifacts is a JSON array of 10,000 objects. ``json.loads`` builds every
object before the caller turns the first into a record, so all the dictionaries (several
times the size of the records made from them) are alive at once. :func:`iter_array`
decodes one element, hands it over, and decodes the next: the caller's records replace the
dictionaries as they go. The body is let go of as soon as it is decoded (when the caller
hands over its only reference), so the peak is the decoded text plus the records.

Invariant: for any body, the elements yielded (when it is an array) are exactly those of
``json.loads(body)``, and a body that ``json.loads`` refuses raises ProtocolError, as
``transport.parse_json`` does, possibly after some elements were yielded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from simvuefs.errors import ProtocolError

_SPACE = re.compile(r"[ \t\n\r]*")
"""JSON's whitespace (nothing else may stand between tokens)."""
_DECODER = json.JSONDecoder()


def _skip_space(text: str, index: int) -> int:
    match = _SPACE.match(text, index)
    return index if match is None else match.end()


def is_array(body: bytes) -> bool:
    """True when *body* (JSON) is an array: its first character after whitespace is ``[``."""
    return body.lstrip(b" \t\n\r").startswith(b"[")


def iter_array(body: bytes, what: str) -> Iterator[object]:
    """Yield the elements of the JSON array *body* one by one (see the module docstring).

    Raises ProtocolError when *body* is not valid JSON or not an array.
    """
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what}: the answer is not valid JSON ({exc})") from None
    del body  # the bytes go now unless the caller kept them (a listing: as long as its text)
    index = _skip_space(text, 0)
    if not text.startswith("[", index):
        raise ProtocolError(f"{what}: the answer is not a JSON array")
    index = _skip_space(text, index + 1)
    try:
        if text.startswith("]", index):
            index += 1
        else:
            while True:
                element, index = _DECODER.raw_decode(text, index)
                yield element
                index = _skip_space(text, index)
                if text.startswith("]", index):
                    index += 1
                    break
                if not text.startswith(",", index):
                    raise ValueError(f"expected ',' or ']' at char {index}")
                index = _skip_space(text, index + 1)
        if _skip_space(text, index) != len(text):
            raise ValueError(f"extra data at char {index}")
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what}: the answer is not valid JSON ({exc})") from None
