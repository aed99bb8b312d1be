"""``dicomfs export``: a plan package as DICOM media (files + DICOMDIR), read back by pydicom.

Expectations come from the demo patients' records and the graph's package,
and every exported file is compared with its source byte for byte (or, for a
source without File Meta, the bytes after the header export adds). dcmtk's
readers of the same media are exercised in test_real_tools.py.

``--profile general-purpose`` (STD-GEN-CD) media are checked the way media
importers check them: ``dcmmkdir -Pgp`` must take every file, ``dciodvfy``
must find no error in an exported file that it does not also find in its
source, and every dataset must read back with its source's values, pixel
values included (media_helpers decodes them on its own).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
from media_helpers import (
    assert_same_values,
    dciodvfy_errors,
    dcmmkdir_gp,
    listed_instances,
    need,
    strict_complaints,
)
from pydicom import dcmread, dcmwrite
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dicomfs.commands import cli
from dicomfs.commands import export as export_command
from dicomfs.demo import BIG_ENDIAN, DEFLATED, IMPLICIT_NO_PREAMBLE, write_demo
from dicomfs.errors import ConfigError, NotAPlanError, UnknownUidError
from dicomfs.export import media as export
from dicomfs.export.explicit_le import NotReencodable, write_explicit_le
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
        assert not exported.reencoded
        assert exported.transfer_syntax == ds.file_meta.TransferSyntaxUID
    assert result.profile == export.BYTE_FOR_BYTE
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


# -- --profile general-purpose: STD-GEN-CD media, Explicit VR Little Endian only ---------------


def check_general_purpose(result: export.ExportResult, tmp_path: Path) -> None:
    """What media importers check, on one general-purpose export."""
    dest = result.dest
    assert result.profile == export.GENERAL_PURPOSE
    records = {str(i.SOPInstanceUID): str(i.TransferSyntaxUID) for i in FileSet(dest / "DICOMDIR")}
    assert set(records) == {f.sop_uid for f in result.files}
    for exported in result.files:
        path = dest / exported.file_id
        ds = dcmread(path, stop_before_pixels=True)  # a PS3.10 file, without force
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert records[exported.sop_uid] == ExplicitVRLittleEndian == exported.transfer_syntax
        if exported.reencoded:
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert ds.file_meta.ImplementationClassUID == export.IMPLEMENTATION_CLASS_UID
            assert path.read_bytes()[:132] == PREAMBLE
            assert_same_values(Path(exported.source), path)
        else:
            assert dataset_bytes(path) == dataset_bytes_of_source(Path(exported.source))

    # dcmmkdir -Pgp, strict: the only refusals may be record keys export filled in too
    file_ids = [f.file_id for f in result.files]
    by_id = {f.file_id: f.sop_uid for f in result.files}
    stand_ins = {(note.split()[0], note.split()[1].split("=")[0]) for note in result.invented}
    scratch = tmp_path / f"{dest.name}-DICOMDIR"
    done, errors = dcmmkdir_gp(dest, file_ids, scratch, invent=False)
    assert done.returncode == 0, done.stdout + done.stderr
    complaints = {(by_id[file_id], keyword) for file_id, keyword in strict_complaints(errors)}
    assert complaints <= stand_ins
    if complaints:  # as the export's DICOMDIR does, let dcmmkdir fill them in
        done, errors = dcmmkdir_gp(dest, file_ids, scratch, invent=True)
        assert done.returncode == 0 and not errors, done.stdout + done.stderr
    assert "cannot be added" not in done.stdout + done.stderr
    assert sorted(listed_instances(scratch)) == sorted(by_id.values())

    # dciodvfy: no error in an exported file that its source does not have
    for exported in result.files:
        new = dciodvfy_errors(dest / exported.file_id) - dciodvfy_errors(Path(exported.source))
        assert not new, (exported.sop_uid, sorted(new))


def dataset_bytes_of_source(path: Path) -> bytes:
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        data = PREAMBLE + data
    meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
    return data[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


def all_plans(reader: IndexReader) -> list[str]:
    return sorted(p.sop_uid for p in reader.plans())


@pytest.mark.parametrize("which", ["demo", "real"])
def test_general_purpose_media_pass_dcmmkdir_and_dciodvfy(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    need("dcmmkdir")
    need("dciodvfy")
    reader: IndexReader = request.getfixturevalue(f"{which}_reader")
    plans = all_plans(reader)
    reencoded = 0
    for number, plan in enumerate(plans):
        result = export.export_plan(
            reader,
            plan,
            tmp_path / f"media-{number}",
            registrations=True,
            profile=export.GENERAL_PURPOSE,
        )
        expected = expected_members(reader, plan, registrations=True)
        assert {f.sop_uid for f in result.files} == expected
        check_general_purpose(result, tmp_path)
        reencoded += sum(f.reencoded for f in result.files)
    assert len(plans) >= 2 and reencoded  # both sets hold Implicit VR members


def test_default_media_are_what_dcmmkdir_gp_refuses(demo_set, demo_reader, tmp_path):
    """Why the profile exists: byte-for-byte media keep Implicit VR and Big Endian files."""
    need("dcmmkdir")
    result = export.export_plan(demo_reader, demo_set.patients[0].plan_uid, tmp_path / "media")
    file_ids = [f.file_id for f in result.files]
    done, errors = dcmmkdir_gp(result.dest, file_ids, tmp_path / "scratch", invent=True)
    assert any("LittleEndianExplicit expected but LittleEndianImplicit found" in e for e in errors)
    assert any("LittleEndianExplicit expected but BigEndianExplicit found" in e for e in errors)
    assert "cannot be added to DICOMDIR" in done.stdout + done.stderr


# One demo patient whose package holds every encoding a general-purpose export must convert.
AWKWARD = {
    "plan": "implicit, no preamble, no File Meta",
    "ct": "Explicit VR Big Endian, 16-bit pixels",
    "plan_dose": "Explicit VR Big Endian, 32-bit pixels",
    "beam_dose": "Deflated Explicit VR Little Endian",
    "record": "File Meta without preamble",
    "rt_image": "Implicit VR Little Endian with File Meta",
}


def resave(path: Path, syntax: str) -> None:
    ds = dcmread(path)
    if syntax == ExplicitVRBigEndian:  # pydicom leaves OW/OB bytes as they are: swap cells here
        width = int(ds.BitsAllocated) // 8
        data = bytes(ds.PixelData)
        ds.PixelData = b"".join(data[i : i + width][::-1] for i in range(0, len(data), width))
    ds.file_meta.TransferSyntaxUID = syntax
    dcmwrite(path, ds, enforce_file_format=True)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("awkward")
    demo = write_demo(root / "src", patients=1, hostile=False)
    patient = demo.patients[0]
    files = {uid: demo.root / name for uid, name in patient.files.items()}
    resave(files[patient.plan_dose_uid], ExplicitVRBigEndian)
    resave(files[patient.beam_dose_uids[0]], DeflatedExplicitVRLittleEndian)
    resave(files[patient.rt_image_uid], ImplicitVRLittleEndian)
    record = files[patient.record_uid]
    record.write_bytes(record.read_bytes()[132:])
    index = root / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [demo.root], workers=1)
    writer.close()
    return demo, index


def test_general_purpose_converts_every_encoding(awkward, open_reader, tmp_path):
    need("dcmmkdir")
    need("dciodvfy")
    demo, index = awkward
    patient = demo.patients[0]
    reader = open_reader(index)
    result = export.export_plan(
        reader, patient.plan_uid, tmp_path / "media", profile=export.GENERAL_PURPOSE
    )
    kinds = {
        "plan": patient.plan_uid,
        "ct": next(u for u in patient.ct_uids if patient.encodings[u] == BIG_ENDIAN),
        "plan_dose": patient.plan_dose_uid,
        "beam_dose": patient.beam_dose_uids[0],
        "record": patient.record_uid,
        "rt_image": patient.rt_image_uid,
    }
    assert set(kinds) == set(AWKWARD)
    by_uid = {f.sop_uid: f for f in result.files}
    for kind, uid in kinds.items():
        assert uid in by_uid, AWKWARD[kind]
    assert by_uid[kinds["plan_dose"]].reencoded and by_uid[kinds["ct"]].reencoded
    assert by_uid[kinds["beam_dose"]].reencoded and by_uid[kinds["rt_image"]].reencoded
    assert by_uid[kinds["plan"]].reencoded
    assert not by_uid[kinds["record"]].reencoded  # Explicit VR LE already: copied, preamble added
    dose = dcmread(by_uid[kinds["plan_dose"]].source, stop_before_pixels=True)
    assert dose.BitsAllocated == 32 and dose.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    check_general_purpose(result, tmp_path)


def make_compressed(path: Path) -> None:
    """The same CT slice, its pixel data as (fake) JPEG Baseline fragments."""
    ds = dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(62) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dcmwrite(path, ds, enforce_file_format=True)


def make_undecodable_text(path: Path) -> None:
    """A structure set name whose bytes are not valid in the declared UTF-8."""
    ds = dcmread(path, force=True)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StructureSetName = "MARKER-NAME"
    dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    data = path.read_bytes()
    assert data.count(b"MARKER-NAME") == 1
    path.write_bytes(data.replace(b"MARKER-NAME", b"\xff\xfeRKER-NAME"))


def test_files_that_cannot_be_reencoded_stop_the_export(tmp_path, capsys):
    demo = write_demo(tmp_path / "src", patients=1, hostile=False)
    patient = demo.patients[0]
    ct = next(u for u in patient.ct_uids if patient.encodings[u] != BIG_ENDIAN)
    make_compressed(demo.root / patient.files[ct])
    make_undecodable_text(demo.root / patient.files[patient.plan_structure_set_uid])
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [demo.root], workers=1)
    writer.close()
    reader = IndexReader(index)
    try:
        total = len(expected_members(reader, patient.plan_uid))
        with pytest.raises(export.ProfileError) as caught:
            export.export_plan(
                reader, patient.plan_uid, tmp_path / "media", profile=export.GENERAL_PURPOSE
            )
        # the default profile copies both as they are
        byte_for_byte = export.export_plan(reader, patient.plan_uid, tmp_path / "copy")
    finally:
        reader.close()
    problems = {p.sop_uid: p for p in caught.value.problems}
    assert set(problems) == {ct, patient.plan_structure_set_uid}
    assert problems[ct].compressed and "JPEG Baseline" in problems[ct].reason
    text = problems[patient.plan_structure_set_uid]
    assert not text.compressed and "(3006,0004) has another value" in text.reason
    message = str(caught.value)
    assert f"2 of {total} files cannot be written" in message
    assert "1 of them hold compressed pixel data" in message
    assert not (tmp_path / "media").exists()
    assert not [p for p in os.listdir(tmp_path) if "dicomfs-export" in p]
    assert len(byte_for_byte.files) == total

    code = cli.main(
        [
            "export",
            patient.plan_uid,
            str(tmp_path / "cli"),
            "--index",
            str(index),
            "--profile",
            "general-purpose",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"2 of {total} files cannot be written" in err and ct in err
    assert not (tmp_path / "cli").exists()


def test_a_deflate_bomb_is_refused_not_inflated(demo_set, tmp_path):
    bomb = demo_set.root / "hostile" / "bomb.dcm"
    uid = str(
        dcmread(bomb, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
    )
    with pytest.raises(NotReencodable, match="inflates beyond"):
        write_explicit_le(
            str(bomb), tmp_path / "out", uid, ("1.2.3", "T"), size=bomb.stat().st_size
        )
    assert os.listdir(tmp_path) == []


def test_big_endian_values_without_a_known_width_are_refused(demo_set, tmp_path):
    patient = demo_set.patients[0]
    ct = next(u for u in patient.ct_uids if patient.encodings[u] == BIG_ENDIAN)
    ds = dcmread(demo_set.root / patient.files[ct])
    ds.add_new(0x00091010, "UN", b"\x01\x02\x03\x04")
    source = tmp_path / "big-endian-un.dcm"
    dcmwrite(source, ds, enforce_file_format=True)
    with pytest.raises(NotReencodable, match="VR UN"):
        write_explicit_le(
            str(source), tmp_path / "out", ct, ("1.2.3", "T"), size=source.stat().st_size
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()


def test_general_purpose_profile_on_the_command_line(
    demo_set, demo_index, demo_reader, tmp_path, capsys
):
    patient = demo_set.patients[0]
    dest = tmp_path / "media"
    argv = ["export", patient.plan_uid, str(dest), "--index", str(demo_index)]
    assert run_command([*argv, "--profile", "general-purpose", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["profile"] == "general-purpose"
    assert {f["transfer_syntax"] for f in doc["files"]} == {ExplicitVRLittleEndian}
    assert any(f["reencoded"] for f in doc["files"])
    assert (
        cli.main([*argv[:2], str(tmp_path / "text"), *argv[3:], "--profile", "general-purpose"])
        == 0
    )
    out = capsys.readouterr().out
    assert "written again as Explicit VR Little Endian" in out
    with pytest.raises(SystemExit) as usage:
        cli.main([*argv, "--profile", "cd-r"])
    assert usage.value.code == 2 and "invalid choice: 'cd-r'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown media profile"):
        export.export_plan(demo_reader, patient.plan_uid, tmp_path / "x", profile="x")
