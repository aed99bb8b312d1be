"""The scanner on real folders: what gets indexed, rejected, skipped, removed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dicomfs.dicom.parse import parse_file
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.live.scan import reconcile


def test_demo_tree_every_good_file_indexed_every_hostile_file_rejected(
    demo_set, demo_reader: IndexReader
) -> None:  # type: ignore[no-untyped-def]
    indexed_paths = {i.file.path for i in demo_reader.all_instances()}
    for patient in demo_set.patients:
        for uid, rel in patient.files.items():
            inst = demo_reader.instance(uid)
            assert inst is not None, rel
            assert inst.file.path == str(demo_set.root / rel)
    rejected = {r.path: r.kind for r in demo_reader.rejected()}
    for rel, expected in demo_set.hostile.items():
        path = os.fsdecode(os.path.join(os.fsencode(demo_set.root), os.fsencode(rel)))
        if expected in ("unsafe_uid", "non_utf8_name"):
            assert path not in rejected, rel
            assert path in {i.file.path for i in demo_reader.all_instances()} or any(
                c.other_path == path for c in demo_reader.conflicts()
            ), rel
        else:
            assert rejected.get(path) == expected, (rel, rejected.get(path))
    assert indexed_paths.isdisjoint(rejected)


def test_duplicates_are_reported(demo_set, demo_reader: IndexReader) -> None:  # type: ignore[no-untyped-def]
    kinds = {c.other_path: c.kind for c in demo_reader.conflicts()}
    assert "benign" in kinds.values() and "conflict" in kinds.values()
    status = demo_reader.status()
    assert status.conflicts >= 1 and status.benign_duplicates >= 1


def test_unchanged_rerun_opens_no_file(demo_set, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dicomfs.live import scan

    index = tmp_path / "i.sqlite"
    writer = IndexWriter(index)
    first = reconcile(writer, [demo_set.root], workers=1)
    assert first.parsed == first.seen
    opened: list[str] = []

    def counting_parse(path: str):  # type: ignore[no-untyped-def]
        opened.append(path)
        return parse_file(path)

    monkeypatch.setattr(scan, "parse_file", counting_parse)
    second = reconcile(writer, [demo_set.root], workers=1)
    assert (second.parsed, second.skipped, second.removed) == (0, first.seen, 0)
    assert opened == []  # the skip key decided; no file was opened
    # Change one file's bytes but keep size, mtime and inode (a rewrite in
    # place with the mtime put back): its ctime moved, so exactly that file
    # is parsed again (reliability.md C7).
    patient = demo_set.patients[0]
    victim = demo_set.root / patient.files[patient.ct_uids[0]]
    st = victim.stat()
    with open(victim, "r+b") as handle:
        handle.seek(st.st_size - 4)
        handle.write(b"\xff\xfe\xfd\xfc")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = reconcile(writer, [demo_set.root], workers=1)
    assert third.parsed == 1 and opened == [str(victim)]


def test_vanished_files_are_removed_but_mass_loss_is_refused(tmp_path: Path) -> None:
    import shutil

    from dicomfs.demo import write_ct_series

    src = tmp_path / "src"
    write_ct_series(src / "a", 25, rows=16)
    index = tmp_path / "i.sqlite"
    writer = IndexWriter(index)
    first = reconcile(writer, [src], workers=1)
    assert first.indexed >= 20
    one = sorted(p for p in (src / "a").rglob("*") if p.is_file())[0]
    one.unlink()
    second = reconcile(writer, [src], workers=1)
    assert second.removed == 1 and not second.mass_loss_alarm
    # The volume "disappears": everything gone at once -> keep the index, alarm.
    shutil.rmtree(src / "a")
    third = reconcile(writer, [src], workers=1)
    assert third.removed == 0 and "gone at once" in third.mass_loss_alarm
    assert writer.status().indexed_files == first.indexed - 1


def test_fifo_and_symlinks_are_never_opened(tmp_path: Path, demo_set) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe.dcm")
    outside = demo_set.root / demo_set.patients[0].files[demo_set.patients[0].plan_uid]
    (src / "escape.dcm").symlink_to(outside)
    (src / "loop").symlink_to(src, target_is_directory=True)
    (src / "dangling.dcm").symlink_to(tmp_path / "nothing")
    writer = IndexWriter(tmp_path / "i.sqlite")
    done = threading.Event()
    result: list[object] = []

    def run() -> None:
        result.append(reconcile(writer, [src], workers=1))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "scan blocked (opened a FIFO?)"
    assert writer.status().files == 0


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    from dicomfs.errors import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        reconcile(IndexWriter(tmp_path / "i.sqlite"), [tmp_path / "nope"])
