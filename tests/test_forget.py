"""``dicomfs hosts`` and ``dicomfs forget``: the origins of an index's rows, and dropping one.

Through a real index in each backend, written by "hosts" that are mappings
of this process (``roots.configure``), as in ``test_roots``: a retired host's
rows (PostgreSQL stores its name in each path), a folder that is no longer
a source (both engines), the duplicate that serves once the first copy is
forgotten, and names that must match only their own paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.commands.cli import main
from dicomfs.dicom.records import FileResult, FileStat, Instance
from dicomfs.errors import ConfigError
from dicomfs.index import IndexReader, IndexWriter, roots
from dicomfs.index.origins import Target, origins
from dicomfs.index.roots import UNMAPPED
from dicomfs.index.schema import GENERATION

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(autouse=True)
def _restore_roots() -> Iterator[None]:
    before = roots._current
    yield
    roots._current = before


def _write(index: Path | str, folder: Path, uids: dict[str, str]) -> None:
    """Index one file per name in ``folder``, each holding the SOP Instance UID given."""
    results = []
    for name, uid in uids.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{name} {uid}".encode())
        stat = FileStat.from_stat(str(path), os.stat(path))
        results.append(FileResult(stat, Instance(sop_class_uid=CT, sop_instance_uid=uid)))
    writer = IndexWriter(index)
    try:
        writer.apply(results)
    finally:
        writer.close()


def _serving(index: Path | str) -> dict[str, str]:
    reader = IndexReader(index)
    try:
        rows = reader.rows("SELECT sop_uid, file_id FROM instance_rows WHERE serving = 1")
        return {
            uid: inst.file.path for uid, _ in rows if (inst := reader.instance(uid)) is not None
        }
    finally:
        reader.close()


def _generation(index: Path | str) -> int:
    reader = IndexReader(index)
    try:
        return int(reader.meta(GENERATION) or 0)
    finally:
        reader.close()


def test_a_retired_hosts_rows_are_listed_and_forgotten(
    tmp_path: Path, index_at: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Host "old" indexed two files, host "new" a copy of one: once "old" is forgotten,
    new's copy serves the UID, old's other UID is gone, and new's rows stay."""
    roots.configure({}, "old")
    _write(index_at, tmp_path / "old-in", {"a.dcm": "1.2.1", "b.dcm": "1.2.2"})
    roots.configure({}, "new")
    _write(index_at, tmp_path / "new-in", {"a-copy.dcm": "1.2.1", "c.dcm": "1.2.3"})
    shared = not isinstance(index_at, Path)

    reader = IndexReader(index_at)
    found = {o.name: o for o in origins(reader)}
    reader.close()
    if shared:  # each host's own folders carry its name
        assert {name: o.files for name, o in found.items()} == {"@new": 2, "@old": 2}
        assert found["@new"].readable and not found["@old"].readable
    else:  # one host's plain paths
        assert {name: o.files for name, o in found.items()} == {"": 4}
    assert main(["hosts", "--index", str(index_at)]) == 0
    listing = capsys.readouterr().out
    if shared:
        assert "dicomfs forget @old" in listing and "@new" in listing

    before = _generation(index_at)
    what = "@old" if shared else str(tmp_path / "old-in")
    assert main(["forget", what, "--dry-run", "--index", str(index_at)]) == 0
    assert "would drop 2 files" in capsys.readouterr().out
    # Before: old's copy serves the UID, and on host "new" it is another host's file.
    served = _serving(index_at)["1.2.1"]
    old_copy = str(tmp_path / "old-in/a.dcm")
    assert served == (os.fsdecode(UNMAPPED) + "old" + old_copy if shared else old_copy)

    assert main(["forget", what, "--quiet", "--index", str(index_at)]) == 0
    assert "dropped 2 files" in capsys.readouterr().out
    assert _serving(index_at) == {
        "1.2.1": str(tmp_path / "new-in/a-copy.dcm"),
        "1.2.3": str(tmp_path / "new-in/c.dcm"),
    }
    assert _generation(index_at) > before  # mounts drop what they kept of it
    assert (tmp_path / "old-in/a.dcm").exists()  # the sources are never touched


