"""Model-based test: random server-side changes and mount-side observations, against a model.

A Hypothesis ``RuleBasedStateMachine`` drives one real devserver and one real mount of it
(the ``simvuefs mount`` CLI, through the kernel). Server-side rules change the server the
way the official client would (new runs, ``created`` or ``running``, a run started,
artifacts uploaded with the client's request sequence, an artifact attached to a second
run, deleted runs), recording every change in a plain model. Mount-side rules write new
files into ``input/`` (upload at close), also while the server refuses them (the file stays
pending: removed, or landing by itself once the server is back), remove a file before
closing it, overwrite, remove and rename inputs (onto existing names too), remove emptied
directories, list directories, stat files and read byte ranges through the mount, and
compare with what the model says the mount must show, computed by a reference
implementation of the naming and writing rules (SEMANTICS.md) written independently of
simvuefs. Changes to inputs follow the two modes of SEMANTICS.md, with their exact errnos:
*editable* while the run is ``created`` (inputs can be overwritten, removed and renamed,
onto existing names too, unless attached to another run as well), *append-only* once it
has started (new files only; a file this mount just wrote stays a tool's transient file:
it can be overwritten, removed, replaced by a rename and renamed, unless another run
holds it too).

The mount runs with ``--metadata-ttl 0`` (listings, names and run states are never trusted
from a cache) and no run finishes (finished runs have a longer TTL), so an observation must
match the model right after a change: there is no window in which both answers are right.
Each example starts from a server without runs; the mount is shared by the examples. Rules
draw runs and files by their position in creation order (never by server id), so that
Hypothesis can replay and shrink examples although ids and times differ on every replay.

For CI the examples come from one seed, printed with the test's output and given back with
``--hypothesis-seed`` to replay a run, and shrinking a failure is bounded well inside the
pytest timeout, so a failure shows its falsifying steps instead of a timeout.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from helpers import sha256, store_artifact
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted

CATEGORIES = ("input", "output", "code")
RUN_SLASH = "\u2215"
# Few names, so that duplicates, nesting and file/directory clashes are frequent.
RUN_NAMES = ("alpha", "beta", "a/b", "x y", "t:1.0")
ARTIFACT_NAMES = ("a.txt", "b.dat", "d", "d/a.txt", "d/e/f.bin", "/d//g", "b.dat/z")
# Names the mount writes into input/ (top level; some collide with the server's names).
WRITTEN_NAMES = ("new.txt", "a.txt", "w x.dat", "b.dat", "d")
# A file this mount wrote can be renamed, replaced and removed as a tool's transient file
# for 30 s (SEMANTICS.md); the rules that rely on it stay well inside that, and the model
# makes no claim between RENAME_WINDOW and 30 s (no rule sleeps).
RENAME_WINDOW = 15.0
RUN_STATES = ("running", "created")
# A pending upload is retried after 1-2 s once the server is back (SEMANTICS.md).
PENDING_LANDS_WITHIN = 10.0
CONTENTS = st.one_of(
    st.sampled_from([b"", b"same content\n"]),  # shared checksums (dedup on the server)
    st.binary(max_size=5000),
)


@dataclass
class ModelArtifact:
    id: str
    name: str
    created: str
    content: bytes


@dataclass
class ModelRun:
    id: str
    name: str
    created: str
    status: str = "running"
    attached: dict[str, str] = field(default_factory=dict)  # artifact id -> category
    # Directories of input/ the mount keeps after removing or renaming away what they held
    # (shown, empty, until rmdir): paths below input/.
    kept_dirs: set[str] = field(default_factory=set)

    @property
    def editable(self) -> bool:
        """SEMANTICS.md: input/ changes like a local directory while the run is created."""
        return self.status == "created"


# -- the reference naming rules ------------------------------------------------------------


def newest_first(items: list[Any]) -> list[Any]:
    """Order by (created, id), newest first: the newest keeps the plain name."""
    return sorted(items, key=lambda item: (item.created, item.id), reverse=True)


def run_directories(runs: list[ModelRun]) -> dict[str, str]:
    """Listed names in runs/ -> run id: "/" becomes U+2215; among runs with one name the
    newest is listed plainly, the others as "<name>@<id>"."""
    groups: dict[str, list[ModelRun]] = {}
    for run in runs:
        groups.setdefault(run.name.replace("/", RUN_SLASH), []).append(run)
    listed = {}
    for base, group in groups.items():
        first, *others = newest_first(group)
        listed[base] = first.id
        listed.update({f"{base}@{run.id}": run.id for run in others})
    return listed


def category_tree(
    artifacts: list[ModelArtifact], kept_dirs: set[str] | None = None
) -> dict[str, dict[str, str | None]]:
    """Directory path ("" = the category) -> {entry name: artifact id, or None for a
    directory}. Names split on "/" (empty parts dropped); a directory keeps a name a file
    also wants (the server's directories and the mount's *kept_dirs* alike); files sharing a
    name: the newest is plain, the others "<name>@<id>"."""
    dirs: dict[str, dict[str, str | None]] = {"": {}}
    files: dict[str, dict[str, list[ModelArtifact]]] = {}
    for kept in kept_dirs or ():
        path = ""
        for part in kept.split("/"):
            dirs[path][part] = None
            path = f"{path}/{part}" if path else part
            dirs.setdefault(path, {})
    for artifact in artifacts:
        parts = [part for part in artifact.name.split("/") if part]
        path = ""
        for part in parts[:-1]:
            dirs[path][part] = None
            path = f"{path}/{part}" if path else part
            dirs.setdefault(path, {})
        files.setdefault(path, {}).setdefault(parts[-1], []).append(artifact)
    for path, by_name in files.items():
        for leaf, group in by_name.items():
            first, *others = newest_first(group)
            if leaf in dirs[path]:
                others.insert(0, first)
            else:
                dirs[path][leaf] = first.id
            dirs[path].update({f"{leaf}@{a.id}": a.id for a in others})
    return dirs


# -- talking to the server as the official client does ------------------------------------


def attach(server: DevServer, run_id: str, artifact_id: str, category: str) -> None:
    answer = server.api(
        "PUT", f"/runs/{run_id}/artifacts/{artifact_id}", json={"category": category}
    )
    answer.raise_for_status()


def delete_every_run(server: DevServer) -> None:
    while runs := server.api("GET", "/runs", params={"count": 100}).json()["data"]:
        for run in runs:
            server.api("DELETE", f"/runs/{run['id']}").raise_for_status()


# -- the state machine ---------------------------------------------------------------------


class MountMachine(RuleBasedStateMachine):
    """Server changes and mount observations; see the module docstring."""

    server: DevServer
    mount: Mount

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, ModelRun] = {}
        self.artifacts: dict[str, ModelArtifact] = {}
        # (run id, artifact id) -> when this mount wrote that file into that run
        self.written_at: dict[tuple[str, str], float] = {}

    @property
    def root(self) -> Path:
        return self.mount.path / "runs"

    @initialize(
        runs=st.lists(
            st.tuples(st.sampled_from(RUN_NAMES), st.sampled_from(RUN_STATES)),
            min_size=1,
            max_size=3,
        )
    )
    def start_with_new_runs(self, runs: list[tuple[str, str]]) -> None:
        delete_every_run(self.server)
        for name, status in runs:
            self.new_run(name, status)

    # -- the model's view ------------------------------------------------------------------

    def directory_of(self, run_id: str) -> str:
        return next(
            name for name, i in run_directories(list(self.runs.values())).items() if i == run_id
        )

    def tree_of(self, run: ModelRun, category: str) -> dict[str, dict[str, str | None]]:
        kept = run.kept_dirs if category == "input" else None
        artifacts = [self.artifacts[a] for a, c in run.attached.items() if c == category]
        return category_tree(artifacts, kept)

    def shared(self, artifact_id: str) -> bool:
        """True when the artifact is attached to more than one run (never changed)."""
        return sum(artifact_id in run.attached for run in self.runs.values()) > 1

    def transient(self, run: ModelRun, artifact_id: str) -> bool:
        """True for a file this mount wrote into *run* within RENAME_WINDOW: a tool's
        transient file, which may be removed, renamed or replaced in either mode."""
        written = self.written_at.get((run.id, artifact_id))
        return written is not None and time.monotonic() - written < RENAME_WINDOW

    def undecided(self, run: ModelRun, artifact_id: str) -> bool:
        """True for a file this mount wrote more than RENAME_WINDOW ago: it may still be
        transient (for 30 s), and the model does not say."""
        return (run.id, artifact_id) in self.written_at and not self.transient(run, artifact_id)

    def inputs(self) -> list[tuple[ModelRun, str, str]]:
        """Every (run, path in input/, artifact id) the mount shows."""
        return [(run, path, a) for run, category, path, a in self.files() if category == "input"]

    def keep_dir_of(self, run: ModelRun, path: str) -> None:
        """The mount keeps the directory *path* was in once it went (SEMANTICS.md: a
        directory whose files were all removed stays, empty, until rmdir)."""
        parent = path.rpartition("/")[0]
        if parent:
            run.kept_dirs.add(parent)

    def files(self) -> list[tuple[ModelRun, str, str, str]]:
        """Every (run, category, path in the category, artifact id) the mount shows."""
        found = []
        for run in self.runs.values():
            for category in CATEGORIES:
                for path, entries in self.tree_of(run, category).items():
                    for name, artifact_id in entries.items():
                        if artifact_id is not None:
                            found.append((run, category, f"{path}/{name}".lstrip("/"), artifact_id))
        return found

    # -- server-side changes ---------------------------------------------------------------

    @rule(name=st.sampled_from(RUN_NAMES), status=st.sampled_from(RUN_STATES))
    def add_a_run(self, name: str, status: str) -> None:
        self.new_run(name, status)

    def new_run(self, name: str, status: str) -> None:
        body = {"name": name, "folder": "/", "status": status}
        answer = self.server.api("POST", "/runs", json=body)
        answer.raise_for_status()
        record = answer.json()
        self.runs[record["id"]] = ModelRun(record["id"], name, record["created"], status)

    def created_runs(self) -> list[str]:
        return [run_id for run_id, run in self.runs.items() if run.editable]

    @precondition(lambda self: self.created_runs())
    @rule(data=st.data())
    def start_a_run(self, data: st.DataObject) -> None:
        """The run starts: its input/ becomes append-only (at once: metadata TTL 0)."""
        run = self.runs[data.draw(st.sampled_from(self.created_runs()), label="run")]
        self.server.api("PUT", f"/runs/{run.id}", json={"status": "running"}).raise_for_status()
        run.status = "running"

    @precondition(lambda self: self.runs)
    @rule(
        data=st.data(),
        category=st.sampled_from(CATEGORIES),
        name=st.sampled_from(ARTIFACT_NAMES),
        content=CONTENTS,
    )
    def new_artifact(self, data: st.DataObject, category: str, name: str, content: bytes) -> None:
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        record = store_artifact(self.server, run.id, name, content, category)
        self.artifacts[record["id"]] = ModelArtifact(record["id"], name, record["created"], content)
        run.attached[record["id"]] = category

    @precondition(lambda self: self.artifacts and self.runs)
    @rule(data=st.data(), category=st.sampled_from(CATEGORIES))
    def attach_to_another_run(self, data: st.DataObject, category: str) -> None:
        artifact_id = data.draw(st.sampled_from(list(self.artifacts)), label="artifact")
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        attach(self.server, run.id, artifact_id, category)
        run.attached[artifact_id] = category

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def delete_run(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(list(self.runs)), label="run")
        self.server.api("DELETE", f"/runs/{run_id}").raise_for_status()
        del self.runs[run_id]

    # -- mount-side writes -----------------------------------------------------------------

    def input_entries(self, run: ModelRun) -> dict[str, str | None]:
        return self.tree_of(run, "input")[""]

    def input_dir(self, run: ModelRun) -> Path:
        return self.root / self.directory_of(run.id) / "input"

    def landed(self, run: ModelRun, path: Path, content: bytes) -> None:
        """Record the artifact the mount uploaded from *path* (its id is in the xattr)."""
        artifact_id = os.getxattr(path, "user.simvue.id").decode()
        record = self.server.api("GET", f"/artifacts/{artifact_id}").json()
        assert record["checksum"] == sha256(content)
        self.artifacts[artifact_id] = ModelArtifact(
            artifact_id, record["name"], record["created"], content
        )
        run.attached[artifact_id] = "input"
        self.written_at[run.id, artifact_id] = time.monotonic()

    def forget_artifact(self, artifact_id: str) -> None:
        """The artifact was deleted on the server: it leaves every run."""
        del self.artifacts[artifact_id]
        for run in self.runs.values():
            run.attached.pop(artifact_id, None)

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), name=st.sampled_from(WRITTEN_NAMES), content=CONTENTS)
    def write_a_file(self, data: st.DataObject, name: str, content: bytes) -> None:
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        path = self.input_dir(run) / name
        if name in self.input_entries(run):
            with pytest.raises(FileExistsError):
                open(path, "xb").close()  # noqa: SIM115
            return
        with open(path, "xb") as stream:
            stream.write(content)
        # close() returned: the server has it.
        self.landed(run, path, content)

    @precondition(lambda self: self.runs)
    @rule(
        data=st.data(),
        name=st.sampled_from(WRITTEN_NAMES),
        content=CONTENTS,
        then=st.sampled_from(["remove", "remove", "remove", "land"]),
    )
    def write_while_the_server_refuses(
        self, data: st.DataObject, name: str, content: bytes, then: str
    ) -> None:
        """close() fails and the file stays pending (listed, readable); then either remove
        it (it never lands) or let the server recover (it lands by itself).

        The server refuses every attempt until the file is removed, so no background retry
        can land it meanwhile: the outcome does not depend on timing.
        """
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        if name in self.input_entries(run):
            return
        path = self.input_dir(run) / name
        self.server.set_faults(
            api_error_status=500, api_error_rate=1.0, api_error_route="POST /api/artifacts"
        )
        try:
            # The error comes from close(), when the open() context ends.
            with (
                pytest.raises(OSError, match="Input/output error") as caught,
                open(path, "xb") as stream,
            ):
                stream.write(content)
            assert caught.value.errno == errno.EIO
            assert name in os.listdir(self.input_dir(run))
            assert path.read_bytes() == content
            if then == "remove":
                os.unlink(path)
                assert name not in os.listdir(self.input_dir(run))
                return
        finally:
            self.server.clear_faults()
        deadline = time.monotonic() + PENDING_LANDS_WITHIN
        while "user.simvue.id" not in os.listxattr(path):
            assert time.monotonic() < deadline, os.getxattr(path, "user.simvue.pending")
            time.sleep(0.2)
        self.landed(run, path, content)

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), name=st.sampled_from(WRITTEN_NAMES))
    def remove_a_file_before_closing_it(self, data: st.DataObject, name: str) -> None:
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        if name in self.input_entries(run):
            return
        path = self.input_dir(run) / name
        with open(path, "xb") as stream:
            stream.write(b"never uploaded")
            os.unlink(path)
        assert not path.exists()

    def replace_input(self, run: ModelRun, old_id: str, content: bytes) -> None:
        """Record that the input *old_id* was overwritten with *content*: a new artifact
        with its name (the newest of a name shows under the plain name, whatever alias the
        old one had) replaces it, which is deleted once the new one is attached."""
        name = self.artifacts[old_id].name
        self.forget_artifact(old_id)
        listed = self.server.api(
            "GET", f"/runs/{run.id}/artifacts", params={"category": "input", "name": name}
        ).json()
        (record,) = [a for a in listed if a["id"] not in self.artifacts]
        assert record["checksum"] == sha256(content)
        self.artifacts[record["id"]] = ModelArtifact(record["id"], name, record["created"], content)
        run.attached[record["id"]] = "input"
        self.written_at[run.id, record["id"]] = time.monotonic()

    @precondition(lambda self: self.inputs())
    @rule(data=st.data(), content=CONTENTS)
    def overwrite_an_input(self, data: st.DataObject, content: bytes) -> None:
        """``open(path, "wb")`` of an input: replaced in an editable run, or when this mount
        just wrote it (a tool's transient file, as for ``rm`` and ``mv`` onto it); EACCES
        once the run has started, and for an artifact attached to another run too
        (SEMANTICS.md)."""
        run, path, artifact_id = data.draw(st.sampled_from(self.inputs()), label="input")
        target = self.input_dir(run) / path
        if self.undecided(run, artifact_id):
            return
        if not (run.editable or self.transient(run, artifact_id)) or self.shared(artifact_id):
            with pytest.raises(PermissionError) as caught:
                open(target, "wb").close()  # noqa: SIM115
            assert caught.value.errno == errno.EACCES
            return
        if any(part == "" for part in self.artifacts[artifact_id].name.split("/")):
            # The new file would take the artifact's name, one the mount does not write
            # (SEMANTICS.md, "Names and directories": EINVAL), e.g. "/d//g".
            with pytest.raises(OSError, match=os.strerror(errno.EINVAL)) as caught:
                open(target, "wb").close()  # noqa: SIM115
            assert caught.value.errno == errno.EINVAL
            return
        with open(target, "wb") as stream:
            stream.write(content)
        self.replace_input(run, artifact_id, content)

    @precondition(lambda self: self.files())
    @rule(data=st.data())
    def remove_a_file(self, data: st.DataObject) -> None:
        """``rm``: outside input/ EROFS; an input goes in an editable run, or when this
        mount just wrote it (a tool's transient file); else EPERM, and always EPERM for an
        artifact attached to another run too (SEMANTICS.md)."""
        run, category, path, artifact_id = data.draw(st.sampled_from(self.files()), label="file")
        target = self.root / self.directory_of(run.id) / category / path
        if category != "input":
            expected = errno.EROFS
        elif self.undecided(run, artifact_id):
            return
        elif (run.editable or self.transient(run, artifact_id)) and not self.shared(artifact_id):
            os.unlink(target)
            self.forget_artifact(artifact_id)
            self.keep_dir_of(run, path)
            return
        else:
            expected = errno.EPERM
        with pytest.raises(OSError, match=os.strerror(expected)) as caught:
            os.unlink(target)
        assert caught.value.errno == expected

    @precondition(lambda self: self.inputs())
    @rule(data=st.data(), new_name=st.sampled_from(WRITTEN_NAMES))
    def rename_an_input(self, data: st.DataObject, new_name: str) -> None:
        """``mv`` of an input to a top-level name of input/, existing or not (SEMANTICS.md):

        - onto a directory: EISDIR (ENOTEMPTY from the kernel onto the file's own
          ancestor); onto an input that may not go (the run has started and
          this mount did not just write it, or it is attached to another run too): EEXIST;
        - of an input this mount did not just write, in a started run: EXDEV; of one attached
          to another run too: EXDEV;
        - else the file lands under the new name and the old artifact, and the one it
          replaces, are deleted.
        """
        run, path, artifact_id = data.draw(st.sampled_from(self.inputs()), label="input")
        artifact = self.artifacts[artifact_id]
        entries = self.input_entries(run)
        replaced = entries.get(new_name)
        if new_name == path or self.undecided(run, artifact_id):
            return
        if replaced is not None and (replaced == artifact_id or self.undecided(run, replaced)):
            return
        source, target = self.input_dir(run) / path, self.input_dir(run) / new_name
        expected = None
        if new_name in entries and replaced is None:
            # onto a directory; the kernel's ENOTEMPTY when it is the file's own ancestor
            expected = errno.ENOTEMPTY if path.startswith(f"{new_name}/") else errno.EISDIR
        elif replaced is not None and (
            not (run.editable or self.transient(run, replaced)) or self.shared(replaced)
        ):
            expected = errno.EEXIST
        elif not (run.editable or self.transient(run, artifact_id)) or self.shared(artifact_id):
            expected = errno.EXDEV
        if expected is not None:
            with pytest.raises(OSError, match=os.strerror(expected)) as caught:
                os.rename(source, target)
            assert caught.value.errno == expected
            return
        os.rename(source, target)
        self.forget_artifact(artifact_id)
        if replaced is not None:
            self.forget_artifact(replaced)
        self.keep_dir_of(run, path)
        self.landed(run, target, artifact.content)

    def kept_empty_dirs(self) -> list[tuple[ModelRun, str]]:
        """(run, path) of directories the mount keeps that nothing is in."""
        found = []
        for run in self.runs.values():
            tree = self.tree_of(run, "input")
            found.extend((run, path) for path in sorted(run.kept_dirs) if not tree.get(path))
        return found

    @precondition(lambda self: self.kept_empty_dirs())
    @rule(data=st.data())
    def remove_an_empty_directory(self, data: st.DataObject) -> None:
        run, path = data.draw(st.sampled_from(self.kept_empty_dirs()), label="directory")
        os.rmdir(self.input_dir(run) / path)
        run.kept_dirs.discard(path)

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def a_directory_with_files_cannot_be_removed(self, data: st.DataObject) -> None:
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        tree = self.tree_of(run, "input")
        full = [path for path, entries in tree.items() if path and entries]
        if not full:
            return
        path = data.draw(st.sampled_from(sorted(full)), label="directory")
        with pytest.raises(OSError, match=os.strerror(errno.ENOTEMPTY)) as caught:
            os.rmdir(self.input_dir(run) / path)
        assert caught.value.errno == errno.ENOTEMPTY

    # -- mount-side observations -----------------------------------------------------------

    @rule(missing=st.sampled_from(["nothing", "alpha@0000", "a.txt"]))
    def list_runs(self, missing: str) -> None:
        expected = run_directories(list(self.runs.values()))
        assert sorted(os.listdir(self.root)) == sorted(expected)
        for name, run_id in expected.items():
            assert os.getxattr(self.root / name, "user.simvue.id").decode() == run_id
        if missing not in expected:
            with pytest.raises(FileNotFoundError) as caught:
                os.stat(self.root / missing)
            assert caught.value.errno == errno.ENOENT

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), category=st.sampled_from(CATEGORIES))
    def list_a_category(self, data: st.DataObject, category: str) -> None:
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        base = self.root / self.directory_of(run.id)
        # Hidden files of a run directory (its record) are not part of this model.
        shown = [name for name in os.listdir(base) if not name.startswith(".")]
        assert sorted(shown) == sorted(CATEGORIES)
        for path, entries in self.tree_of(run, category).items():
            where = base / category / path
            assert sorted(os.listdir(where)) == sorted(entries), where
            for name, artifact_id in entries.items():
                info = os.stat(where / name)
                if artifact_id is None:
                    assert info.st_mode & 0o170000 == 0o040000
                else:
                    assert info.st_size == len(self.artifacts[artifact_id].content)

    @precondition(lambda self: self.files())
    @rule(data=st.data(), start=st.integers(0, 6000), length=st.integers(0, 6000))
    def read_a_range(self, data: st.DataObject, start: int, length: int) -> None:
        run, category, path, artifact_id = data.draw(st.sampled_from(self.files()), label="file")
        content = self.artifacts[artifact_id].content
        target = self.root / self.directory_of(run.id) / category / path
        with open(target, "rb") as stream:
            stream.seek(start)
            assert stream.read(length) == content[start : start + length]
        assert os.getxattr(target, "user.simvue.id").decode() == artifact_id

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def every_run_answers_to_its_alias(self, data: st.DataObject) -> None:
        run = self.runs[data.draw(st.sampled_from(list(self.runs)), label="run")]
        alias = f"{run.name.replace('/', RUN_SLASH)}@{run.id}"
        assert os.getxattr(self.root / alias, "user.simvue.id").decode() == run.id


@pytest.fixture(scope="module")
def model_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, Mount]]:
    workdir = tmp_path_factory.mktemp("model")
    server = DevServer(workdir / "devserver").start()
    try:
        with mounted(server, workdir, "--metadata-ttl", "0") as mount:
            yield server, mount
    finally:
        server.stop()


# The CI profile: 30 examples of up to 25 steps (30-95 s on a loaded 2-core machine), from a seed
# that is printed (and shown with a failure) or given with --hypothesis-seed to replay a run.
# Shrinking a failure stops after SHRINK_SECONDS, well inside pytest's timeout (300 s), so a
# real failure reports a (partly shrunk) falsifying example instead of timing out.
MODEL_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    database=None,  # examples come from the seed alone
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SHRINK_SECONDS = 60


def test_mount_matches_the_model(
    model_mount: tuple[DevServer, Mount],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    given_seed = request.config.getoption("--hypothesis-seed")
    seed = int(given_seed) if given_seed is not None else random.getrandbits(64)
    print(f"model-based test: replay with pytest --hypothesis-seed={seed} {request.node.nodeid}")
    # Documented as monkeypatchable (hypothesis.internal.conjecture.engine).
    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", SHRINK_SECONDS)
    MountMachine.server, MountMachine.mount = model_mount
    run_state_machine_as_test(hypothesis.seed(seed)(MountMachine), settings=MODEL_SETTINGS)
