"""Tests of simvuefs.models: lenient parsing of server records, and the artifact-name rule."""

from __future__ import annotations

import copy
import errno
import json
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simvuefs.errors import LocalError, ProtocolError
from simvuefs.models import (
    ARTIFACT_NAME_RULE,
    NAME_REGEX,
    Artifact,
    Run,
    UploadSlot,
    check_artifact_name,
    format_timestamp,
    is_artifact_name,
    parse_timestamp,
)

WHEN = datetime(2026, 11, 22, 17, 52, 12, 243268, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T17:52:12.243268",
        "2026-11-22T17:52:12.243268Z",
        "2026-11-22T17:52:12.243268+00:00",
        "2026-11-22T18:52:12.243268+01:00",
        " 2026-11-22T17:52:12.243268 ",
    ],
)
def test_parse_timestamp_accepts_server_and_iso_forms(text: str) -> None:
    assert parse_timestamp(text) == WHEN


def test_parse_timestamp_without_fraction() -> None:
    assert parse_timestamp("2026-11-22T17:52:12") == WHEN.replace(microsecond=0)


@pytest.mark.parametrize("value", [None, "", "yesterday", 1700000000, ["2026-01-01"], {}])
def test_parse_timestamp_rejects_garbage_quietly(value: object) -> None:
    assert parse_timestamp(value) is None


def test_format_timestamp_is_the_servers_format() -> None:
    assert format_timestamp(WHEN) == "2026-11-22T17:52:12.243268"
    plus_one = WHEN.astimezone(timezone(timedelta(hours=1)))
    assert format_timestamp(plus_one) == "2026-11-22T17:52:12.243268"
    assert (
        format_timestamp(WHEN.replace(tzinfo=None, microsecond=0)) == "2026-11-22T17:52:12.000000"
    )
    assert parse_timestamp(format_timestamp(WHEN)) == WHEN


def test_run_from_a_full_record() -> None:
    run = Run.from_json(
        {
            "id": "r1",
            "name": "probe-run",
            "folder": "/probe/sub",
            "status": "completed",
            "created": "2026-11-22T17:52:12.243268",
            "started": "2026-11-22T17:52:13.000000",
            "endtime": "2026-11-22T17:53:00.000000",
            "description": "d",
            "tags": ["a", 3, "b"],
            "metadata": {"k": 1},
            "extra": "ignored",
        }
    )
    assert run.id == "r1"
    assert run.name == "probe-run"
    assert run.folder == "/probe/sub"
    assert run.created == WHEN
    assert run.tags == ("a", "b")
    assert run.metadata == {"k": 1}
    assert run.is_finished


def test_run_defaults_and_id_fill_in() -> None:
    run = Run.from_json({"name": "n", "folder": {"path": "/f"}, "tags": "x"}, run_id="r9")
    assert (run.id, run.folder, run.status, run.tags, run.created) == (
        "r9",
        "/f",
        "unknown",
        (),
        None,
    )
    assert not run.is_finished
    assert Run.from_json({"id": "r", "name": "n", "folder": ""}).folder == "/"


@pytest.mark.parametrize(
    "record",
    [{"name": "no id"}, {"id": "", "name": "n"}, {"id": 7, "name": "n"}, {"id": "r"}, ["id"], None],
)
def test_run_without_id_or_name_is_a_protocol_error(record: object) -> None:
    with pytest.raises(ProtocolError):
        Run.from_json(record)


def test_artifact_from_a_listing_entry() -> None:
    artifact = Artifact.from_json(
        {
            "id": "a1",
            "name": "code/script.py",
            "size": 12,
            "checksum": "ABCDEF",
            "mime_type": "text/x-python",
            "original_path": "/home/u/script.py",
            "url": "http://h/storage/a1?sig=x",
            "uploaded": True,
            "created": "2026-11-22T17:52:12.243268",
            "category": "code",
            "metadata": None,
        }
    )
    assert artifact.checksum == "abcdef"
    assert artifact.category == "code"
    assert artifact.url == "http://h/storage/a1?sig=x"
    assert artifact.metadata == {}
    assert not artifact.is_object


@pytest.mark.parametrize(
    ("field", "value", "attribute", "expected"),
    [
        ("size", -1, "size", 0),
        ("size", True, "size", 0),
        ("size", "12", "size", 0),
        ("url", "", "url", None),
        ("url", 5, "url", None),
        ("category", "other", "category", None),
        ("category", ["input"], "category", None),
        ("mime_type", None, "mime_type", "application/octet-stream"),
        ("uploaded", False, "uploaded", False),
    ],
)
def test_artifact_lenient_fields(
    field: str, value: object, attribute: str, expected: object
) -> None:
    artifact = Artifact.from_json({"id": "a", "name": "n", field: value})
    assert getattr(artifact, attribute) == expected


def test_object_artifacts_have_an_empty_original_path() -> None:
    assert Artifact.from_json({"id": "a", "name": "n", "original_path": ""}).is_object
    assert Artifact.from_json({"id": "a", "name": "n"}).is_object


