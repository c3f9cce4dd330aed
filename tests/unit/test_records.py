"""ListedRecords: the records of a directory's last listing, reused by the next one.

Issue 17: a directory listed again at each metadata TTL made a new record per artifact each
time. The records handed to the next listing must be those of the last one, only while they
are young enough (their download URLs) and the directory is listed again and again.
"""

from __future__ import annotations

from record_util import art

from simvuefs.fuse.records import KEEP_GRACE, RENEW_AFTER, ListedRecords

KEY = ("run", "input")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_only_the_url_may_differ_for_a_record_to_stand_for_an_entry():
    record = art("a1", "x.dat")
    signed_again = record.replace(url="http://storage/a1?sig=2")
    assert record.same_but_url(signed_again)
    for change in ({"size": 11}, {"checksum": "ab"}, {"name": "y.dat"}, {"category": "input"}):
        assert not record.same_but_url(record.replace(**change)), change
    assert not record.same_but_url(record.replace(metadata={"k": 1}))


def test_the_next_listing_gets_the_records_of_the_last_one():
    clock = Clock()
    records = ListedRecords(16, timer=clock)
    assert records.known(KEY) == {}
    first = [art("a1", "x.dat"), art("a2", "y.dat")]
    records.keep(KEY, first, ttl=1.0)
    clock.now = 1.5
    known = records.known(KEY)
    assert known == {"a1": first[0], "a2": first[1]}
    assert all(known[a.id] is a for a in first)
    assert records.known(("run", "output")) == {}  # per directory


def test_records_go_when_the_directory_is_not_listed_again_in_time():
    clock = Clock()
    records = ListedRecords(16, timer=clock)
    records.keep(KEY, [art("a1", "x.dat")], ttl=1.0)
    clock.now = 2 * 1.0 + KEEP_GRACE - 0.1
    assert records.known(KEY)
    records.keep(KEY, [art("a1", "x.dat")], ttl=1.0)  # listed again: kept for longer
    clock.now += 2 * 1.0 + KEEP_GRACE + 0.1
    assert records.known(KEY) == {}


def test_records_are_renewed_so_download_urls_stay_young():
    clock = Clock()
    records = ListedRecords(16, timer=clock)
    old = art("a1", "x.dat")
    records.keep(KEY, [old], ttl=1.0)
    while clock.now < RENEW_AFTER - 1.0:  # listed every second, reusing the same record
        clock.now += 1.0
        assert records.known(KEY)["a1"] is old
        records.keep(KEY, [old], ttl=1.0)
    clock.now += 1.0
    assert records.known(KEY) == {}  # due: the next listing makes fresh ones
    fresh = art("a1", "x.dat")
    records.keep(KEY, [fresh], ttl=1.0)
    clock.now += 1.0
    assert records.known(KEY)["a1"] is fresh


def test_listings_trusted_forever_keep_nothing():
    records = ListedRecords(16, timer=Clock())
    records.keep(KEY, [art("a1", "x.dat")], ttl=float("inf"))
    assert records.known(KEY) == {}
