"""The part10 setting served for real: a FUSE mount, the WebDAV share, and rt-utils reading both.

The index is the real exports in tests/data/real, built by the real
scanner. What a file must read as is computed from its index row
(``prefixes.prefix_of``) and its source: the prefix, then the source's bytes.
Reads are checked at offsets on both sides of the prefix's end, through the
kernel's page cache and with O_DIRECT (each read reaches the daemon as asked).
rt-utils (pydicom 3) is the real tool the setting is for: it reads the
Monaco structure set and CT through a mount with the setting and fails
without it. It runs in an interpreter of its own (``.venv-rtutils``, or
``$DICOMFS_RTUTILS_PYTHON``): rt-utils 1.2.7 requires the ``dataclasses``
backport of Python 3.6, which shadows the standard library for the tests
that run the venv's packages as another user (``PYTHONPATH``). A missing
tool or mount skips locally and fails in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuse_helpers import Mount, public_dir
from parse_helpers import read
from side_python import python_with
from webdav_helpers import Share, curl, dav_entries

from dicomfs.index import IndexReader
from dicomfs.view.prefixes import prefix_of


@dataclass(frozen=True)
class Served:
    """One indexed file: its source and the bytes it must read as with part10."""

    sop_uid: str
    source: Path
    prefix: bytes

    @property
    def source_bytes(self) -> bytes:
        return self.source.read_bytes()

    @property
    def expected(self) -> bytes:
        return self.prefix + self.source_bytes


@pytest.fixture(scope="module")
def served(real_index: Path) -> list[Served]:
    reader = IndexReader(real_index)
    try:
        rows = reader.all_instances()
    finally:
        reader.close()
    files = [Served(i.sop_uid, Path(i.file.path), prefix_of(i)) for i in rows]
    assert any(f.prefix for f in files) and not all(f.prefix for f in files)
    return files


def monaco(served: list[Served]) -> list[Served]:
    return [f for f in served if f.source.parent.name == "monaco-tinyvmat"]


@contextlib.contextmanager
def mounted_with(index: Path, prefix: str, *flags: str) -> Iterator[Path]:
    folder = public_dir(prefix)
    mountpoint = folder / "mnt"
    mountpoint.mkdir()
    mount = Mount(mountpoint, index)
    mount.args += list(flags)
    try:
        mount.start()
        yield mountpoint
    finally:
        mount.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def part10_mount(real_index: Path) -> Iterator[Path]:
    with mounted_with(real_index, "dicomfs-part10-", "--part10") as mountpoint:
        yield mountpoint


@pytest.fixture(scope="module")
def plain_mount(real_index: Path) -> Iterator[Path]:
    with mounted_with(real_index, "dicomfs-plain-") as mountpoint:
        yield mountpoint


def spans(prefix: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of reads around the end of the prefix and of the file."""
    wanted = [
        (0, 1), (0, prefix), (0, prefix + 1), (1, prefix), (prefix - 1, 2), (prefix - 7, 13),
        (prefix, 1), (prefix + 1, 3), (prefix + 5, 4096), (4090, 9000), (size - 3, 10),
        (size, 5), (0, size + 100), (131, 1), (127, 9),
    ]  # fmt: skip
    return [(offset, length) for offset, length in wanted if offset >= 0]


# -- FUSE ---------------------------------------------------------------------------------


@pytest.mark.fuse
def test_the_mount_serves_each_prefix_then_its_source_at_any_offset(
    part10_mount: Path, served: list[Served]
) -> None:
    for f in served:
        path = part10_mount / "by-sop" / f"{f.sop_uid}.dcm"
        expected = f.expected
        assert os.stat(path).st_size == len(expected), path
        assert path.read_bytes() == expected, path
        for flags in (os.O_RDONLY, os.O_RDONLY | os.O_DIRECT):
            fd = os.open(path, flags)
            try:
                for offset, length in spans(len(f.prefix), len(expected)):
                    got = os.pread(fd, length, offset)
                    assert got == expected[offset : offset + length], (path, offset, length)
            finally:
                os.close(fd)


@pytest.mark.fuse
def test_without_part10_the_mount_serves_every_source_byte_for_byte(
    plain_mount: Path, served: list[Served]
) -> None:
    for f in served:
        path = plain_mount / "by-sop" / f"{f.sop_uid}.dcm"
        assert os.stat(path).st_size == f.source.stat().st_size
        assert path.read_bytes() == f.source_bytes


