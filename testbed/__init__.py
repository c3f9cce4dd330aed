"""The devserver and mount harness shared by tests/, benchmarks/ and scripts/ (not shipped).

- :mod:`testbed.devserver`: a ``simvuefs devserver`` subprocess and its admin API.
- :mod:`testbed.mounts`: ``simvuefs mount`` through the real CLI (daemonised or in the
  foreground), any FUSE program in the foreground, the mount table, unmounting, teardown.
- :mod:`testbed.processes`: polling, stopping a process by pid, running a tool with a timeout.

It sits at the repository root, beside ``simvuefs/``, ``tests/`` and ``benchmarks/``,
because every user starts there: pytest puts the root on ``sys.path`` (``pythonpath`` in
pyproject.toml), and ``scripts/bench``, ``scripts/bench-listings`` and ``scripts/stress``
insert it. setuptools packages only ``simvuefs*``, so it is never installed.

Invariants:

- It never imports simvuefs. It runs simvuefs only as a command (``python -m simvuefs``),
  and finds fusermount and reads ``/proc/mounts`` itself, so teardown works even when
  simvuefs is broken (``tests/unit/test_testbed.py`` checks the imports).
- What it mounts it unmounts (``fusermount3 -u``, lazily ``-uz`` when busy), and what it
  starts it stops (SIGTERM, then SIGKILL), also when the caller fails.
- Its failures are AssertionErrors: a test reports them as failures, a script stops with
  the message.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository root."""
