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
    import shutil

    from dicomfs.live import scan

    root = tmp_path / "demo"  # a private copy: the session's demo index must stay true
    shutil.copytree(demo_set.root, root, symlinks=True)
    index = tmp_path / "i.sqlite"
    writer = IndexWriter(index)
    first = reconcile(writer, [root], workers=1)
    assert first.parsed == first.seen
    opened: list[str] = []

    def counting_parse(path: str):  # type: ignore[no-untyped-def]
        opened.append(path)
        return parse_file(path)

    monkeypatch.setattr(scan, "parse_file", counting_parse)
    second = reconcile(writer, [root], workers=1)
    assert (second.parsed, second.skipped, second.removed) == (0, first.seen, 0)
    assert opened == []  # the skip key decided; no file was opened
    # Change one file's bytes but keep size, mtime and inode (a rewrite in
    # place with the mtime put back): its ctime moved, so exactly that file
    # is parsed again (reliability.md C7).
    patient = demo_set.patients[0]
    victim = root / patient.files[patient.ct_uids[0]]
    st = victim.stat()
    with open(victim, "r+b") as handle:
        handle.seek(st.st_size - 4)
        handle.write(b"\xff\xfe\xfd\xfc")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = reconcile(writer, [root], workers=1)
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
    status = writer.status()  # each one recorded as rejected; nothing followed into an instance
    assert (status.files, status.rejected_files, status.instances) == (4, 4, 0)


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    from dicomfs.errors import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        reconcile(IndexWriter(tmp_path / "i.sqlite"), [tmp_path / "nope"])


# -- symlinks, FIFOs: listed as rejected, never opened or followed (reliability.md A11) -----------

_UID = "1.2.826.0.1.3680043.10.543.88"


def _ct(path: Path, number: int) -> str:
    from dicomfs.demo import ct_bytes

    uid = f"{_UID}.1.{number}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ct_bytes(uid, study_uid=f"{_UID}.2", series_uid=f"{_UID}.3"))
    return uid


def _special_tree(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """A source with one CT, symlinks in, out, dangling, in a loop, to a folder, and a FIFO.

    Returns the source, name -> expected rejection kind, and the UID of the
    file outside the source that one link points at (never to be indexed).
    """
    src = tmp_path / "src"
    _ct(src / "real.dcm", 1)
    escaped = _ct(tmp_path / "outside" / "escaped.dcm", 2)
    (src / "link-inside.dcm").symlink_to("real.dcm")
    (src / "link-outside.dcm").symlink_to(tmp_path / "outside" / "escaped.dcm")
    (src / "dangling.dcm").symlink_to("nowhere.dcm")
    (src / "loop.dcm").symlink_to("loop.dcm")
    (src / "folder-link").symlink_to(tmp_path / "outside", target_is_directory=True)
    os.mkfifo(src / "pipe.dcm")
    kinds = {
        name: "symlink"
        for name in (
            "link-inside.dcm",
            "link-outside.dcm",
            "dangling.dcm",
            "loop.dcm",
            "folder-link",
        )
    }
    kinds["pipe.dcm"] = "not_regular"
    return src, kinds, escaped


def test_special_entries_are_listed_as_rejected_without_being_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomfs.live import scan

    src, kinds, escaped = _special_tree(tmp_path)
    opened: list[str] = []

    def counting_parse(path: str):  # type: ignore[no-untyped-def]
        opened.append(os.path.basename(path))
        return parse_file(path)

    monkeypatch.setattr(scan, "parse_file", counting_parse)
    writer = IndexWriter(tmp_path / "i.sqlite")
    first = reconcile(writer, [src], workers=1)
    assert opened == ["real.dcm"]  # the specials were judged by lstat alone
    rejected = {os.path.basename(r.path): (r.kind, r.reason) for r in writer.rejected()}
    assert {name: kind for name, (kind, _) in rejected.items()} == kinds
    assert rejected["link-outside.dcm"][1] == (
        "symbolic link: not followed (a link could point outside the source)"
    )
    assert rejected["pipe.dcm"][1] == "not a regular file: FIFO"
    status = writer.status()
    assert (status.files, status.indexed_files, status.rejected_files) == (7, 1, 6)
    assert writer.instance(escaped) is None  # nothing reached through a link
    assert (first.seen, first.parsed, first.rejected) == (7, 1, 6)

    again = reconcile(writer, [src], workers=1)  # recorded once: an unchanged tree is skipped
    assert (again.seen, again.skipped, again.parsed, again.rejected) == (7, 7, 0, 0)

    # A link replaced by a regular file is indexed like any file; a link removed goes.
    (src / "link-inside.dcm").unlink()
    replaced = _ct(src / "link-inside.dcm", 3)
    (src / "dangling.dcm").unlink()
    third = reconcile(writer, [src], workers=1)
    assert (third.indexed, third.removed) == (1, 1)
    inst = writer.instance(replaced)
    assert inst is not None and inst.file.path == str(src / "link-inside.dcm")
    left = {os.path.basename(r.path) for r in writer.rejected()}
    assert left == set(kinds) - {"link-inside.dcm", "dangling.dcm"}
    # And a regular file replaced by a link is rejected, no longer served.
    (src / "real.dcm").unlink()
    (src / "real.dcm").symlink_to("link-inside.dcm")
    reconcile(writer, [src], workers=1)
    assert writer.instance(f"{_UID}.1.1") is None
    assert writer.file_state(str(src / "real.dcm")) == "rejected"


def test_dicomfs_index_and_rejected_list_special_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicomfs.commands.cli import main

    src, kinds, _ = _special_tree(tmp_path)
    index = str(tmp_path / "i.sqlite")
    assert main(["index", str(src), "--index", index, "-q"]) == 0
    capsys.readouterr()
    assert main(["rejected", "--index", index]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {os.path.basename(line.split("\t")[0]): line.split("\t")[1] for line in lines}
    assert listed == kinds
    assert main(["status", "--index", index]) == 0
    assert "files         7 (1 indexed, 6 rejected)" in capsys.readouterr().out
