"""What an SMB server needs from the mount: real free space, stable inode numbers, Windows names.

Samba answers "how big is this drive" from statfs of the mount and gives
clients st_ino as the file ID; Windows refuses some names and, by default,
paths of 260 characters or more. Each is checked here on a real mount (or,
for names, on every path of the demo and real data sets); the end-to-end
SMB tests are in ``test_smb.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fuse_helpers import Mount, public_dir, require_fuse, tmpfs

from dicomfs.dicom.records import is_safe_uid
from dicomfs.fuse.fsinfo import ROOT_INO, child_path, file_inode, inode_of, parent_path, space
from dicomfs.index import IndexReader
from dicomfs.view.names import named, synthetic_name
from dicomfs.view.nodes import DirNode
from dicomfs.view.tree import View

SERVER = "S" * 15  # the longest NetBIOS computer name
SHARE = "dicomfs"
WINDOWS_MAX_PATH = 260  # MAX_PATH, the terminating NUL included
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM[1-9¹²³]|LPT[1-9¹²³])", re.I)
_FORBIDDEN = set('<>:"/\\|?*') | {chr(c) for c in range(32)}


def view_of(index: Path) -> View:
    return View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)


def every_path(index: Path) -> list[str]:
    """Every path of the mount of ``index``, relative to its root ("a/b")."""
    view = view_of(index)
    out: list[str] = []

    def walk(path: str) -> None:
        for name, node in view.listdir(path):
            rel = f"{path}/{name}".lstrip("/")
            out.append(rel)
            if isinstance(node, DirNode):
                walk(rel)

    try:
        walk("")
    finally:
        view.close()
    return out


def windows_problem(name: str) -> str | None:
    """Why Windows would refuse ``name`` as a file or folder name, or None."""
    if not name or len(name) > 255:
        return "empty or longer than 255"
    if bad := sorted(set(name) & _FORBIDDEN):
        return f"forbidden characters {bad!r}"
    if name[-1] in ". ":
        return "ends with a dot or a space"
    if _RESERVED.fullmatch(name.split(".")[0].rstrip(" ")):
        return "a reserved device name"
    return None


def unc(rel: str) -> str:
    return f"\\\\{SERVER}\\{SHARE}\\" + rel.replace("/", "\\")


# -- Windows names and path lengths ---------------------------------------------------------------


def test_the_windows_name_check_refuses_what_windows_refuses() -> None:
    for bad in ("a:b", "a*", "x?", 'q"', "a|b", "a<b", "a>b", "a\\b", "tab\there", "end.",
                "end ", "CON", "con.dcm", "NUL", "COM1.txt", "LPT9", "aux .x"):  # fmt: skip
        assert windows_problem(bad) is not None, bad
    for good in ("CON_1.2.dcm", "COM10", "1.2.840.dcm", "by-sop", ".dicomfs", "CT_2.25.1.dcm"):
        assert windows_problem(good) is None, good


@pytest.mark.parametrize("which", ["demo_index", "real_index"])
def test_every_path_is_a_valid_windows_path_under_260(
    which: str, request: pytest.FixtureRequest
) -> None:
    index: Path = request.getfixturevalue(which)
    paths = every_path(index)
    assert len(paths) > 50
    problems = [
        f"{rel}: {problem}"
        for rel in paths
        for part in rel.split("/")
        if (problem := windows_problem(part)) is not None
    ]
    assert not problems, problems[:10]
    longest = max(paths, key=lambda rel: len(unc(rel)))
    print(f"{which}: {len(paths)} paths, longest UNC path {len(unc(longest))}: {unc(longest)}")
    assert len(unc(longest)) < WINDOWS_MAX_PATH


def test_the_longest_possible_path_is_under_260() -> None:
    """Whatever the data: the deepest layouts with 64-character UIDs (the grammar's maximum)."""
    uid = "1." + "2" * 62
    assert len(uid) == 64 and is_safe_uid(uid)
    modality = "M" * 16  # names.modality_name keeps at most 16 characters
    deepest = {
        "by-study": f"by-study/{uid}/{uid}/{uid}.dcm",
        "plans references": f"plans/{uid}/references/{modality}_{uid}.dcm",
        "plans referenced-by": f"plans/{uid}/referenced-by/{modality}_{uid}.dcm",
        "plans registrations": f"plans/{uid}/registrations/{modality}_{uid}.dcm",
        "objects referenced-by": f"objects/{uid}/referenced-by/{modality}_{uid}.dcm",
        "by-series": f"by-series/{uid}/{uid}.dcm",
    }
    lengths = {layout: len(unc(rel)) for layout, rel in deepest.items()}
    print(lengths)
    assert max(lengths.values()) == lengths["by-study"] == 233
    assert all(windows_problem(part) is None for rel in deepest.values() for part in rel.split("/"))


# -- inode numbers -------------------------------------------------------------------------------


def test_inode_numbers_are_a_fixed_function_of_the_path() -> None:
    """Pinned values: changing the function would change every file ID clients hold."""
    assert inode_of("/") == ROOT_INO == 1
    assert inode_of("/plans") == 2412121939979027423
    assert inode_of("/by-sop") == 8335648929983468452
    assert child_path("/", "plans") == "/plans" and child_path("/plans", "x") == "/plans/x"
    assert parent_path("/plans/x") == "/plans" and parent_path("/plans") == "/"
    assert all(0 < inode_of(f"/by-sop/1.2.{n}.dcm") < 1 << 63 for n in range(10_000))


@pytest.mark.parametrize("which", ["demo_index", "real_index"])
def test_no_two_paths_share_an_inode_number(which: str, request: pytest.FixtureRequest) -> None:
    paths = ["/", *(f"/{rel}" for rel in every_path(request.getfixturevalue(which)))]
    numbers = {inode_of(p) for p in paths}
    assert len(numbers) == len(paths)
    assert not numbers & {0, 0xFFFFFFFF} and inode_of("/") == 1


def _walk_inodes(root: Path) -> dict[str, tuple[int, int]]:
    """rel path -> (inode from the listing, inode from stat), for every path of a mount."""
    found: dict[str, tuple[int, int]] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = os.path.relpath(entry.path, root)
                found[rel] = (entry.inode(), os.stat(entry.path, follow_symlinks=False).st_ino)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return found


@pytest.fixture(scope="module")
def demo_copy(demo_set, build_index) -> Iterator[tuple[Path, Path]]:  # type: ignore[no-untyped-def]
    """(sources, index): the demo set in a folder every user may traverse, indexed."""
    base = public_dir("dicomfs-fs-smb-")
    shutil.copytree(demo_set.root, base / "src", symlinks=True)
    build_index(base / "index.sqlite", [base / "src"], 1)
    yield base / "src", base / "index.sqlite"
    shutil.rmtree(base, ignore_errors=True)


def _expected_inodes(index: Path, rels: Iterator[str] | list[str]) -> dict[str, int]:
    """rel path -> its number: by-sop/ files by the index's id of their file, the rest by path."""
    reader = IndexReader(index)
    try:
        by_sop = {}
        for inst in reader.all_instances():
            name = f"{inst.sop_uid}.dcm" if named(inst) else synthetic_name(inst.sop_uid)
            by_sop[f"by-sop/{name}"] = inst.file.file_id
    finally:
        reader.close()
    return {rel: file_inode(by_sop[rel]) if rel in by_sop else inode_of(f"/{rel}") for rel in rels}


@contextlib.contextmanager
def mount_of(index: Path, sources: Sequence[Path] = (), **kwargs: object) -> Iterator[Path]:
    mountpoint = public_dir("dicomfs-fs-smb-mnt-")
    mount = Mount(mountpoint, index, **kwargs)  # type: ignore[arg-type]
    for source in sources:
        mount.args += ["--source", str(source)]
    try:
        mount.start()
        yield mountpoint
    finally:
        mount.close()
        shutil.rmtree(mountpoint, ignore_errors=True)
        mount.log_path.unlink(missing_ok=True)


@pytest.mark.fuse
def test_inodes_match_between_listing_and_stat_and_survive_remounts(
    demo_copy: tuple[Path, Path],
) -> None:
    require_fuse()
    _, index = demo_copy
    with mount_of(index) as first, mount_of(index) as second:  # two daemons, one index
        one, two = _walk_inodes(first), _walk_inodes(second)
        assert os.stat(first).st_ino == ROOT_INO
    with mount_of(index) as again:  # a remount
        three = _walk_inodes(again)
    assert len(one) > 100
    expected = _expected_inodes(index, list(one))
    assert sum(rel.startswith("by-sop/") for rel in one) > 10
    for rel, (listed, statted) in one.items():
        assert listed == statted == expected[rel], rel
    assert one == two == three
    assert len({ino for ino, _ in one.values()}) == len(one)


@pytest.mark.fuse
def test_symlink_mode_keeps_the_same_numbers(demo_copy: tuple[Path, Path]) -> None:
    require_fuse()
    _, index = demo_copy
    with mount_of(index, symlinks=True) as mnt:
        links = _walk_inodes(mnt)
    expected = _expected_inodes(index, list(links))
    assert all(listed == statted == expected[rel] for rel, (listed, statted) in links.items())


# -- free space -----------------------------------------------------------------------------------


def _bytes(figures: os.statvfs_result) -> tuple[int, int, int]:
    return (
        figures.f_blocks * figures.f_frsize,
        figures.f_bfree * figures.f_frsize,
        figures.f_bavail * figures.f_frsize,
    )


def test_space_adds_up_filesystems_once_each(tmp_path: Path) -> None:
    with (
        tmpfs(tmp_path / "a", "8m", inodes=5000) as a,
        tmpfs(tmp_path / "b", "4m", inodes=5000) as b,
    ):
        (a / "sub").mkdir()
        answer = space([str(a), str(a / "sub"), str(b), str(tmp_path / "absent")])
        total = answer["f_blocks"] * answer["f_frsize"]
        assert total == 12 * 1024 * 1024
        assert answer["f_files"] == 10_000 and 0 < answer["f_ffree"] <= 10_000
        assert answer["f_bsize"] == answer["f_frsize"] and answer["f_namemax"] == 255
    assert space([])["f_blocks"] == 0


@pytest.mark.fuse
def test_statfs_reports_the_sources_filesystem(demo_copy: tuple[Path, Path]) -> None:
    """Sources on a 32 MB tmpfs, index elsewhere: df of the mount says 32 MB, not 0."""
    require_fuse()
    sources, index = demo_copy
    volume = public_dir("dicomfs-fs-smb-vol-")
    with tmpfs(volume, "32m") as vol:
        shutil.copytree(sources, vol / "src", symlinks=True)
        with mount_of(index, [vol / "src"]) as mnt:
            mounted = os.statvfs(mnt)
            assert _bytes(mounted)[0] == 32 * 1024 * 1024
            assert _bytes(mounted)[1:] == _bytes(os.statvfs(vol))[1:]
            assert (mounted.f_files, mounted.f_ffree) == (
                os.statvfs(vol).f_files,
                os.statvfs(vol).f_ffree,
            )
            df = subprocess.run(["df", "-B1", str(mnt)], capture_output=True, text=True)
            assert df.returncode == 0 and str(32 * 1024 * 1024) in df.stdout, df.stdout
        with mount_of(index) as mnt:  # no sources given: the index's filesystem
            assert _bytes(os.statvfs(mnt))[0] == _bytes(os.statvfs(index.parent))[0] > 0
            assert os.statvfs(mnt).f_files == os.statvfs(index.parent).f_files
    volume.rmdir()
