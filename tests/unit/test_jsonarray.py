"""iter_array yields what json.loads gives, and refuses what it refuses."""

from __future__ import annotations

import json
import sys

import pytest

from simvuefs.backends.jsonarray import is_array, iter_array
from simvuefs.errors import ProtocolError

ARRAYS = [
    b"[]",
    b" [ ] \n",
    b'[{"id": "a", "name": "x"}]',
    b'\r\n[ {"id":"a"} ,\t{"id":"b","n":[1,2,{"c":null}]} , 3, "s", true ]\n',
    '[{"name": "caf\u00e9 \u2215"}]'.encode(),
    '[{"name": "utf-16"}]'.encode("utf-16"),
    b'\xef\xbb\xbf[{"bom": 1}]',
]
BROKEN = [b"[", b"[1,]", b"[1 2]", b"[1,,2]", b"[1] x", b"[1]]", b'[{"a": }]', b"[\xff]", b"[,1]"]


@pytest.mark.parametrize("body", ARRAYS)
def test_the_elements_of_an_array_are_those_json_loads_gives(body):
    # A BOM or another encoding hides the "[": the caller then decodes the whole body.
    assert is_array(body) == body.lstrip().startswith(b"[")
    assert list(iter_array(body, "GET x")) == json.loads(body)


@pytest.mark.parametrize("body", BROKEN)
def test_what_json_loads_refuses_is_a_protocol_error(body):
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        json.loads(body)
    with pytest.raises(ProtocolError, match=r"^GET x: the answer is not valid JSON"):
        list(iter_array(body, "GET x"))


def test_a_value_that_is_not_an_array_is_refused():
    assert not is_array(b' {"data": []}')
    with pytest.raises(ProtocolError, match="not a JSON array"):
        list(iter_array(b'{"data": []}', "GET x"))


def test_the_body_goes_once_decoded():
    # A listing's body is let go of before its elements are: the peak is its decoded text
    # and the records, not the body as well (issue 17).
    body = b"".join([b"[", b",".join(b'{"id": "%d"}' % i for i in range(3)), b"]"])
    held = sys.getrefcount(body)
    elements = iter_array(body, "GET x")
    assert sys.getrefcount(body) == held + 1  # the generator has not started
    assert next(elements) == {"id": "0"}
    assert sys.getrefcount(body) == held
    assert list(elements) == [{"id": "1"}, {"id": "2"}]
