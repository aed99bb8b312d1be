"""The C-STORE receiver against dcmtk's storescu/echoscu on loopback.

Every expectation comes from the demo patients (dicomfs.demo.patients); the store
is a temporary folder, or a tiny tmpfs / read-only bind mount for the
failure cases (those need root, as chmod does not stop root).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from net_helpers import (
    echoscu,
    free_port,
    read_store,
    require_tool,
    same_dataset,
    store_responses,
    storescu,
    wait_until,
)
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from dicomfs.dicom.records import is_safe_uid
from dicomfs.errors import ConfigError
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.live.scan import reconcile
from dicomfs.net.receive import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    ReceiverHandle,
    check_store_in_sources,
    make_store_handler,
    start_receiver,
)
from dicomfs.net.store import DatasetError, StoreWriter, read_identity, safe_name
from dicomfs.view.listing import cat_bytes
from dicomfs.view.tree import View

HOSTILE_SOP = "../../evil"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverHandle]:
    handle = start_receiver(tmp_path / "store", port=0)
    yield handle
    handle.stop()


def _patient_files(demo_set, number: int = 0) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[number]
    return {uid: demo_set.root / rel for uid, rel in patient.files.items()}


def _partials(store: Path) -> list[Path]:
    return [p for p in store.rglob(".incoming-*")]


def _digests(store: Path) -> dict[Path, str]:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in store.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_echo_answers(receiver: ReceiverHandle) -> None:
    assert echoscu(receiver.port) == 0


def test_every_object_of_a_patient_arrives_intact_and_is_indexed(
    demo_set, receiver: ReceiverHandle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = _patient_files(demo_set)
    result = storescu(receiver.port, list(files.values()))
    assert store_responses(result) == ["Success"] * len(files), result.stderr

    stored = read_store(receiver.store)
    assert set(stored) == set(files)
    for uid, source in files.items():
        assert same_dataset(source, stored[uid]), uid
        assert stored[uid].name == f"{uid}.dcm"
        assert receiver.store in stored[uid].parents
    assert not _partials(receiver.store)

    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    report = reconcile(writer, [receiver.store], workers=1)
    writer.close()
    assert report.rejected == 0
    reader = IndexReader(index)
    try:
        for uid in files:
            inst = reader.instance(uid)
            assert inst is not None, uid
            assert inst.file.path == str(stored[uid])
    finally:
        reader.close()
    # ... and shows in the mount layout (the view the FUSE adapter serves).
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0)
    for uid in files:
        assert cat_bytes(view, f"/by-sop/{uid}.dcm") == stored[uid].read_bytes()


def test_objects_are_foldered_by_study_and_series(demo_set, receiver: ReceiverHandle) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[1]
    uid = patient.ct_uids[0]
    assert storescu(receiver.port, [demo_set.root / patient.files[uid]]).returncode == 0
    expected = receiver.store / patient.study_uid / patient.ct_series_uid / f"{uid}.dcm"
    assert expected.is_file()


def test_receiver_indexes_what_it_stores_when_given_an_index(demo_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[1]
    index = tmp_path / "index.sqlite"
    handle = start_receiver(tmp_path / "store", port=0, index=index)
    try:
        uids = [patient.plan_uid, patient.plan_dose_uid]
        result = storescu(handle.port, [demo_set.root / patient.files[u] for u in uids])
        assert result.returncode == 0, result.stderr
        assert handle.wait_indexed(30)
    finally:
        handle.stop()
    reader = IndexReader(index)
    try:
        assert set(reader.instances(uids)) == set(uids)
    finally:
        reader.close()


# pynetdicom decodes the C-STORE command set with pydicom, which warns about
# the hostile Affected SOP Instance UID; that warning is expected here.
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_hostile_uid_is_stored_under_a_safe_name_inside_the_store(demo_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]
    ds = dcmread(demo_set.root / patient.files[patient.ct_uids[0]])
    source = tmp_path / "source" / "evil.dcm"
    source.parent.mkdir()
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.SOPInstanceUID = HOSTILE_SOP
        ds.file_meta.MediaStorageSOPInstanceUID = HOSTILE_SOP
        ds.StudyInstanceUID = ".."
        ds.SeriesInstanceUID = "../x"
        ds.save_as(source)
    arena = tmp_path / "arena"
    store = arena / "a" / "b" / "store"
    handle = start_receiver(store, port=0)
    try:
        result = storescu(handle.port, [source])
    finally:
        handle.stop()
    assert result.returncode == 0, result.stderr

    everything = [p for p in arena.rglob("*") if p.is_file()]
    assert len(everything) == 1
    landed = everything[0]
    assert landed.parent == store  # unsafe study/series: no sub-folders either
    assert re.fullmatch(r"unsafe-[0-9a-f]{16}\.dcm", landed.name)
    assert str(dcmread(landed).SOPInstanceUID) == HOSTILE_SOP
    assert not (tmp_path / "evil").exists() and not (arena / "evil").exists()


@contextlib.contextmanager
def _mounted(*command: str, target: Path) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs / read-only bind mount needs root")
    result = subprocess.run([*command, str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_full_store_answers_out_of_resources_and_keeps_what_was_stored(
    demo_set, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]
    small = demo_set.root / patient.files[patient.plan_uid]
    doses = [demo_set.root / patient.files[u] for u in (patient.plan_dose_uid,)]
    doses += [demo_set.root / patient.files[u] for u in patient.beam_dose_uids]
    assert all(d.stat().st_size > 30_000 for d in doses)  # two do not fit in 64 KiB
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    with _mounted("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", target=mountpoint):
        handle = start_receiver(mountpoint / "store", port=0, layout="flat")
        try:
            assert storescu(handle.port, [small]).returncode == 0
            before = _digests(handle.store)
            assert len(before) == 1

            result = storescu(handle.port, doses)
            responses = store_responses(result)
            assert len(responses) == len(doses), result.stderr
            assert "Refused: OutOfResources" in responses, result.stderr
            after = _digests(handle.store)
            assert {p: d for p, d in after.items() if p in before} == before
            assert not _partials(handle.store)
            assert len(after) < 1 + len(doses)
        finally:
            handle.stop()


def test_read_only_store_answers_out_of_resources_and_keeps_what_was_stored(
    demo_set, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]
    store = tmp_path / "store"
    handle = start_receiver(store, port=0, layout="flat")
    try:
        first = demo_set.root / patient.files[patient.plan_uid]
        assert storescu(handle.port, [first]).returncode == 0
        before = _digests(store)
        with _mounted("mount", "--bind", "-o", "ro", str(store), target=store):
            result = storescu(handle.port, [demo_set.root / patient.files[patient.rt_image_uid]])
            assert store_responses(result) == ["Refused: OutOfResources"], result.stderr
            assert _digests(store) == before
    finally:
        handle.stop()
    assert _digests(store) == before and not _partials(store)


def test_store_must_be_inside_a_watched_source(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "incoming").mkdir(parents=True)
    assert check_store_in_sources(source / "incoming", [source]) == source / "incoming"
    with pytest.raises(ConfigError, match="not inside any source"):
        check_store_in_sources(tmp_path / "elsewhere", [source])


def test_allow_list_rejects_other_callers(tmp_path: Path) -> None:
    handle = start_receiver(tmp_path / "store", port=0, allowed_callers=["TPS1"])
    try:
        assert echoscu(handle.port, calling="INTRUDER") != 0
        assert echoscu(handle.port, calling="TPS1") == 0
    finally:
        handle.stop()


# -- the writer and the handler, without a network -----------------------------


class _FakeEvent:
    """Just what make_store_handler reads from a pynetdicom C-STORE event."""

    def __init__(self, stream: bytes, transfer_syntax: str) -> None:
        self._stream = stream

        class _Requestor:
            ae_title = "TEST"

        class _Assoc:
            requestor = _Requestor()

        class _Context:
            pass

        self.assoc = _Assoc()
        self.context = _Context()
        self.context.transfer_syntax = transfer_syntax  # type: ignore[attr-defined]
        self.request = argparse.Namespace(AffectedSOPInstanceUID="1.2.3")

    def encoded_dataset(self, include_meta: bool = True) -> bytes:
        return self._stream


def _dataset_bytes(path: Path) -> tuple[bytes, str]:
    """The dataset part of a demo file (after the File Meta group) and its transfer syntax."""
    ds = dcmread(path)
    data = path.read_bytes()
    end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return data[end:], str(ds.file_meta.TransferSyntaxUID)


def test_identity_is_read_in_every_transfer_syntax_the_demo_writes(
    demo_set,
) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]  # the patient with deflated, big-endian, implicit files
    seen: set[str] = set()
    for uid, rel in patient.files.items():
        if patient.encodings[uid] == "implicit_no_preamble":
            continue  # no File Meta: nothing to cut the dataset from
        stream, ts = _dataset_bytes(demo_set.root / rel)
        identity = read_identity(stream, ts)
        assert identity.sop_instance_uid == uid
        seen.add(ts)
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"} <= seen


def test_explicit_big_endian_is_accepted_and_stored_as_received(
    demo_set, receiver: ReceiverHandle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Retired, but old systems still send it (Orthanc accepts it): from dcmtk and pynetdicom."""
    from pydicom.uid import ExplicitVRBigEndian
    from pynetdicom import AE

    patient = demo_set.patients[0]
    (source,) = [
        demo_set.root / rel
        for uid, rel in patient.files.items()
        if patient.encodings[uid] == "big_endian"
    ]
    # dcmtk, proposing Big Endian first (-xb; not the helper's +C, which puts
    # Implicit VR first): the file goes over the wire as it is.
    require_tool("storescu")
    result = subprocess.run(
        ["storescu", "-v", "-xb", "-aec", "DICOMFS", "127.0.0.1", str(receiver.port), str(source)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert store_responses(result) == ["Success"], result.stderr
    stored = read_store(receiver.store)
    uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    assert str(dcmread(stored[uid]).file_meta.TransferSyntaxUID) == ExplicitVRBigEndian
    assert _dataset_bytes(stored[uid]) == _dataset_bytes(source)  # byte for byte

    # pynetdicom, with a Big Endian context only, a copy of the same object under a new UID.
    ds = dcmread(source)
    ds.SOPInstanceUID = "2.25.1234567890"
    ae = AE(ae_title="BIGENDIAN")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRBigEndian)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="DICOMFS")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == STATUS_SUCCESS
    stored = read_store(receiver.store)
    received = dcmread(stored["2.25.1234567890"])
    assert str(received.file_meta.TransferSyntaxUID) == ExplicitVRBigEndian
    assert (
        received.PatientID == ds.PatientID
        and _dataset_bytes(stored["2.25.1234567890"])[1] == ExplicitVRBigEndian
    )
    view_index = tmp_path / "index.sqlite"
    writer = IndexWriter(view_index)
    report = reconcile(writer, [receiver.store], workers=1)
    writer.close()
    assert report.rejected == 0 and report.indexed == 2


