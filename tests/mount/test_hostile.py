"""Hostile input: names and data a server should never send, configs and arguments a user
should never write. simvuefs must show what it safely can, leave the rest out with a
warning, never crash, and answer bad local input with one line.

Server-side names bypass the API's name rules through the devserver's admin routes
(``POST /admin/runs``, ``POST /admin/artifacts``), so they reach the mount exactly as a
broken or malicious server would send them. Expectations follow the naming rules of
SEMANTICS.md: control characters become U+FFFD, ``/`` in run names U+2215, names that still
cannot be file names (``.``, ``..``, empty, over 255 bytes) are reachable only as
``<name>@<id>`` when that alias is usable, and are otherwise left out with a warning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import raw_artifact, raw_run

from testbed.devserver import DevServer
from testbed.mounts import mounted
from testbed.processes import run_tool

REPLACEMENT = "\ufffd"
RUN_SLASH = "\u2215"
LONG = "x" * 300
RANDOM_ID = re.compile(r"[0-9a-f]{16,}(\.[a-z]+)?")
"""A spool id or mount key (random or hashed hex, maybe with a suffix): named after nothing."""


def content_of(name: str) -> str:
    """Distinct, recognisable content for the artifact called *name*."""
    return f"content of {name!r}\n"


# Run names as a server might send them -> how runs/ must show them (None: left out, with
# a warning naming the run). "{id}" stands for the run's id. A run without a name is not a
# usable record at all (the client skips it with a warning about malformed entries).
UNNAMED = ""
RUN_CASES: dict[str, str | None] = {
    "ünïcødé ☃ 名前": "ünïcødé ☃ 名前",
    "rtl\u202eevil": "rtl\u202eevil",
    "bell\x07name": f"bell{REPLACEMENT}name",
    "new\nline\ttab": f"new{REPLACEMENT}line{REPLACEMENT}tab",
    "nul\x00byte": f"nul{REPLACEMENT}byte",
    "/": RUN_SLASH,
    "../../etc": f"..{RUN_SLASH}..{RUN_SLASH}etc",
    ".": ".@{id}",
    "..": "..@{id}",
    LONG: None,
}

# Artifact names -> the path the mount shows them at (None: left out).
ARTIFACT_CASES: dict[str, str | None] = {
    "../../etc/passwd": None,
    "a/./b": None,
    "..": None,
    "/abs//path.txt": "abs/path.txt",
    "trailing/": "trailing",
    "ctrl\x1b[31mred": f"ctrl{REPLACEMENT}[31mred",
    "caf\u00e9": "caf\u00e9",  # NFC
    "cafe\u0301": "cafe\u0301",  # NFD: a different name, shown as such
    LONG: None,
    "d" * 200 + "/" + "e" * 200: "d" * 200 + "/" + "e" * 200,
    "/".join(["deep"] * 100) + "/leaf": "/".join(["deep"] * 100) + "/leaf",
}


@pytest.fixture
def hostile_server(devserver: DevServer) -> dict[str, Any]:
    """Runs and artifacts with hostile names; returns what the mount must show."""
    runs: dict[str, str] = {}
    left_out: list[str] = []
    for name, shown in RUN_CASES.items():
        run_id = raw_run(devserver, name)
        if shown is None:
            left_out.append(run_id)
        else:
            runs[shown.format(id=run_id)] = run_id
    raw_run(devserver, UNNAMED)
    first, second = raw_run(devserver, "dup"), raw_run(devserver, "dup")
    runs["dup"], runs[f"dup@{first}"] = second, first
    holder = raw_run(devserver, "holder")
    runs["holder"] = holder
    files: dict[str, str] = {}
    for name, shown in ARTIFACT_CASES.items():
        artifact_id = raw_artifact(devserver, holder, {"name": name}, content_of(name))
        if shown is None:
            left_out.append(artifact_id)
        else:
            files[shown] = content_of(name)
    return {"runs": runs, "files": files, "left_out": left_out, "holder": holder}


@pytest.fixture
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the mount's cache and state directories at an empty directory of this test."""
    base = tmp_path / "xdg"
    for variable in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        path = base / variable.lower()
        path.mkdir(parents=True)
        monkeypatch.setenv(variable, str(path))
    return base


def walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for top, dirs, files in os.walk(root):
        yield Path(top), dirs, files