ARTIFACT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize(
    ("original_path", "url", "created"),
    [
        (
            "simvuefs://r1/input/plots/a b.csv",
            f"http://127.0.0.1:8080/storage/artifacts/{ARTIFACT_ID}?expires=1&sig=ff",
            WHEN,
        ),
        ("/home/u/elsewhere.csv", "file:///tmp/x", datetime(1, 1, 1, tzinfo=UTC)),
        ("", None, None),
        ("plots/a b.csv", "s3://bucket/key", WHEN.astimezone(timezone(timedelta(hours=5)))),
    ],
)
def test_a_record_kept_compactly_gives_back_what_the_server_sent(
    original_path: str, url: str | None, created: datetime | None
) -> None:
    # Issue 17: a mount keeps a record per artifact listed; it stores the checksum as its
    # bytes, created as microseconds, and the path and URL around the name and id.
    fields: dict[str, Any] = {
        "id": ARTIFACT_ID,
        "name": "plots/a b.csv",
        "size": 1500,
        "checksum": DIGEST,
        "original_path": original_path,
        "url": url,
        "created": created,
        "category": "input",
    }
    artifact = Artifact(**fields)
    assert {name: getattr(artifact, name) for name in fields} == fields
    assert artifact.is_object == (original_path == "")
    assert artifact.replace(size=1) == Artifact(**{**fields, "size": 1})
    assert artifact == Artifact(**fields)
    assert hash(artifact) == hash(Artifact(**fields))
    assert artifact != artifact.replace(url="http://elsewhere/")
    assert artifact.same_but_url(artifact.replace(url="http://elsewhere/"))
    with pytest.raises(AttributeError):
        artifact.size = 2  # type: ignore[misc]
    assert copy.copy(artifact) is artifact
    assert copy.deepcopy({"a": artifact})["a"] is artifact


@pytest.mark.parametrize("checksum", ["", "abc", "ABCDEF", "ab cd", "0g", DIGEST, DIGEST.upper()])
def test_a_checksum_comes_back_as_given(checksum: str) -> None:
    assert Artifact(id="a", name="n", checksum=checksum).checksum == checksum


RECORDS = 1000
RECORD_BUDGET = 600
"""Bytes a listed record keeps (the ``Artifact`` and what it alone holds), 1,000 entries of a
mount-written file's shape: 551 (757 when it kept the fields as sent: hex digest 113,
datetime 48, the path 83 and the whole URL 170 B)."""


def test_a_listed_record_keeps_its_fields_compactly() -> None:
    def entry(i: int) -> dict[str, object]:
        ident = f"{i:08x}-d9cb-469f-a165-70867728950e"
        return {
            "id": ident,
            "name": f"file-{i:04d}.dat",
            "size": 1500 + i,
            "checksum": f"{i:08x}" + DIGEST[8:],
            "original_path": f"simvuefs://r1/input/file-{i:04d}.dat",
            "url": f"http://127.0.0.1:8080/storage/artifacts/{ident}?expires=17&sig={DIGEST}",
            "created": "2026-11-22T17:52:12.243268",
            "mime_type": "application/octet-stream",
            "category": "input",
        }

    text = json.dumps([entry(i) for i in range(RECORDS)])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records = [Artifact.from_json(item) for item in json.loads(text)]
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert records[7].url == entry(7)["url"]
    assert kept / RECORDS < RECORD_BUDGET, f"{kept / RECORDS:.0f} B per record"


def test_protocol_errors_do_not_leak_signed_urls() -> None:
    with pytest.raises(ProtocolError) as info:
        Artifact.from_json({"id": "a", "url": "http://h/storage/a?X-Signature=SECRET"})
    assert "SECRET" not in str(info.value)


def test_upload_slot_styles() -> None:
    put = UploadSlot.from_json({"id": "a", "url": "http://h/up?sig=1"})
    assert (put.artifact_id, put.url, put.fields) == ("a", "http://h/up?sig=1", ())
    post = UploadSlot.from_json({"id": "a", "url": "http://h/up", "fields": {"key": "k", "n": 1}})
    assert post.fields == (("key", "k"), ("n", "1"))
    dedup = UploadSlot.from_json({"id": "a", "url": None})
    assert dedup.url is None
    with pytest.raises(ProtocolError):
        UploadSlot.from_json({"url": "http://h/up"})


def test_name_regex_matches_the_clients() -> None:
    assert NAME_REGEX.match("code/script v1.2:final_x-y")
    assert not NAME_REGEX.match("bad*name")
    assert not NAME_REGEX.match("")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("mesh.dat", True),
        ("system/mesh.dat", True),
        ("a b/c-d_e.f:g", True),
        (".mesh.dat.XyZ123", True),
        ("", False),
        ("/abs", False),
        ("dir/", False),
        ("a//b", False),
        ("../escape", False),
        ("a/./b", False),
        ("tab\there", False),
        ("new\nline", False),
        ("trailing\n", False),
        ("data(1).csv", False),
        ("naïve.txt", False),
    ],
)
def test_artifact_names(name: str, valid: bool) -> None:
    assert is_artifact_name(name) is valid
    if valid:
        check_artifact_name(name)
    else:
        with pytest.raises(LocalError) as refused:
            check_artifact_name(name)
        assert refused.value.errno == errno.EINVAL
        assert str(refused.value) == f"refusing the name {name!r}: {ARTIFACT_NAME_RULE}"


def test_the_name_rule_message_states_the_clients_regex() -> None:
    """The message users read names the rule as SEMANTICS.md does ("Names and directories")."""
    assert NAME_REGEX.pattern in ARTIFACT_NAME_RULE
    assert "ASCII letters, digits, spaces and - _ . :" in ARTIFACT_NAME_RULE
    assert "no tabs or newlines" in ARTIFACT_NAME_RULE


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_records = st.fixed_dictionaries(
    {},
    optional={
        key: _json | st.text(max_size=30)
        for key in ("id", "name", "size", "url", "folder", "tags", "created", "category", "fields")
    },
)


@given(record=_records | _json)
def test_from_json_raises_only_protocol_error(record: Any) -> None:
    for parse in (Run.from_json, Artifact.from_json, UploadSlot.from_json):
        try:
            parse(record)
        except ProtocolError:
            pass
