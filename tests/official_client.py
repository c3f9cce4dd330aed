"""Scenarios for the OFFICIAL ``simvue`` client, run as a subprocess by test_conformance.py.

Usage: ``python tests/official_client.py SCENARIO JSON_ARGS`` with ``SIMVUE_URL`` and
``SIMVUE_TOKEN`` (and ``SIMVUE_OFFLINE_DIRECTORY``) in the environment. The last line of
stdout is ``RESULT: <json>``. A fresh process per scenario keeps the client's process-wide
caches (configuration, server version probe) and background threads out of pytest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import simvue
from helpers import sha256, sha256_file
from simvue.api.objects import Run
from simvue.api.objects.artifact.fetch import Artifact
from simvue.api.objects.artifact.file import FileArtifact
from simvue.client import Client
from simvue.sender import Sender


def _tree(root: Path) -> dict[str, str]:
    """Return {relative path: sha256} of every file under *root*."""
    return {
        str(path.relative_to(root)): sha256_file(path) for path in root.rglob("*") if path.is_file()
    }


def create_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run.init (with spec["visibility"]: "public", "tenant" or user names), save_file for
    each of spec["files"] ([path, category, name|None]), save_object for each of
    spec["objects"] ([value, category, name]), then close."""
    with simvue.Run(mode=spec.get("mode", "online")) as run:
        run.config(disable_resources_metrics=True, enable_emission_metrics=False)
        run.init(
            name=spec.get("name"),
            folder=spec.get("folder", "/conformance"),
            tags=spec.get("tags", ["conformance"]),
            description="made by the official client",
            metadata={"alpha": 1},
            visibility=spec.get("visibility"),
        )
        for path, category, name in spec.get("files", []):
            assert run.save_file(Path(path), category=category, name=name), path
        for value, category, name in spec.get("objects", []):
            if isinstance(value, dict) and value.get("numpy"):
                import numpy

                value = numpy.array(value["numpy"], dtype=float)
            assert run.save_object(value, category=category, name=name), name
        run.log_metrics({"loss": 0.5})
        run.log_event("conformance event")
        run_id = run.id
        run_name = run.name
    return {"id": run_id, "name": run_name}


def create_runs(args: dict[str, Any]) -> list[dict[str, Any]]:
    """create_run for each spec in args["runs"], one after the other."""
    return [create_run(spec) for spec in args["runs"]]


def download(args: dict[str, Any]) -> dict[str, Any]:
    """get_artifact_as_file for each of args["names"], get_artifacts_as_files for each
    category and None, get_artifact for each of args["objects"]."""
    client = Client()
    run_id = args.get("run_id") or client.get_run_id_from_name(args["run_name"])
    out = Path(args["output_dir"])
    result: dict[str, Any] = {"run_id": run_id, "single": {}, "categories": {}, "objects": {}}
    for name in args.get("names", []):
        target = out / "single" / name.replace("/", "_")
        target.mkdir(parents=True)
        client.get_artifact_as_file(run_id, name, output_dir=target)
        result["single"][name] = _tree(target)
    for category in args.get("categories", []):
        target = out / f"category-{category}"
        target.mkdir(parents=True)
        client.get_artifacts_as_files(run_id, category=category, output_dir=target)
        result["categories"][str(category)] = _tree(target)
    for name in args.get("objects", []):
        value = client.get_artifact(run_id, name)
        if isinstance(value, bytes):  # types the client does not deserialise
            value = {"sha256": sha256(value)}
        result["objects"][name] = value.tolist() if hasattr(value, "tolist") else value
    result["run"] = {
        key: getattr(client.get_run(run_id), key) for key in ("name", "status", "folder")
    }
    return result


def attach_file_artifact(args: dict[str, Any]) -> dict[str, Any]:
    """FileArtifact.new(...) then attach_to_run for each (run_id, category)."""
    artifact = FileArtifact.new(
        name=args["name"],
        storage=None,
        file_path=Path(args["path"]),
        mime_type=None,
        metadata={"origin": "conformance"},
    )
    for run_id, category in args["attach"]:
        artifact.attach_to_run(run_id, category)
    return {"id": artifact.id, "name": artifact.name}


def send_offline(args: dict[str, Any]) -> dict[str, Any]:
    """Upload everything in SIMVUE_OFFLINE_DIRECTORY with the official Sender."""
    sender = Sender(throw_exceptions=True)
    sender.upload()
    return {"id_mapping": sender.id_mapping}


def list_runs(args: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Client.get_runs(args["filters"], count_limit=None) twice: with show_shared=True (the
    default: own and shared runs; the listing the mount imitates) as "all", and with
    show_shared=False (``user == self``) as "own"."""
    client = Client()
    result: dict[str, list[dict[str, Any]]] = {}
    for key, shared in (("all", True), ("own", False)):
        runs = client.get_runs(
            list(args.get("filters") or []), count_limit=None, show_shared=shared
        )
        result[key] = [
            {"id": run_id, "name": run.name, "folder": run.folder, "status": run.status}
            for run_id, run in runs
        ]
    return result


def cli_list_runs(args: dict[str, Any]) -> list[dict[str, Any]]:
    """What simvue-cli 1.4.0 ``simvue run list --name --folder --status --created
    --count N [--shared]`` does (actions.get_runs_list, cli.display.create_objects_display):
    Run.get with ``user == self`` unless *shared*, sorted by ``created`` descending, no
    ``return_*`` flags; every row reads name, folder, status and created."""
    filters = [] if args.get("shared") else ["user == self"]
    runs = Run.get(
        sorting=[{"column": "created", "descending": True}],
        filters=json.dumps(filters),
        count=args["count"],
    )
    rows = sorted(runs, key=lambda pair: getattr(pair[1], "created", pair[0]), reverse=True)
    return [
        {
            "id": run_id,
            "name": run.name,
            "folder": run.folder,
            "status": run.status,
            "created": str(run.created),
        }
        for run_id, run in rows
        if run is not None
    ]


def delete_artifact(args: dict[str, Any]) -> dict[str, Any]:
    """Artifact.from_name(run_id, name).delete(), as python-api's own tests clean up."""
    artifact = Artifact.from_name(args["run_id"], args["name"])
    assert artifact is not None, args
    return {"id": artifact.id, "answer": artifact.delete()}


SCENARIOS = {
    "create_runs": create_runs,
    "download": download,
    "attach_file_artifact": attach_file_artifact,
    "send_offline": send_offline,
    "list_runs": list_runs,
    "cli_list_runs": cli_list_runs,
    "delete_artifact": delete_artifact,
}

if __name__ == "__main__":
    outcome = SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
    print("RESULT: " + json.dumps(outcome), flush=True)
