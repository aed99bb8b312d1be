"""``dicomfs export``: a plan package as DICOM media (files + DICOMDIR), read back by pydicom.

Expectations come from the demo patients' records and the graph's package,
and every exported file is compared with its source byte for byte (or, for a
source without File Meta, the bytes after the header export adds). dcmtk's
readers of the same media are exercised in test_real_tools.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomfs.commands import cli
from dicomfs.commands import export as export_command
from dicomfs.demo import BIG_ENDIAN, DEFLATED, IMPLICIT_NO_PREAMBLE, write_demo
from dicomfs.errors import ConfigError, NotAPlanError, UnknownUidError
from dicomfs.export import media as export
from dicomfs.index import IndexReader, IndexWriter, graph
from dicomfs.live.scan import reconcile

PREAMBLE = b"\x00" * 128 + b"DICM"


def expected_members(reader: IndexReader, plan_uid: str, registrations: bool = False) -> set[str]:
    pkg = graph.package(reader, plan_uid)
    members = {plan_uid, *(m.sop_uid for m in pkg.references)}
    if registrations:
        members |= {m.sop_uid for m in pkg.registrations}
    return members


def read_back(dest: Path) -> dict[str, Path]:
    """SOP UID -> file, from the DICOMDIR as pydicom reads it."""
    fs = FileSet(dest / "DICOMDIR")
    out = {}
    for instance in fs:
        path = Path(instance.path)
        assert path.is_file(), instance.FileID
        assert path.resolve().is_relative_to(dest.resolve())
        out[str(instance.SOPInstanceUID)] = path
    assert len(out) == len(fs)
    return out


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the PS3.10 header (preamble, DICM, File Meta group)."""
    data = path.read_bytes()
    assert data[:132] == PREAMBLE, path
    ds = dcmread(path, stop_before_pixels=True)
    meta_length = int(ds.file_meta.FileMetaInformationGroupLength)
    return data[132 + 12 + meta_length :]


def test_export_writes_every_member_and_a_dicomdir(demo_set, demo_reader, tmp_path):
    patient = demo_set.patients[0]
    dest = tmp_path / "media"
    result = export.export_plan(demo_reader, patient.plan_uid, dest)

    expected = expected_members(demo_reader, patient.plan_uid)
    assert patient.plan_structure_set_uid in expected and set(patient.ct_uids) <= expected
    assert {f.sop_uid for f in result.files} == expected
    assert len(result.files) == len(expected)
    assert result.files[0].sop_uid == patient.plan_uid and result.files[0].role == "plan"
    on_media = read_back(dest)
    assert set(on_media) == expected
    assert sorted(os.listdir(tmp_path)) == ["media"]  # no staging folder left behind

    for exported in result.files:
        path = on_media[exported.sop_uid]
        assert path == dest / exported.file_id
        source = Path(demo_set.root / patient.files[exported.sop_uid])
        encoding = patient.encodings[exported.sop_uid]
        ds = dcmread(path)  # a PS3.10 file, without force
        assert ds.SOPInstanceUID == exported.sop_uid
        if encoding == IMPLICIT_NO_PREAMBLE:
            assert exported.wrapped
            assert dataset_bytes(path) == source.read_bytes()
            assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            assert ds.file_meta.ImplementationClassUID == export.IMPLEMENTATION_CLASS_UID
        else:
            assert not exported.wrapped
            assert path.read_bytes() == source.read_bytes()
    encodings = {patient.encodings[f.sop_uid] for f in result.files}
    assert IMPLICIT_NO_PREAMBLE in encodings  # patient 1 carries the awkward files
    assert BIG_ENDIAN in encodings


def test_dicomdir_records_describe_each_file(demo_set, demo_reader, tmp_path):
    patient = demo_set.patients[0]
    dest = tmp_path / "media"
    export.export_plan(demo_reader, patient.plan_uid, dest)
    fs = FileSet(dest / "DICOMDIR")
    assert fs.ID == export.FILE_SET_ID
    kinds = {str(i.SOPInstanceUID): i.node.record_type for i in fs}
    assert kinds[patient.plan_uid] == "RT PLAN"
    assert kinds[patient.plan_structure_set_uid] == "RT STRUCTURE SET"
    assert kinds[patient.plan_dose_uid] == "RT DOSE"
    assert {kinds[u] for u in patient.ct_uids} == {"IMAGE"}
    assert kinds[patient.record_uid] == "RT TREAT RECORD"
    for instance in fs:
        on_disk = dcmread(instance.path, stop_before_pixels=True)
        assert instance.TransferSyntaxUID == on_disk.file_meta.TransferSyntaxUID
        assert instance.SOPClassUID == on_disk.SOPClassUID
    syntaxes = {str(i.TransferSyntaxUID) for i in fs}
    deflated = [u for u, e in patient.encodings.items() if e == DEFLATED]
    if any(u in kinds for u in deflated):
        assert DeflatedExplicitVRLittleEndian in syntaxes
    assert ExplicitVRBigEndian in syntaxes
    plan = fs.find(SOPInstanceUID=patient.plan_uid)[0]
    assert plan.RTPlanLabel == demo_reader.instance(patient.plan_uid).label
    assert fs.find_values("PatientID") == [patient.patient_id]
    assert fs.find_values("StudyInstanceUID") == [patient.study_uid]


