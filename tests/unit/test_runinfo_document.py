"""The bytes of ``runs/<run>/.simvue-run.json`` (``run_document``), without a mount."""

from __future__ import annotations

import json

from simvuefs.fuse.runinfo import run_document
from simvuefs.models import Run


def test_document_bytes_are_deterministic():
    run = Run(id="r1", name="n", metadata={"z": {"y": 1, "x": [1, "ü"]}, "a": None})
    first = run_document(run)
    assert first == run_document(
        Run(id="r1", name="n", metadata={"a": None, "z": {"x": [1, "ü"], "y": 1}})
    )
    assert json.loads(first)["metadata"] == {"a": None, "z": {"x": [1, "ü"], "y": 1}}
    assert first.endswith(b"}\n")
    assert "ü".encode() in first