def test_hostile_names_are_shown_safely_or_left_out_with_a_warning(
    devserver: DevServer, hostile_server: dict[str, Any], tmp_path: Path, private_dirs: Path
) -> None:
    with mounted(devserver, tmp_path) as mount:
        runs = mount.path / "runs"
        listed = sorted(os.listdir(runs))
        assert listed == sorted(hostile_server["runs"]), (listed, sorted(hostile_server["runs"]))
        for shown, run_id in hostile_server["runs"].items():
            assert os.getxattr(runs / shown, "user.simvue.id").decode() == run_id
        output = runs / "holder" / "output"
        found = {}
        for top, _, files in walk(output):
            assert os.path.realpath(top).startswith(str(output))  # nothing leads outside
            for name in files:
                assert name not in (".", "..")
                assert "/" not in name
                assert "\0" not in name
                assert len(os.fsencode(name)) <= 255
                found[str((top / name).relative_to(output))] = (top / name).read_text()
        assert found == hostile_server["files"]
        log = mount.log_file.read_text(errors="replace")
        for object_id in hostile_server["left_out"]:
            assert object_id in log, f"no warning names {object_id}"
        assert "skipped a malformed entry (run record without a usable 'name'" in log
        assert "Traceback" not in log
        # Files written through the mount go through the spool under random ids.
        inputs = runs / "holder" / "input"
        (inputs / "deep").mkdir()
        (inputs / "deep" / "passwd").write_bytes(b"uploaded\n")
        with open(inputs / "ctrl.txt", "wb") as pending:
            pending.write(b"still open while the spool is inspected\n")
            spooled = [str(p.relative_to(private_dirs)) for p in private_dirs.rglob("*")]
        assert any("spool" in path for path in spooled), spooled
    # Whatever the mount keeps on disk (spool, state) is never named after a run, an
    # artifact or a file written through it: during the writes or after the unmount.
    fragments = ("passwd", "caf", "ctrl", "deep", "abs", "trailing", "holder", "dup", "名前")
    spooled += [str(p.relative_to(private_dirs)) for p in private_dirs.rglob("*")]
    for relative in spooled:
        # Random ids and keys are hex, and may hold "caf" or "abs"-like runs by chance.
        named = [part for part in Path(relative).parts if not RANDOM_ID.fullmatch(part)]
        assert not any(fragment in part for part in named for fragment in fragments), relative


def test_sizes_that_lie_give_eio_not_padding(devserver: DevServer, tmp_path: Path) -> None:
    holder = raw_run(devserver, "liars")
    raw_artifact(devserver, holder, {"name": "longer.bin", "size": 100_000}, "short\n")
    raw_artifact(devserver, holder, {"name": "shorter.bin", "size": 3}, "longer than 3\n")
    raw_artifact(devserver, holder, {"name": "negative.bin", "size": -5}, "x\n")
    raw_artifact(devserver, holder, {"name": "text.bin", "size": "many"}, "y\n")
    with mounted(devserver, tmp_path) as mount:
        output = mount.path / "runs" / "liars" / "output"
        listed = set(os.listdir(output))
        assert {"longer.bin", "shorter.bin"} <= listed
        longer = run_tool(["cat", output / "longer.bin"], check=False)
        assert longer.returncode != 0
        assert b"Input/output error" in longer.stderr
        assert not longer.stdout.strip(b"\0")[6:]  # never invented content after the end
        shorter = run_tool(["cat", output / "shorter.bin"], check=False)
        assert shorter.stdout in (b"", b"lon")  # the size the server claimed, at most
        for name in listed - {"longer.bin", "shorter.bin"}:
            run_tool(["cat", output / name], check=False)  # whatever it says: no crash
        assert sorted(os.listdir(output)) == sorted(listed)  # still serving
        assert "failed unexpectedly" not in mount.log_file.read_text(errors="replace")


def test_huge_listings_are_served_with_bounded_memory(devserver: DevServer, tmp_path: Path) -> None:
    raw_run(devserver, "real")
    devserver.set_faults(extra_runs=20_000, extra_artifacts=20_000)
    with mounted(devserver, tmp_path, "--metadata-ttl", "indefinite") as mount:
        names = os.listdir(mount.path / "runs")
        assert len(names) == 20_001
        artifacts = os.listdir(mount.path / "runs" / "real" / "output")
        assert len(artifacts) == 20_000
        assert (mount.path / "runs" / "synthetic-019999" / "output" / artifacts[-1]).stat()
        rss = resident_kib(mount.pid)
    assert rss < 300 * 1024, f"daemon RSS {rss} KiB after listing 40 000 entries"


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
