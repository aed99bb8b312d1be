"""The part10 setting without FUSE: the header, the flag the parser keeps, the view's nodes.

Files without a PS3.10 header are the real Monaco export in tests/data/real
(no preamble, no File Meta) and datasets encoded here in each syntax; every
other real export is a proper PS3.10 file and must stay byte for byte its
source. Expected datasets are read from the sources with pydicom
(``force=True``); the served bytes are read with pydicom without it.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from parse_helpers import CT_IMAGE, MONACO, REAL_FILES, dataset, encode, parse_ok, read
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomfs.commands.cli import main
from dicomfs.dicom import part10
from dicomfs.dicom.parse import parse_bytes
from dicomfs.dicom.records import Instance
from dicomfs.errors import ConfigError
from dicomfs.index import IndexReader
from dicomfs.service.config import resolve
from dicomfs.view.nodes import DirNode, FileNode, SourceChanged, open_source, read_source
from dicomfs.view.prefixes import prefix_of
from dicomfs.view.tree import View

MONACO_FILES = sorted(MONACO.iterdir())
GROUP_LENGTH_END = 132 + 12  # preamble, DICM, then (0002,0000) UL: 12 bytes


def header(instance: Instance) -> bytes:
    return part10.prefix(instance.sop_class_uid, instance.sop_instance_uid, instance.flags)


def dcmread_strict(data: bytes) -> pydicom.Dataset:
    """pydicom as strict tools call it: no ``force``, so a file must be PS3.10."""
    return pydicom.dcmread(io.BytesIO(data))


# -- the header ---------------------------------------------------------------------------


def test_the_parser_keeps_the_syntax_of_a_bare_dataset_and_of_nothing_else() -> None:
    for path in REAL_FILES:
        flags = parse_ok(path).flags
        bare = [f for f in flags if f.startswith(f"{part10.DATASET_ONLY}:")]
        if path.parent == MONACO:
            assert bare == [f"{part10.DATASET_ONLY}:{ImplicitVRLittleEndian}"], path
        else:
            assert bare == [], path


@pytest.mark.parametrize("path", MONACO_FILES, ids=lambda p: p.name)
def test_each_monaco_file_with_its_header_is_a_part10_file_of_the_same_dataset(path: Path) -> None:
    raw = path.read_bytes()
    with pytest.raises(InvalidDicomError):
        dcmread_strict(raw)  # why the setting exists
    instance = parse_ok(path)
    prefix = header(instance)
    assert prefix == header(parse_ok(path))  # the same bytes every time
    ds = dcmread_strict(prefix + raw)
    meta = ds.file_meta
    assert meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert meta.MediaStorageSOPClassUID == instance.sop_class_uid
    assert meta.MediaStorageSOPInstanceUID == instance.sop_instance_uid
    assert meta.ImplementationClassUID == part10.IMPLEMENTATION_CLASS_UID
    assert meta.FileMetaInformationGroupLength == len(prefix) - GROUP_LENGTH_END
    assert ds == read(path)


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_a_bare_dataset_gets_the_syntax_it_is_encoded_in(syntax: str) -> None:
    ds = dataset(CT_IMAGE, PatientID="P-part10", Modality="CT")
    raw = encode(ds, syntax, file_format=False)
    instance = parse_bytes(raw)
    assert isinstance(instance, Instance), instance
    assert f"{part10.DATASET_ONLY}:{syntax}" in instance.flags
    served = dcmread_strict(header(instance) + raw)
    assert served.file_meta.TransferSyntaxUID == syntax
    assert (served.SOPInstanceUID, served.PatientID) == (ds.SOPInstanceUID, "P-part10")


def test_a_file_meta_without_preamble_gets_the_preamble_only() -> None:
    whole = encode(dataset(CT_IMAGE, PatientID="P-part10"), ExplicitVRLittleEndian)
    raw = whole[132:]  # the File Meta group first: no preamble, no DICM
    instance = parse_bytes(raw)
    assert isinstance(instance, Instance), instance
    assert "no_preamble" in instance.flags
    assert header(instance) == bytes(128) + b"DICM"
    assert header(instance) + raw == whole
    assert dcmread_strict(header(instance) + raw) == dcmread_strict(whole)


def test_files_that_need_no_header_or_cannot_be_given_one_get_none() -> None:
    proper = [p for p in REAL_FILES if p.parent != MONACO]
    assert proper
    for path in proper:
        assert header(parse_ok(path)) == b"", path
    monaco = parse_ok(MONACO_FILES[0])
    bare = [f for f in monaco.flags if f.startswith(part10.DATASET_ONLY)]
    # Indexed before the syntax was kept: its syntax is unknown, so nothing.
    assert part10.prefix(monaco.sop_class_uid, monaco.sop_instance_uid, ["no_file_meta"]) == b""
    # A SOP Instance UID that is no UID would make a header that lies.
    for hostile in ("../../x", "1.2." + "3" * 70, "1.2.3\\4"):
        assert part10.prefix(monaco.sop_class_uid, hostile, bare) == b"", hostile
    assert part10.dataset_only_flag(implicit=True, little=False) is None  # no such syntax


def test_received_objects_keep_the_implementation_uid_they_were_stored_with() -> None:
    # net.store writes this header too: a changed UID would make an object
    # received again differ from its stored copy, which the store then keeps
    # as a conflict instead of dropping it as a duplicate.
    assert part10.IMPLEMENTATION_CLASS_UID == "2.25.224128041181582177214694233844734136764"


# -- the view -----------------------------------------------------------------------------


def make_view(index: Path, *, part10: bool, names: str = "id") -> View:
    return View(
        lambda: IndexReader(index),
        dir_uid=0,
        dir_gid=0,
        mount_time_ns=0,
        cache_ttl=0.0,
        names=names,
        part10=part10,
    )


def files_under(view: View, path: str) -> Iterator[tuple[str, FileNode]]:
    for name, node in view.listdir(path):
        child = f"{path}/{name}"
        if isinstance(node, DirNode):
            yield from files_under(view, child)
        else:
            assert isinstance(node, FileNode)
            yield child, node


def expected_prefixes(index: Path) -> dict[str, bytes]:
    """Source path -> the prefix its index row makes."""
    reader = IndexReader(index)
    try:
        return {i.file.path: prefix_of(i) for i in reader.all_instances()}
    finally:
        reader.close()


def test_without_part10_every_file_is_its_source(real_index: Path) -> None:
    view = make_view(real_index, part10=False)
    try:
        for path, node in files_under(view, "/by-sop"):
            assert node.real_path is not None
            assert node.prefix == b"", path
            assert node.size == os.stat(node.real_path).st_size
            assert read_source(node) == Path(node.real_path).read_bytes()
    finally:
        view.close()


def test_with_part10_only_files_without_a_header_change_on_every_path(real_index: Path) -> None:
    prefixes = expected_prefixes(real_index)
    view = make_view(real_index, part10=True)
    try:
        seen: dict[str, set[int]] = {}
        for top in ("/by-sop", "/by-series", "/by-study", "/plans", "/objects", "/patients"):
            for path, node in files_under(view, top):
                if node.real_path is None:
                    continue  # manifest.json, missing.txt
                source = Path(node.real_path).read_bytes()
                assert node.prefix == prefixes[node.real_path], path
                assert node.size == len(node.prefix) + len(source), path
                assert node.source_size == len(source)
                assert read_source(node) == node.prefix + source, path
                seen.setdefault(node.real_path, set()).add(node.size)
        assert set(seen) == set(prefixes)
        assert all(len(sizes) == 1 for sizes in seen.values())  # one size whatever the path
        changed = {path for path, prefix in prefixes.items() if prefix}
        assert changed == {str(p) for p in seen if Path(p).parent.name == MONACO.name}
        for path in changed:
            served = view.lookup(f"/by-sop/{read(path).SOPInstanceUID}.dcm")
            assert isinstance(served, FileNode)
            assert dcmread_strict(read_source(served)) == read(path)
    finally:
        view.close()


def writable_copy(folder: Path) -> Path:
    """The Monaco export in ``folder``, writable (the repository's copy is read-only)."""
    shutil.copytree(MONACO, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


Indexer = Callable[[Path, Sequence[Path], int], object]


def test_the_source_is_checked_as_the_indexed_file(tmp_path: Path, build_index: Indexer) -> None:
    source = writable_copy(tmp_path / "src")
    index = tmp_path / "index.sqlite"
    build_index(index, [source], 1)
    view = make_view(index, part10=True)
    try:
        plan = parse_ok(source / "TinyFS_TinyVMAT.dcm")
        node = view.lookup(f"/by-sop/{plan.sop_instance_uid}.dcm")
        assert isinstance(node, FileNode) and node.prefix
        os.close(open_source(node))  # the source's size, not the served size, is checked
        with open(source / "TinyFS_TinyVMAT.dcm", "ab") as grown:
            grown.write(b"\x00\x00")
        with pytest.raises(SourceChanged):
            open_source(node)
    finally:
        view.close()


def test_a_file_indexed_again_is_never_served_with_its_old_prefix(
    tmp_path: Path, build_index: Indexer
) -> None:
    """patients/ lists rows without flags: their prefixes are kept, for that file row only."""
    source = writable_copy(tmp_path / "src")
    index = tmp_path / "index.sqlite"
    build_index(index, [source], 1)
    view = make_view(index, part10=True)
    try:
        before = {node.real_path: node for _, node in files_under(view, "/patients")}
        slice_path = str(source / "TinyFS_CT1_image00000.DCM")
        assert before[slice_path].prefix
        # The export is replaced by a proper PS3.10 file of the same object.
        whole = before[slice_path].prefix + Path(slice_path).read_bytes()
        Path(slice_path).write_bytes(whole)
        build_index(index, [source], 1)
        after = {node.real_path: node for _, node in files_under(view, "/patients")}
        assert after[slice_path].prefix == b""
        assert after[slice_path].size == len(whole)
        assert read_source(after[slice_path]) == whole
        others = set(before) - {slice_path}
        assert all(after[p] == before[p] for p in others)
    finally:
        view.close()


# -- the setting --------------------------------------------------------------------------


def test_part10_comes_from_the_file_the_environment_or_a_flag(tmp_path: Path) -> None:
    config = tmp_path / "dicomfs.toml"
    config.write_text(f'sources = ["{tmp_path}"]\nmountpoint = "/mnt/x"\npart10 = true\n')
    assert resolve({"sources": [str(tmp_path)]}, {}).part10 is False  # off by default
    from_file = resolve({"config": str(config)}, {})
    assert (from_file.part10, from_file.origin("part10")) == (True, "file")
    from_env = resolve({"config": str(config)}, {"DICOMFS_PART10": "no"})
    assert (from_env.part10, from_env.origin("part10")) == (False, "env")
    from_flag = resolve({"config": str(config), "part10": True}, {"DICOMFS_PART10": "no"})
    assert (from_flag.part10, from_flag.origin("part10")) == (True, "flag")
    with pytest.raises(ConfigError, match="part10"):
        resolve({"config": str(config)}, {"DICOMFS_PART10": "sometimes"})


def test_ls_and_cat_show_what_the_mount_serves_with_part10(
    real_index: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    prefixes = expected_prefixes(real_index)
    [structure_set] = [p for p in prefixes if p.endswith("TinyFS_StrctrSets.dcm")]
    uid = read(structure_set).SOPInstanceUID
    served = prefixes[structure_set] + Path(structure_set).read_bytes()
    for flags, expected in (([], Path(structure_set).read_bytes()), (["--part10"], served)):
        path = f"/by-sop/{uid}.dcm"
        assert main(["ls", "--index", str(real_index), "-l", *flags, "/by-sop"]) == 0
        listed = capsysbinary.readouterr().out.decode()
        [line] = [line for line in listed.splitlines() if line.endswith(f" {uid}.dcm")]
        assert f" {len(expected)} " in line
        assert main(["cat", "--index", str(real_index), *flags, path]) == 0
        assert capsysbinary.readouterr().out == expected