@pytest.mark.fuse
def test_with_symlinks_only_the_files_given_a_header_are_regular_files(
    real_index: Path, served: list[Served]
) -> None:
    with mounted_with(real_index, "dicomfs-part10-links-", "--part10", "--symlinks") as mountpoint:
        for f in served:
            path = mountpoint / "by-sop" / f"{f.sop_uid}.dcm"
            if f.prefix:
                assert not path.is_symlink(), path
                assert path.read_bytes() == f.expected
            else:
                assert os.readlink(path) == str(f.source)


# -- WebDAV -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def part10_share(real_index: Path) -> Iterator[Share]:
    """Read as root: pytest's folders are closed to other users."""
    with Share(real_index, "--run-as", "root", "--part10") as running:
        yield running


def test_the_share_serves_each_prefix_then_its_source_in_every_range(
    part10_share: Share, served: list[Served]
) -> None:
    proper = next(f for f in served if not f.prefix)
    for f in [*monaco(served), proper]:
        url = f"{part10_share.url}/by-sop/{f.sop_uid}.dcm"
        expected = f.expected
        whole = curl(url)
        assert (whole.status, whole.body) == (200, expected), url
        head = curl(url, "-I")
        assert int(head.headers["content-length"]) == len(expected)
        found = dav_entries(curl(url, "-X", "PROPFIND", "-H", "Depth: 0").body)
        assert [int(p["getcontentlength"]) for p in found.values()] == [len(expected)]
        for offset, length in spans(len(f.prefix), len(expected)):
            if offset >= len(expected) or length == 0:
                continue  # no such range: answered as for any other file
            last = min(offset + length, len(expected)) - 1
            part = curl(url, "-r", f"{offset}-{last}")
            assert part.status == 206, (url, offset, length)
            assert part.body == expected[offset : last + 1], (url, offset, length)
            assert part.headers["content-range"] == f"bytes {offset}-{last}/{len(expected)}"
        tail = curl(url, "-r", "-10")
        assert (tail.status, tail.body) == (206, expected[-10:])


def test_without_part10_the_share_serves_every_source_byte_for_byte(
    real_index: Path, served: list[Served]
) -> None:
    with Share(real_index, "--run-as", "root") as share:
        for f in served:
            reply = curl(f"{share.url}/by-sop/{f.sop_uid}.dcm")
            assert (reply.status, reply.body) == (200, f.source_bytes)


# -- rt-utils -----------------------------------------------------------------------------

RT_UTILS_PROBE = "import rt_utils"
# Prints the ROI names rt-utils reads from a CT folder and a structure set,
# or what it raised (any exception: rt-utils refuses the files as they are).
RT_UTILS_SCRIPT = """
import json, sys
from rt_utils import RTStructBuilder
try:
    rtstruct = RTStructBuilder.create_from(
        dicom_series_path=sys.argv[1], rt_struct_path=sys.argv[2]
    )
    print(json.dumps({"rois": list(rtstruct.get_roi_names())}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)}))
"""


def rt_utils_python() -> str:
    """An interpreter with rt-utils: $DICOMFS_RTUTILS_PYTHON, this one, or .venv-rtutils."""
    return python_with(RT_UTILS_PROBE, "DICOMFS_RTUTILS_PYTHON", ".venv-rtutils", "rt-utils")


def rt_utils_reads(python: str, series: Path, structure_set: Path) -> dict[str, object]:
    done = subprocess.run(
        [python, "-c", RT_UTILS_SCRIPT, str(series), str(structure_set)],
        capture_output=True, text=True, timeout=300, cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


@pytest.mark.fuse
def test_rt_utils_reads_the_monaco_structure_set_through_the_mount_only_with_part10(
    part10_mount: Path, plain_mount: Path, served: list[Served]
) -> None:
    python = rt_utils_python()
    [structure_set] = [f for f in monaco(served) if f.source.name == "TinyFS_StrctrSets.dcm"]
    source = read(structure_set.source)
    series = source.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    ct_series = series.RTReferencedSeriesSequence[0].SeriesInstanceUID
    expected = [roi.ROIName for roi in source.StructureSetROISequence]
    assert expected

    def through(mountpoint: Path) -> dict[str, object]:
        return rt_utils_reads(
            python,
            mountpoint / "by-series" / ct_series,
            mountpoint / "by-sop" / f"{structure_set.sop_uid}.dcm",
        )

    assert through(part10_mount) == {"rois": expected}
    refused = through(plain_mount)
    assert "rois" not in refused and refused["error"], refused