def test_undecodable_dataset_is_answered_cannot_understand(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "store")
    handler = make_store_handler(writer)
    assert handler(_FakeEvent(b"\x08\x00\x18\x00UI\xff\xff", ExplicitVRLittleEndian)) == (  # type: ignore[arg-type]
        STATUS_CANNOT_UNDERSTAND
    )
    with pytest.raises(DatasetError):
        read_identity(b"not dicom at all", ExplicitVRLittleEndian)
    assert not any(p.is_file() for p in (tmp_path / "store").rglob("*"))


def test_unwritable_store_is_answered_out_of_resources(demo_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]
    stream, ts = _dataset_bytes(demo_set.root / patient.files[patient.plan_dose_uid])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    handler = make_store_handler(StoreWriter(blocker / "store"))
    assert handler(_FakeEvent(stream, ts)) == STATUS_OUT_OF_RESOURCES  # type: ignore[arg-type]
    ok = make_store_handler(StoreWriter(tmp_path / "store"))
    assert ok(_FakeEvent(stream, ts)) == STATUS_SUCCESS  # type: ignore[arg-type]


def test_same_uid_twice_never_replaces_the_first_copy(demo_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]
    stream, ts = _dataset_bytes(demo_set.root / patient.files[patient.plan_dose_uid])
    writer = StoreWriter(tmp_path / "store", layout="flat")
    first = writer.store(stream, ts)
    again = writer.store(stream, ts)
    assert again.duplicate and again.path == first.path
    original = first.path.read_bytes()
    # Same SOP Instance UID, different content: kept beside it, never swapped in.
    changed = writer.store(stream[:-4] + b"\x01\x02\x03\x04", ts)
    assert not changed.duplicate and changed.path != first.path
    assert first.path.read_bytes() == original
    assert changed.path.name.startswith(first.path.stem + ".")
    assert not _partials(tmp_path / "store")


