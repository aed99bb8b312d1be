"""The command line as a user runs it: real processes, exact messages and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicomfs.commands.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def dicomfs(*args: str, index: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DICOMFS_INDEX"}
    if index is not None:
        env["DICOMFS_INDEX"] = str(index)
    return subprocess.run(
        [sys.executable, "-m", "dicomfs", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_index_then_package_and_missing(demo_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = tmp_path / "cli.sqlite"
    run = dicomfs("index", str(demo_set.root), index=index)
    assert run.returncode == 0, run.stderr
    assert "rejected" in run.stdout and "indexed" in run.stdout
    patient = demo_set.patients[0]

    pkg = dicomfs("package", patient.plan_uid, "--json", index=index)
    assert pkg.returncode == 0, pkg.stderr
    data = json.loads(pkg.stdout)
    members = {m["sop_instance_uid"] for m in data["members"] if m["folder"] == "references"}
    assert patient.plan_structure_set_uid in members and set(patient.ct_uids) <= members

    missing = dicomfs("missing", patient.missing_structure_set_plan_uid, index=index)
    assert missing.returncode == 0
    lines = missing.stdout.strip().splitlines()
    assert lines[0] == "# level\tuid\texpected\treferenced_by\tattribute\tstudy_uid\tseries_uid"
    assert any(line.split("\t")[2] == "structure_set" for line in lines[1:])
    assert dicomfs("missing", patient.plan_uid, index=index).stdout.strip() == ""

    refs = dicomfs("refs", patient.plan_uid, "--json", index=index)
    assert {r["target_uid"] for r in json.loads(refs.stdout)} >= {patient.plan_structure_set_uid}
    back = dicomfs("referenced-by", patient.plan_uid, "--json", index=index)
    assert patient.plan_dose_uid in {r["source_uid"] for r in json.loads(back.stdout)}

    rejected = dicomfs("rejected", index=index)
    assert "not_dicom" in rejected.stdout and "truncated" in rejected.stdout
    status = json.loads(dicomfs("status", "--json", index=index).stdout)
    assert status["instances"] > 0 and status["rejected_files"] > 0

    rerun = dicomfs("index", str(demo_set.root), index=index)
    assert rerun.returncode == 0 and " 0 parsed" in rerun.stdout


def test_errors_have_clear_messages_and_exit_codes(demo_index: Path, tmp_path: Path) -> None:
    run = dicomfs("package", "1.2.3.999", index=demo_index)
    assert run.returncode == 3 and "not an indexed SOP Instance UID" in run.stderr
    run = dicomfs("status", index=tmp_path / "absent.sqlite")
    assert run.returncode == 4 and "dicomfs index" in run.stderr
    run = dicomfs("index", str(tmp_path / "no-such-folder"), index=tmp_path / "x.sqlite")
    assert run.returncode == 5 and "does not exist" in run.stderr


def test_package_refuses_a_non_plan_unless_asked(demo_set, demo_index: Path) -> None:  # type: ignore[no-untyped-def]
    ct = demo_set.patients[0].ct_uids[0]
    run = dicomfs("package", ct, index=demo_index)
    assert run.returncode == 3 and "not an RT Plan" in run.stderr
    assert dicomfs("package", ct, "--any", index=demo_index).returncode == 0


@pytest.mark.parametrize("name", sorted(build_parser()._subparsers._group_actions[0].choices))  # type: ignore[union-attr]
def test_every_command_has_help_and_is_documented(name: str) -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
    assert sub.description, f"{name} has no help text"
    assert f"dicomfs {name}" in README.read_text(), f"{name} is missing from README.md"
