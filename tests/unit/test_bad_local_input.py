"""Bad local input: arguments a user should never write are answered with a short error
(one line for our own checks, argparse's usage and one line for its own), a non-zero exit
status, and no traceback. Nothing is mounted: every case fails before that. Malformed
configs, which the real ``simvuefs mount`` refuses, are ``tests/mount/test_mount_refusals.py``.

What a server should never send is ``tests/mount/test_hostile.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from control_util import clean_env, run_cli


@pytest.mark.parametrize(
    "args",
    [
        ["mount"],
        ["mount", "MNT", "--metadata-ttl", "-3"],
        ["mount", "MNT", "--metadata-ttl", "soon"],
        ["mount", "MNT", "--log-level", "LOUD"],
        ["mount", "MNT", "--no-such-option"],
        ["unmount"],
        ["devserver", "--data", "DATA", "--fault", "nonsense"],
        ["devserver", "--data", "DATA", "--fault", "extra_runs=-1"],
        ["devserver", "--data", "DATA", "--port", "70000"],
        ["frobnicate"],
    ],
    ids=lambda args: " ".join(args),
)
def test_malformed_arguments_give_a_short_error(tmp_path: Path, args: list[str]) -> None:
    argv = [a.replace("MNT", str(tmp_path)).replace("DATA", str(tmp_path / "d")) for a in args]
    result = run_cli(*argv, env=clean_env(tmp_path))
    assert result.returncode == 2
    text = result.stderr.decode(errors="replace")
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    # argparse: usage, then one error line; our own checks: just one line.
    assert lines[-1].startswith("simvuefs"), lines
    assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), lines