@given(st.text())
def test_stored_names_are_always_plain_file_names(uid: str) -> None:
    name = safe_name(uid)
    assert "/" not in name and "\x00" not in name and name not in (".", "..")
    assert name.endswith(".dcm") and not name.startswith(".")
    assert (name == f"{uid}.dcm") == is_safe_uid(uid)


# -- the command ----------------------------------------------------------------


def test_receive_command_serves_until_sigterm(demo_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`dicomfs receive` as the lead wires it: register() into a parser, run its handler."""
    port = free_port()
    store, index = tmp_path / "store", tmp_path / "index.sqlite"
    script = textwrap.dedent(
        """
        import argparse, sys
        from dicomfs.commands.net import register
        parser = argparse.ArgumentParser(prog="dicomfs")
        register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(sys.argv[1:])
        sys.exit(args.func(args))
        """
    )
    command = [sys.executable, "-c", script, "receive", str(store), "--port", str(port)]
    command += ["--ae-title", "DICOMFS", "--allow", "STORESCU", "ECHOSCU", "--index", str(index)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: echoscu(port) == 0, 30, "dicomfs receive to answer C-ECHO")
        patient = demo_set.patients[1]
        sent = storescu(port, [demo_set.root / patient.files[patient.plan_uid]])
        assert store_responses(sent) == ["Success"], sent.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "receiver stopped" in stderr
    reader = IndexReader(index)
    try:
        assert reader.instance(patient.plan_uid) is not None
    finally:
        reader.close()
