"""The tests' devservers: the fixtures in ``tests/conftest.py`` and their constants.

Each fixture gives a :class:`testbed.devserver.DevServer` (see that module for what it
offers), started in the test's temporary directory:

- ``devserver``: a fresh, empty server for one test (function scope).
- ``seeded_devserver``: one server per session, seeded with ``--seed demo`` and a
  :data:`SEEDED_LARGE_SIZE` large artifact. Treat its data as read-only (other tests share
  it); call ``clear_faults()``/``reset_stats()`` yourself if you change them (the fixture
  clears faults before each test that uses it).
- ``devserver_factory``: ``devserver_factory("--upload-style", "put", "--no-dedup")``
  starts servers with extra options (stopped at the end of the test).

``conftest.py`` adds the log of every server a failing test used to its report. Stopping a
server that does not stop cleanly fails the test.
"""

from __future__ import annotations

MIB = 1024 * 1024
SEEDED_LARGE_SIZE = 64 * MIB
"""The size of the seeded devserver's large artifact (``large.bin``)."""
