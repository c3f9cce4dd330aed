"""ArrayReader takes what json.loads gives, however the body is cut, and refuses what it
refuses."""

from __future__ import annotations

import json

import pytest

from simvuefs.backends import jsonarray
from simvuefs.backends.jsonarray import ArrayReader
from simvuefs.errors import ProtocolError

ARRAYS = [
    b"[]",
    b" [ ] \n",
    b"[12345]",
    b'[{"id": "a", "name": "x"}]',
    b'\r\n[ {"id":"a"} ,\t{"id":"b","n":[1,2,{"c":null}]} , 3, "s", true, -1.5e3 ]\n',
    '[{"name": "caf\u00e9 \u2215 \U0001f600"}]'.encode(),
    '[{"name": "utf-16"}, 7]'.encode("utf-16"),
    b'\xef\xbb\xbf[{"bom": 1}]',
]
BROKEN = [
    b"",
    b"[",
    b"[1",
    b'[{"a": "b"',
    b"[1,]",
    b"[1 2]",
    b"[1,,2]",
    b"[1] x",
    b"[1]]",
    b'[{"a": }]',
    b"[\xff]",
    b"[,1]",
    b'{"data": [1]',
]


def read(body: bytes, cut: int) -> list[object]:
    """The elements an ArrayReader takes from *body* fed in chunks of *cut* bytes."""
    taken: list[object] = []
    reader = ArrayReader("GET x", taken.append)
    for start in range(0, len(body), cut):
        reader.feed(body[start : start + cut])
    reader.finish()
    return taken


@pytest.mark.parametrize("body", ARRAYS)
@pytest.mark.parametrize("cut", [1, 2, 3, 5, 1000])
def test_the_elements_of_an_array_are_those_json_loads_gives(body, cut):
    assert read(body, cut) == json.loads(body)


@pytest.mark.parametrize("body", BROKEN)
@pytest.mark.parametrize("cut", [1, 3, 1000])
def test_what_json_loads_refuses_is_a_protocol_error(body, cut):
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        json.loads(body)
    with pytest.raises(ProtocolError, match=r"^GET x: the answer is not valid JSON"):
        read(body, cut)


@pytest.mark.parametrize("cut", [1, 4, 1000])
def test_the_paged_envelope_gives_its_data_and_other_values_are_refused(cut):
    assert read(b' {"data": [{"id": "a"}, 2]}', cut) == [{"id": "a"}, 2]
    with pytest.raises(ProtocolError, match="expected a JSON list, got dict"):
        read(b'{"items": []}', cut)
    with pytest.raises(ProtocolError, match="expected a JSON list, got int"):
        read(b"42", cut)


def test_elements_are_taken_as_their_chunk_arrives_and_only_a_tail_is_kept(monkeypatch):
    # A listing's body is never whole in memory: each element is taken once its last byte
    # is fed, and the reader keeps at most a slice's text and an element's tail (issue 17).
    monkeypatch.setattr(jsonarray, "SLICE_BYTES", 256)
    elements = [{"id": f"{i:06d}", "url": "u" * 80} for i in range(200)]
    body = json.dumps(elements).encode()
    taken: list[object] = []
    reader = ArrayReader("GET x", taken.append)
    fed = 0
    for start in range(0, len(body), 4096):
        reader.feed(body[start : start + 4096])
        fed = start + 4096
        complete = (
            len(json.loads(body[:fed].rsplit(b"}", 1)[0] + b"}]")) if fed < len(body) else 200
        )
        assert len(taken) in (complete, complete - 1)  # the last may wait for what follows
        assert len(reader._text) < 256 + 120  # noqa: SLF001 (the reader's own buffer)
    reader.finish()
    assert taken == elements


class CountingDecoder(json.JSONDecoder):
    calls = 0

    def raw_decode(self, s, idx=0):
        CountingDecoder.calls += 1
        return super().raw_decode(s, idx)


@pytest.mark.parametrize("tail", [b'"]', b'" x]'])
def test_a_long_element_is_not_decoded_again_at_every_chunk(monkeypatch, tail):
    # An element (or a broken body) longer than many chunks is tried again once the text
    # held has doubled, not at every chunk: O(n) work, not O(n^2) (a body may be 64 MiB).
    monkeypatch.setattr(jsonarray, "_DECODER", CountingDecoder())
    CountingDecoder.calls = 0
    body = b'[1, "' + b"x" * 1_000_000 + tail
    if tail == b'"]':
        assert read(body, 1000) == [1, "x" * 1_000_000]
    else:
        with pytest.raises(ProtocolError, match="not valid JSON"):
            read(body, 1000)
    assert CountingDecoder.calls < 40