def test_registrations_are_exported_on_request(demo_set, demo_reader, tmp_path):
    patient = demo_set.patients[0]
    result = export.export_plan(
        demo_reader, patient.plan_uid, tmp_path / "media", registrations=True
    )
    expected = expected_members(demo_reader, patient.plan_uid, registrations=True)
    assert patient.registration_uid in expected
    assert {f.sop_uid for f in result.files} == expected
    assert set(read_back(tmp_path / "media")) == expected


def test_empty_existing_folder_is_used(demo_set, demo_reader, tmp_path):
    dest = tmp_path / "media"
    dest.mkdir()
    export.export_plan(demo_reader, demo_set.patients[1].plan_uid, dest)
    assert (dest / "DICOMDIR").is_file()


def test_refuses_a_folder_that_is_not_empty(demo_set, demo_reader, tmp_path):
    dest = tmp_path / "media"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export.export_plan(demo_reader, demo_set.patients[0].plan_uid, dest)
    assert os.listdir(dest) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["media"]


def test_only_plans_are_exported(demo_set, demo_reader, tmp_path):
    patient = demo_set.patients[0]
    with pytest.raises(NotAPlanError):
        export.export_plan(demo_reader, patient.plan_structure_set_uid, tmp_path / "a")
    with pytest.raises(UnknownUidError):
        export.export_plan(demo_reader, "1.2.3.4.5.6.7", tmp_path / "b")
    assert os.listdir(tmp_path) == []


def test_a_source_changed_since_indexing_stops_the_export(tmp_path):
    demo = write_demo(tmp_path / "src", patients=1, hostile=False)
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [demo.root], workers=1)
    writer.close()
    patient = demo.patients[0]
    victim = demo.root / patient.files[patient.ct_uids[0]]
    shutil.copyfile(demo.root / patient.files[patient.ct_uids[1]], victim)
    reader = IndexReader(index)
    try:
        with pytest.raises(export.ExportError, match="changed since it was indexed"):
            export.export_plan(reader, patient.plan_uid, tmp_path / "media")
    finally:
        reader.close()
    assert not (tmp_path / "media").exists()
    assert not [p for p in os.listdir(tmp_path) if "dicomfs-export" in p]


def test_real_monaco_plan_gets_headers_and_stand_ins(real_copy, real_reader, tmp_path):
    [plan] = [p for p in real_reader.plans() if "monaco" in p.file.path]
    dest = tmp_path / "media"
    result = export.export_plan(real_reader, plan.sop_uid, dest)
    expected = expected_members(real_reader, plan.sop_uid)
    assert {f.sop_uid for f in result.files} == expected
    assert set(read_back(dest)) == expected
    sources = {f.sop_uid: Path(f.source) for f in result.files}
    for exported in result.files:
        # Monaco writes neither preamble nor File Meta: each gets a header, bytes unchanged
        assert exported.wrapped
        assert dataset_bytes(dest / exported.file_id) == sources[exported.sop_uid].read_bytes()
    # the CT slices carry no Study ID / Series Number: the records get stand-ins
    assert any(note.endswith("StudyID=1") for note in result.invented)
    assert all(note.split()[0] in expected for note in result.invented)


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dicomfs")
    sub = parser.add_subparsers(dest="command", required=True)
    export_command.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_registered_subcommand_prints_json(demo_set, demo_index, tmp_path, capsys):
    patient = demo_set.patients[1]
    dest = tmp_path / "media"
    code = run_command(
        ["export", patient.plan_uid, str(dest), "--index", str(demo_index), "--json"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan_uid"] == patient.plan_uid
    assert Path(doc["dicomdir"]) == dest / "DICOMDIR"
    assert {f["sop_uid"] for f in doc["files"]} == set(read_back(dest))


def test_export_exit_codes(demo_set, demo_index, tmp_path, capsys):
    patient = demo_set.patients[0]
    dest = tmp_path / "media"

    def main(argv: list[str]) -> int:
        return cli.main(["export", *argv])

    assert main([patient.plan_uid, str(dest), "--index", str(demo_index)]) == 0
    out = capsys.readouterr().out
    assert f"to {dest}" in out and "preamble/File Meta was added" in out
    assert main([patient.plan_uid, str(dest), "--index", str(demo_index)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["1.2.3.4", str(tmp_path / "x"), "--index", str(demo_index)]) == 3
    assert main(["1.2.3", str(tmp_path / "y"), "--index", str(tmp_path / "none")]) == 4


def test_dicomfs_cli_offers_export():
    """cli.build_parser() must call export.register (wiring lives in cli.py)."""
    parser = cli.build_parser()
    args = parser.parse_args(["export", "1.2.3", "/tmp/x"])
    assert args.func is export_command.cmd_export
