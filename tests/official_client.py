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
from simvue.api.objects.artifact.file import FileArtifact
from simvue.client import Client
from simvue.sender import Sender


def _tree(root: Path) -> dict[str, str]:
    """Return {relative path: sha256} of every file under *root*."""
    return {
        str(path.relative_to(root)): sha256_file(path) for path in root.rglob("*") if path.is_file()
    }


def create_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run.init, save_file for each of spec["files"] ([path, category, name|None]),
    save_object for each of spec["objects"] ([value, category, name]), then close."""
    with simvue.Run(mode=spec.get("mode", "online")) as run:
        run.config(disable_resources_metrics=True, enable_emission_metrics=False)
        run.init(
            name=spec.get("name"),
            folder=spec.get("folder", "/conformance"),
            tags=spec.get("tags", ["conformance"]),
            description="made by the official client",
            metadata={"alpha": 1},
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


SCENARIOS = {
    "create_runs": create_runs,
    "download": download,
    "attach_file_artifact": attach_file_artifact,
    "send_offline": send_offline,
}

if __name__ == "__main__":
    outcome = SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
    print("RESULT: " + json.dumps(outcome), flush=True)