def test_a_folder_is_forgotten_without_its_look_alike_neighbours(
    tmp_path: Path, index_at: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``/x/exports`` names that folder and its files, not ``/x/exports-2019`` or
    ``/x/exports.old``, which sort between it and everything under it."""
    roots.configure({}, "alpha")
    _write(index_at, tmp_path / "exports", {"a.dcm": "1.2.1", "sub/b.dcm": "1.2.2"})
    _write(index_at, tmp_path / "exports-2019", {"c.dcm": "1.2.3"})
    _write(index_at, tmp_path / "exports.old", {"d.dcm": "1.2.4"})
    _write(index_at, tmp_path, {"exports0": "1.2.5"})
    assert main(["forget", str(tmp_path / "exports"), "-q", "--index", str(index_at)]) == 0
    assert "dropped 2 files" in capsys.readouterr().out
    assert sorted(_serving(index_at)) == ["1.2.3", "1.2.4", "1.2.5"]
    # One file by its path, and a path with nothing under it.
    assert main(["forget", str(tmp_path / "exports0"), "-q", "--index", str(index_at)]) == 0
    assert sorted(_serving(index_at)) == ["1.2.3", "1.2.4"]
    assert main(["forget", str(tmp_path / "nothing"), "--index", str(index_at)]) == 0
    assert "drops 0 files" in capsys.readouterr().out


def test_a_root_and_a_folder_of_it_are_named_as_stored(
    tmp_path: Path, index_at: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    nas = tmp_path / "nas"
    roots.configure({"nas": nas}, "alpha")
    _write(index_at, nas, {"2019/a.dcm": "1.2.1", "2020/b.dcm": "1.2.2"})
    roots.configure({}, "beta")  # a host without the root: it still names it
    reader = IndexReader(index_at)
    (listed,) = origins(reader)
    reader.close()
    assert (listed.name, listed.files, listed.readable) == ("nas", 2, False)
    assert main(["forget", "nas:/2019", "-q", "--index", str(index_at)]) == 0
    assert sorted(_serving(index_at)) == ["1.2.2"]
    assert main(["forget", "nas", "-q", "--index", str(index_at)]) == 0
    assert _serving(index_at) == {}
    capsys.readouterr()
    assert main(["hosts", "--json", "--index", str(index_at)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_hosts_json_and_an_empty_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index.sqlite"
    roots.configure({}, "alpha")
    _write(index, tmp_path / "in", {"a.dcm": "1.2.1"})
    assert main(["hosts", "--json", "--index", str(index)]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry == {
        "origin": "local",
        "files": 1,
        "here": "this host's own paths",
        "readable": True,
    }
    assert main(["forget", str(tmp_path / "in"), "-q", "--index", str(index)]) == 0
    capsys.readouterr()
    assert main(["hosts", "--index", str(index)]) == 0
    assert capsys.readouterr().out.strip() == "the index holds no files"


@pytest.mark.parametrize(
    ("text", "shared", "exact", "low", "high"),
    [
        ("@alpha", True, None, b"@alpha:", b"@alpha;"),
        ("nas", True, None, b"nas:", b"nas;"),
        ("nas:/", True, None, b"nas:/", b"nas:0"),
        ("nas:/2019/", True, b"nas:/2019", b"nas:/2019/", b"nas:/20190"),
        ("@alpha:/data/../in", True, b"@alpha:/in", b"@alpha:/in/", b"@alpha:/in0"),
        ("/", False, None, b"/", b"0"),
        ("/data/x/", False, b"/data/x", b"/data/x/", b"/data/x0"),
    ],
)
def test_what_a_name_covers(
    text: str, shared: bool, exact: bytes | None, low: bytes, high: bytes
) -> None:
    roots.configure({}, "alpha")
    target = Target.parse(text, shared=shared)
    assert (target.exact, target.low, target.high) == (exact, low, high)


def test_a_local_path_is_named_as_this_host_stores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    roots.configure({"nas": "/mnt/nas"}, "alpha")
    assert Target.parse("/mnt/nas/2019", shared=True).exact == b"nas:/2019"
    assert Target.parse("/data/in", shared=True).exact == b"@alpha:/data/in"
    assert Target.parse("/data/in", shared=False).exact == b"/data/in"
    # Relative to the working directory only when it says so: a bare word is a root.
    monkeypatch.chdir(tmp_path)
    assert Target.parse("./old", shared=False).exact == os.fsencode(tmp_path / "old")
    assert Target.parse("old", shared=False).low == b"old:"
    index = tmp_path / "index.sqlite"
    _write(index, tmp_path / "old", {"a.dcm": "1.2.1"})
    assert main(["forget", "old", "--index", str(index)]) == 0
    captured = capsys.readouterr()
    assert "drops 0 files" in captured.out and "dicomfs forget ./old" in captured.err
    assert main(["forget", "./old", "-q", "--index", str(index)]) == 0
    assert _serving(index) == {}


@pytest.mark.parametrize("text", ["", "relative/folder", "bad name", "@", "nas:2019", "a:b:/c"])
def test_what_names_no_origin_is_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"origin|must start with /"):
        Target.parse(text, shared=True)
