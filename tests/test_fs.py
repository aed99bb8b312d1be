"""The mount, for real: a dicomfs daemon in a subprocess, driven by real programs.

Every test here mounts (marker ``fuse``). In CI a test that cannot mount
fails; elsewhere it is skipped with the reason (``fuse_helpers.require_fuse``).
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BACKENDS, new_index
from fuse_helpers import (
    HOSTILE_UID,
    LONG_UID,
    Corpus,
    Mount,
    build_corpus,
    ensure_group,
    ensure_user,
    mounted,
    public_dir,
    reindex,
    require_fuse,
    wait_for,
    write_index,
)

from dicomfs.dicom.records import FileResult, FileStat, Instance
from dicomfs.errors import MountError
from dicomfs.fuse.mount import is_stale_mount
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.view.names import synthetic_name
from dicomfs.view.nodes import DirNode
from dicomfs.view.tree import View

pytestmark = pytest.mark.fuse

GROUP = "dicomfs-readers"
INSIDER = "dicomfs-in"  # in GROUP
OUTSIDER = "dicomfs-out"  # not in GROUP


@dataclass
class Setup:
    corpus: Corpus
    index: Path | str
    mount: Mount

    @property
    def mnt(self) -> Path:
        return self.mount.mountpoint


def _corpus(
    prefix: str, request: pytest.FixtureRequest | None = None
) -> tuple[Corpus, Path | str, Path]:
    """Sources, their index (in the backend of ``request.param``; SQLite without), a mountpoint."""
    base = public_dir(prefix)
    corpus = build_corpus(base / "src")
    at = base / "index.sqlite" if request is None else new_index(request.param, base, request)
    index = write_index(at, corpus)
    mountpoint = base / "mnt"
    mountpoint.mkdir(mode=0o755)
    return corpus, index, mountpoint


@pytest.fixture(scope="module", params=BACKENDS)
def shared(request: pytest.FixtureRequest) -> Iterator[Setup]:
    """One read-only mount for every test that changes nothing, per backend."""
    require_fuse()
    ensure_group(GROUP)
    ensure_user(INSIDER, (GROUP,))
    ensure_user(OUTSIDER)
    corpus, index, mountpoint = _corpus("dicomfs-fs-", request)
    with mounted(mountpoint, index, allow_other=True, group=GROUP) as mount:
        yield Setup(corpus, index, mount)
    shutil.rmtree(mountpoint.parent, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def private(request: pytest.FixtureRequest) -> Iterator[Setup]:
    """A mount of its own for tests that change sources, the index or the daemon, per backend."""
    require_fuse()
    corpus, index, mountpoint = _corpus("dicomfs-fs-private-", request)
    with mounted(mountpoint, index) as mount:
        yield Setup(corpus, index, mount)
    shutil.rmtree(mountpoint.parent, ignore_errors=True)


def run(*args: str | Path, user: str | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [str(a) for a in args]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, timeout=60)


def view_paths(index: Path | str) -> set[str]:
    """Every path the view lists, relative to the mount root: what find must print."""
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)
    out: set[str] = set()

    def walk(path: str) -> None:
        for name, node in view.listdir(path):
            rel = f"{path}/{name}".lstrip("/")
            out.add(rel)
            if isinstance(node, DirNode):
                walk(rel)

    walk("")
    view.close()
    return out


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the library and the mount ------------------------------------------------------------


def test_libfuse_3_is_loaded() -> None:
    from dicomfs.fuse import fs

    assert fs.FUSE_MAJOR == 3


def test_mount_flags(shared: Setup) -> None:
    line = next(
        ln.split() for ln in Path("/proc/self/mountinfo").read_text().splitlines()
        if ln.split()[4] == str(shared.mnt)
    )  # fmt: skip
    mount_options = set(line[5].split(","))
    sep = line.index("-")
    fstype, source, super_options = line[sep + 1], line[sep + 2], set(line[sep + 3].split(","))
    assert {"ro", "nosuid", "nodev"} <= mount_options
    assert {"default_permissions", "allow_other"} <= super_options
    assert (fstype, source) == ("fuse.dicomfs", "dicomfs")
    assert "auto_unmount" not in line[sep + 3]


def test_callbacks_map_every_failure_to_an_errno(tmp_path: Path) -> None:
    """Nothing reaches mfusepy as a non-OSError (it would answer EINVAL)."""
    import sqlite3
    from types import SimpleNamespace

    import mfusepy

    from dicomfs.errors import IndexUnavailableError
    from dicomfs.fuse import fs
    from dicomfs.view.nodes import NotADirectory, NotFound, SourceChanged

    class Failing(View):
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def lookup(self, path: str):  # type: ignore[no-untyped-def]
            raise self.exc

        listdir = lookup  # type: ignore[assignment]

    cases = {
        NotFound("x"): errno.ENOENT,
        NotADirectory("x"): errno.ENOTDIR,
        PermissionError(errno.EACCES, "x"): errno.EACCES,
        SourceChanged("x"): errno.EIO,
        sqlite3.OperationalError("database is locked"): errno.EIO,
        IndexUnavailableError("gone"): errno.EIO,
        OSError(errno.EIO, "disk"): errno.EIO,
        ValueError("bug"): errno.EIO,
        KeyError("bug"): errno.EIO,
    }
    for exc, expected in cases.items():
        ops = fs.DicomFS(Failing(exc))
        read_only = SimpleNamespace(flags=os.O_RDONLY, fh=0, direct_io=0, keep_cache=0)
        for name, args in (
            ("getattr", ("/x",)),
            ("opendir", ("/x",)),
            ("readdir", ("/x", 0)),
            ("open", ("/x", read_only)),
        ):
            with pytest.raises(mfusepy.FuseOSError) as info:
                getattr(ops, name)(*args)
            assert info.value.errno == expected, (exc, name)
    ops = fs.DicomFS(Failing(NotFound("x")))
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_RDONLY | os.O_APPEND):
        with pytest.raises(mfusepy.FuseOSError) as info:
            ops.open("/x", SimpleNamespace(flags=flags))
        assert info.value.errno == errno.EROFS
    for write in (
        lambda: ops.create("/x", 0o644, None),
        lambda: ops.write("/x", b"1", 0, 0),
        lambda: ops.truncate("/x", 0),
        lambda: ops.unlink("/x"),
        lambda: ops.rename("/x", "/y"),
        lambda: ops.mkdir("/x", 0o755),
        lambda: ops.rmdir("/x"),
        lambda: ops.chmod("/x", 0o777),
        lambda: ops.chown("/x", 0, 0),
        lambda: ops.symlink("/x", "/y"),
        lambda: ops.link("/x", "/y"),
        lambda: ops.setxattr("/x", "user.a", b"1", 0),
        lambda: ops.removexattr("/x", "user.a"),
        lambda: ops.utimens("/x", None),
    ):
        with pytest.raises(mfusepy.FuseOSError) as info:
            write()
        assert info.value.errno == errno.EROFS
    with pytest.raises(mfusepy.FuseOSError) as info:
        ops.read("/x", 10, 0, SimpleNamespace(fh=12345))
    assert info.value.errno == errno.EBADF


# -- layout and bytes -------------------------------------------------------------------------


def test_find_lists_exactly_the_view(shared: Setup) -> None:
    found = run("find", shared.mnt, "-mindepth", "1")
    assert found.returncode == 0, found.stderr
    listed = {os.path.relpath(p, shared.mnt) for p in os.fsdecode(found.stdout).splitlines()}
    assert listed == view_paths(shared.index)
    c = shared.corpus
    for rel in (
        f"by-sop/{c.plan}.dcm",
        f"by-series/{c.ct_series}/{c.ct[0]}.dcm",
        f"by-study/{c.study}/{c.ct_series}/{c.ct[0]}.dcm",
        f"plans/{c.plan}/plan.dcm",
        f"plans/{c.plan}/references/RTSTRUCT_{c.rs1}.dcm",
        f"plans/{c.plan}/referenced-by/RTDOSE_{c.dose}.dcm",
        f"plans/{c.plan}/registrations/REG_{c.reg}.dcm",
        f"plans/{c.plan}/missing.txt",
        f"plans/{c.plan}/manifest.json",
        f"objects/{c.rs1}/self.dcm",
        f"objects/{c.rs1}/missing.txt",
        f"objects/{c.ct[0]}/referenced-by/RTSTRUCT_{c.rs2}.dcm",
        ".dicomfs/status.json",
        ".dicomfs/rejected.txt",
    ):
        assert rel in listed
    assert os.path.isfile(shared.mnt / "by-sop" / c.plan)  # bare UID, not listed
    assert c.plan not in listed


def test_hostile_uids_never_become_paths(shared: Setup) -> None:
    found = os.fsdecode(run("find", shared.mnt).stdout)
    assert HOSTILE_UID not in found and LONG_UID not in found and "/x\n" not in found
    assert f"by-sop/{synthetic_name(HOSTILE_UID)}" in found
    data = (shared.mnt / "by-sop" / synthetic_name(LONG_UID)).read_bytes()
    assert data == Path(shared.corpus.files[LONG_UID]).read_bytes()


def test_every_file_reads_byte_for_byte(shared: Setup) -> None:
    view = View(lambda: IndexReader(shared.index), dir_uid=0, dir_gid=0, mount_time_ns=0)
    count = 0
    for dirpath, _, files in os.walk(shared.mnt):
        for name in files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(shared.mnt))
            node = view.lookup(rel)
            expected = node.data() if node.generated else None  # type: ignore[union-attr]
            if expected is None:
                expected = Path(node.real_path).read_bytes()  # type: ignore[union-attr, arg-type]
            if name == "status.json":
                assert b'"instances"' in path.read_bytes()
            else:
                assert path.read_bytes() == expected, rel
            count += 1
    assert count > 60
    view.close()


def test_stat_mirrors_the_source(shared: Setup) -> None:
    c = shared.corpus
    for uid in (c.ct[0], c.secret, c.odd, c.plan):
        out = run("stat", "-c", "%s %Y %u %g %a %h", shared.mnt / "by-sop" / f"{uid}.dcm")
        assert out.returncode == 0, out.stderr
        st = os.stat(c.files[uid])
        mode = st.st_mode & 0o555
        expected = f"{st.st_size} {st.st_mtime_ns // 10**9} {st.st_uid} {st.st_gid} {mode:o} 1"
        assert out.stdout.decode().strip() == expected
        assert os.stat(shared.mnt / "by-sop" / f"{uid}.dcm").st_mtime_ns == st.st_mtime_ns
    top = os.stat(shared.mnt / "plans")
    assert (top.st_mode & 0o7777, top.st_uid, top.st_nlink) == (0o750, 0, 2)
    listing = run("ls", "-l", shared.mnt / "by-sop").stdout.decode().splitlines()
    assert len(listing) == 1 + len(c.files)


def test_cp_r_references_and_cat(shared: Setup, tmp_path: Path) -> None:
    c = shared.corpus
    src = shared.mnt / "plans" / c.plan / "references"
    done = run("cp", "-r", src, tmp_path / "pkg")
    assert done.returncode == 0, done.stderr
    copied = sorted(p.name for p in (tmp_path / "pkg").iterdir())
    assert len(copied) == len(c.package)
    for name in copied:
        uid = name.split("_", 1)[1][:-4]
        assert filecmp.cmp(tmp_path / "pkg" / name, c.files[uid], shallow=False)
    out = run("cat", shared.mnt / "by-sop" / f"{c.ct[0]}.dcm")
    assert out.stdout == Path(c.files[c.ct[0]]).read_bytes()
    missing = run("cat", shared.mnt / "plans" / c.plan / "missing.txt").stdout.decode()
    assert missing.startswith("# level\tuid") and c.missing_dose in missing


def test_dcmdump_reads_by_sop(shared: Setup) -> None:
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmdump (Debian package dcmtk) is not installed")
    for uid in (shared.corpus.plan, shared.corpus.ct[0]):
        out = run("dcmdump", shared.mnt / "by-sop" / f"{uid}.dcm")
        assert out.returncode == 0, out.stderr
        assert uid.encode() in out.stdout


def test_non_utf8_source_names_are_served(shared: Setup) -> None:
    c = shared.corpus
    assert os.fsencode(c.files[c.odd]).endswith(b"caf\xe9.dcm")
    assert (shared.mnt / "by-sop" / f"{c.odd}.dcm").read_bytes() == Path(
        c.files[c.odd]
    ).read_bytes()
    rejected = (shared.mnt / ".dicomfs" / "rejected.txt").read_text()
    assert "caf\\xe9.txt\tnot_dicom" in rejected


def test_demo_patients_through_the_mount(tmp_path: Path) -> None:
    """Parser and scanner output (synthetic RT patients, hostile files) served by real tools."""
    require_fuse()
    from dicomfs.demo.patients import write_demo
    from dicomfs.live.scan import reconcile

    base = public_dir("dicomfs-fs-demo-")
    demo = write_demo(base / "demo", patients=2, ct_slices=4, hostile=True)
    writer = IndexWriter(base / "index.sqlite")
    reconcile(writer, [demo.root], workers=1)
    writer.close()
    (base / "mnt").mkdir()
    view = View(lambda: IndexReader(base / "index.sqlite"), dir_uid=0, dir_gid=0, mount_time_ns=0)
    with mounted(base / "mnt", base / "index.sqlite") as mount:
        mnt = mount.mountpoint
        found = os.fsdecode(run("find", mnt).stdout)
        for uid in demo.hostile_uids.values():
            if len(uid) > 64 or "/" in uid or ".." in uid:
                assert uid not in found
        for n, patient in enumerate(demo.patients):
            dest = tmp_path / f"pkg{n}"
            done = run("cp", "-r", mnt / "plans" / patient.plan_uid / "references", dest)
            assert done.returncode == 0, done.stderr
            copied = sorted(p.name for p in dest.iterdir())
            assert copied == [
                name for name, _ in view.listdir(f"plans/{patient.plan_uid}/references")
            ]
            for name in copied:
                node = view.lookup(f"plans/{patient.plan_uid}/references/{name}")
                assert filecmp.cmp(dest / name, node.real_path, shallow=False)  # type: ignore[union-attr, arg-type]
            if shutil.which("dcmdump"):
                out = run("dcmdump", mnt / "by-sop" / f"{patient.plan_uid}.dcm")
                assert out.returncode == 0 and patient.plan_uid.encode() in out.stdout
        odd = [rel for rel, tag in demo.hostile.items() if tag == "non_utf8_name"]
        for rel in odd:
            uid = demo.hostile_uids[rel]
            data = (mnt / "by-sop" / f"{uid}.dcm").read_bytes()
            assert data == (demo.root / rel).read_bytes()
    view.close()
    shutil.rmtree(base, ignore_errors=True)


# -- read-only and access control ------------------------------------------------------------


def test_every_write_fails_with_erofs_and_changes_nothing(shared: Setup) -> None:
    c = shared.corpus
    before = {uid: (sha256(p), os.stat(p).st_mtime_ns) for uid, p in c.files.items()}
    target = shared.mnt / "by-sop" / f"{c.ct[0]}.dcm"
    attempts = {
        "write-open": lambda: os.open(target, os.O_WRONLY),
        "rdwr-open": lambda: os.open(target, os.O_RDWR),
        "append-open": lambda: os.open(target, os.O_WRONLY | os.O_APPEND),
        "truncate": lambda: os.truncate(target, 0),
        "create": lambda: os.open(shared.mnt / "by-sop" / "new.dcm", os.O_CREAT | os.O_WRONLY),
        "unlink": lambda: os.unlink(target),
        "rename": lambda: os.rename(target, shared.mnt / "by-sop" / "moved.dcm"),
        "chmod": lambda: os.chmod(target, 0o777),
        "chown": lambda: os.chown(target, 1, 1),
        "mkdir": lambda: os.mkdir(shared.mnt / "plans" / "new"),
        "rmdir": lambda: os.rmdir(shared.mnt / "plans"),
        "utime": lambda: os.utime(target),
        "symlink": lambda: os.symlink("x", shared.mnt / "link"),
        "setxattr": lambda: os.setxattr(target, "user.x", b"1"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, what
    touched = run("touch", target)
    assert touched.returncode != 0 and b"Read-only file system" in touched.stderr
    after = {uid: (sha256(p), os.stat(p).st_mtime_ns) for uid, p in c.files.items()}
    assert after == before


def test_a_user_outside_the_group_is_denied(shared: Setup) -> None:
    listing = run("ls", shared.mnt, user=OUTSIDER)
    assert listing.returncode != 0 and b"Permission denied" in listing.stderr
    c = shared.corpus
    cat = run("cat", shared.mnt / "by-sop" / f"{c.ct[0]}.dcm", user=OUTSIDER)
    assert cat.returncode != 0 and b"Permission denied" in cat.stderr


def test_group_members_read_only_what_the_source_allows(shared: Setup) -> None:
    c = shared.corpus
    ok = run("cat", shared.mnt / "by-sop" / f"{c.ct[0]}.dcm", user=INSIDER)
    assert ok.returncode == 0 and ok.stdout == Path(c.files[c.ct[0]]).read_bytes()
    assert run("ls", shared.mnt / "plans" / c.plan / "references", user=INSIDER).returncode == 0
    for path in (
        shared.mnt / "by-sop" / f"{c.secret}.dcm",
        shared.mnt / "plans" / c.plan / "references" / f"CT_{c.secret}.dcm",
    ):
        denied = run("cat", path, user=INSIDER)
        assert denied.returncode != 0 and b"Permission denied" in denied.stderr
    generated = run("cat", shared.mnt / "plans" / c.plan / "manifest.json", user=INSIDER)
    assert generated.returncode == 0 and c.plan.encode() in generated.stdout


# -- concurrency ----------------------------------------------------------------------------------


def test_32_parallel_readers_get_correct_bytes(shared: Setup) -> None:
    c = shared.corpus
    paths = [shared.mnt / "by-sop" / f"{u}.dcm" for u in sorted(c.safe_instances)]
    paths += [shared.mnt / "plans" / c.plan / "references" / f"CT_{u}.dcm" for u in c.ct]
    expected = {p: Path(c.files[p.name.split("_")[-1][:-4]]).read_bytes() for p in paths}
    errors: list[str] = []

    def reader(n: int) -> None:
        try:
            for i in range(6):
                path = paths[(n + i) % len(paths)]
                if (n + i) % 3 == 0:
                    data = run("cat", path).stdout
                else:
                    with path.open("rb", buffering=0) as f:
                        data = b"".join(iter(lambda: f.read(7919), b""))
                if data != expected[path]:
                    errors.append(f"{path}: {len(data)} bytes")
                os.listdir(shared.mnt / "plans" / c.plan / "references")
        except Exception as exc:  # reported below, with the daemon's log
            errors.append(repr(exc))

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, f"{errors[:5]}\n{shared.mount.log()[-3000:]}"


# -- sources and index changing under the mount ----------------------------------------------------


def _replace(path: str, data: bytes) -> None:
    """Swap in new content under the same name: new inode, like a sender's rename."""
    tmp = f"{path}.new"
    Path(tmp).write_bytes(data)
    os.replace(tmp, path)


def test_open_handles_keep_the_old_bytes(private: Setup) -> None:
    c = private.corpus
    uid = c.ct[0]
    source = c.files[uid]
    old = Path(source).read_bytes()
    new = bytes(b ^ 0xFF for b in old)
    through = private.mnt / "by-sop" / f"{uid}.dcm"
    with through.open("rb", buffering=0) as first:
        head = first.read(4096)
        _replace(source, new)
        reindex(private.index, c, uid)
        with through.open("rb", buffering=0) as second:  # a new open sees the new file
            assert second.read() == new
        assert head + first.read() == old  # the old handle still reads the old file
    assert through.read_bytes() == new


def test_a_reindexed_source_is_taken_back_from_the_kernel(private: Setup) -> None:
    """A private mount's entries and attributes live an hour (``held.LONG_TIMEOUT``).

    What refreshes them is the index moving: the kernel is told to drop
    the path, so its new size and bytes show without waiting for any timeout.
    """
    c = private.corpus
    uid = c.ct[2]
    source = c.files[uid]
    old = Path(source).read_bytes()
    through = private.mnt / "by-sop" / f"{uid}.dcm"
    assert through.read_bytes() == old  # the kernel now holds its size and pages
    new = old + bytes(4096)  # another size, so stale attributes would show
    _replace(source, new)
    reindex(private.index, c, uid)
    wait_for(lambda: os.stat(through).st_size == len(new), 10, "the new size in the mount")
    assert through.read_bytes() == new


def test_an_open_handle_reads_its_file_whole_after_a_longer_one_replaced_it(
    private: Setup,
) -> None:
    """The kernel cuts page-cache reads at the size it holds for the file (G3).

    Every handle of a path shares that size; told the new, longer file's
    size while an old handle reads through the page cache, the old handle
    got its file followed by zeros. Stat, listing and a new open in between
    must not change what the old handle reads.
    """
    c = private.corpus
    uid = c.ct[1]
    source = c.files[uid]
    old = Path(source).read_bytes()
    new = old + bytes(range(256)) * 64  # longer, and not zeros
    through = private.mnt / "by-sop" / f"{uid}.dcm"
    assert through.read_bytes() == old  # cached by the kernel
    with through.open("rb", buffering=0) as held:
        assert held.read(1000) == old[:1000]
        _replace(source, new)
        reindex(private.index, c, uid)
        wait_for(lambda: through.read_bytes() == new, 10, "new opens to read the new file")
        time.sleep(1.0)  # the path dropped from the kernel's caches meanwhile
        os.stat(through)
        run("ls", "-l", through.parent)
        assert old[:1000] + held.read() == old
    wait_for(lambda: os.stat(through).st_size == len(new), 10, "the new size once it is closed")
    assert through.read_bytes() == new


def test_a_path_shows_the_new_file_once_the_old_handle_on_it_is_closed(
    private: Setup,
) -> None:
    """The older source's attributes are shown only while a handle of it is open.

    Nothing else opens the path meanwhile: closing the old handle alone
    must make the path show the re-indexed file, not wait for an hour.
    """
    c = private.corpus
    uid = c.rs1
    source = c.files[uid]
    old = Path(source).read_bytes()
    new = old + bytes(range(256)) * 16
    through = private.mnt / "by-sop" / f"{uid}.dcm"
    with through.open("rb", buffering=0) as held:
        assert held.read() == old  # read through the page cache
        _replace(source, new)
        reindex(private.index, c, uid)
        time.sleep(1.0)  # the path dropped and asked again meanwhile
        assert os.stat(through).st_size == len(old)  # while the old handle is open
    wait_for(lambda: os.stat(through).st_size == len(new), 10, "the new size once it is closed")
    assert through.read_bytes() == new


def test_readers_get_one_version_whole_while_a_source_changes(private: Setup) -> None:
    """Reads racing replacements and re-indexes: one version, whole, or an error (C5, G2)."""
    c = private.corpus
    uid = c.dose
    source = c.files[uid]
    base = Path(source).read_bytes()
    versions = [base + bytes(512 * i) for i in range(8)]
    through = private.mnt / "by-sop" / f"{uid}.dcm"
    stop, seen, errors = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                data = through.read_bytes()
            except OSError as exc:
                errors.append(exc.errno)
                continue
            seen.append(data in versions)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in versions[1:]:
            _replace(source, version)
            reindex(private.index, c, uid)
            time.sleep(0.3)
    finally:
        stop.set()
        reader.join()
    assert seen and all(seen), "a read mixed two versions"
    assert set(errors) <= {errno.EIO}
    wait_for(lambda: through.read_bytes() == versions[-1], 10, "the last version")


def test_a_source_swapped_without_reindex_gives_eio(private: Setup) -> None:
    c = private.corpus
    uid = c.ct[1]
    _replace(c.files[uid], Path(c.files[uid]).read_bytes())  # same bytes, other inode
    with pytest.raises(OSError) as info:
        (private.mnt / "by-sop" / f"{uid}.dcm").read_bytes()
    assert info.value.errno == errno.EIO
    assert "changed since it was indexed" in private.mount.log()


def test_a_file_indexed_after_a_failed_lookup_appears(private: Setup) -> None:
    c = private.corpus
    path = private.mnt / "by-sop" / f"{c.ct[0]}.9.dcm"
    assert not path.exists()
    source = Path(c.files[c.ct[0]])
    late = source.with_name("late.dcm")
    shutil.copy(source, late)
    st = os.stat(late)
    writer = IndexWriter(private.index)
    writer.apply([FileResult(
        FileStat.from_stat(str(late), st),
        Instance("1.2.840.10008.5.1.4.1.1.2", f"{c.ct[0]}.9", c.study, c.ct_series,
                 modality="CT"),
    )])  # fmt: skip
    writer.close()
    assert path.read_bytes() == late.read_bytes()  # no negative entry was cached
    wait_for(lambda: path.name in os.listdir(path.parent), 5, "the new file in the listing")


def test_parallel_reads_while_the_index_changes(private: Setup) -> None:
    c = private.corpus
    source = Path(c.files[c.ct[1]])
    expected = source.read_bytes()
    stop = threading.Event()
    errors: list[str] = []

    def write() -> None:
        writer = IndexWriter(private.index)
        try:
            for n in range(40):
                copy = source.with_name(f"extra{n}.dcm")
                shutil.copy(source, copy)
                st = os.stat(copy)
                extra = FileResult(
                    FileStat.from_stat(str(copy), st),
                    Instance("1.2.840.10008.5.1.4.1.1.2", f"{c.ct[1]}.{n + 100}", c.study,
                             c.ct_series, modality="CT"),
                )  # fmt: skip
                again = [r for r in c.results if r.stat.path in (c.files[c.plan], str(source))]
                writer.apply([extra, *again])
        except Exception as exc:
            errors.append(f"writer: {exc!r}")
        finally:
            writer.close()
            stop.set()

    def read() -> None:
        try:
            while not stop.is_set():
                assert (private.mnt / "by-sop" / f"{c.ct[1]}.dcm").read_bytes() == expected
                os.listdir(private.mnt / "by-sop")
                os.listdir(private.mnt / "by-series" / c.ct_series)
                refs = os.listdir(private.mnt / "plans" / c.plan / "references")
                assert f"CT_{c.ct[1]}.dcm" in refs
                (private.mnt / "plans" / c.plan / "manifest.json").read_bytes()
        except Exception as exc:
            errors.append(repr(exc))
            stop.set()

    threads = [threading.Thread(target=read) for _ in range(16)]
    threads.append(threading.Thread(target=write))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, f"{errors[:5]}\n{private.mount.log()[-3000:]}"
    wait_for(lambda: len(os.listdir(private.mnt / "by-sop")) == len(c.files) + 40, 5, "listing")


# -- lifecycle ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_unmounts_cleanly(private: Setup, sig: signal.Signals) -> None:
    busy = (private.mnt / "by-sop" / f"{private.corpus.plan}.dcm").open("rb")
    private.mount.signal(sig)  # a reader holds a file open: still a clean stop
    assert private.mount.proc is not None
    assert private.mount.proc.wait(20) == 0
    with contextlib.suppress(OSError):  # the connection is gone: close may say ENOTCONN
        busy.close()
    assert private.mount.proc is not None
    assert private.mount.proc.wait(20) == 0
    assert not os.path.ismount(private.mnt)
    assert "unmounted" in private.mount.log()


def test_kill_9_then_restart_clears_the_stale_mount(private: Setup) -> None:
    proc = private.mount.proc
    assert proc is not None
    proc.kill()
    proc.wait(10)
    with pytest.raises(OSError) as info:
        os.listdir(private.mnt)
    assert info.value.errno == errno.ENOTCONN
    assert is_stale_mount(private.mnt)
    again = Mount(private.mnt, private.index)
    try:
        again.start()
        assert "stale FUSE mount" in again.log()
        assert private.corpus.plan in os.listdir(private.mnt / "plans")
        assert again.stop() == 0
    finally:
        again.close()


def test_run_mount_in_a_thread_with_stop_event() -> None:
    require_fuse()
    from dicomfs.fuse.mount import run_mount

    corpus, index, mountpoint = _corpus("dicomfs-fs-thread-")
    stop, ready = threading.Event(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_mount(
                mountpoint,
                index,
                on_ready=ready.set,
                stop_event=stop,
                extra_status=lambda: {"queue_length": 7},
            )
        )
    )
    thread.start()
    try:
        assert ready.wait(20), "on_ready was not called"
        assert os.path.ismount(mountpoint)
        assert corpus.plan in os.listdir(mountpoint / "plans")
        status = json.loads((mountpoint / ".dicomfs" / "status.json").read_bytes())
        assert status["queue_length"] == 7 and status["instances"] == len(corpus.files)
    finally:
        stop.set()
        thread.join(30)
    assert result == [0] and not os.path.ismount(mountpoint)
    shutil.rmtree(mountpoint.parent, ignore_errors=True)


def test_background_mount_returns_once_live() -> None:
    require_fuse()
    from dicomfs.fuse.mount import run_mount, unmount

    corpus, index, mountpoint = _corpus("dicomfs-fs-bg-")
    try:
        assert run_mount(mountpoint, index, foreground=False) == 0
        assert os.path.ismount(mountpoint)
        assert corpus.plan in os.listdir(mountpoint / "plans")
    finally:
        if os.path.ismount(mountpoint):
            unmount(mountpoint)
    with pytest.raises(MountError, match="cannot unmount"):
        unmount(mountpoint)
    shutil.rmtree(mountpoint.parent, ignore_errors=True)


def test_mount_refuses_bad_mountpoints(shared: Setup, tmp_path: Path) -> None:
    from dicomfs.fuse.mount import run_mount

    missing = tmp_path / "nope"
    with pytest.raises(MountError, match=f"does not exist: create it with mkdir -p {missing}"):
        run_mount(missing, shared.index)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(MountError, match="is not a directory"):
        run_mount(a_file, shared.index)
    with pytest.raises(MountError, match="is busy"):
        run_mount(shared.mnt, shared.index)
    with pytest.raises(MountError, match="unknown group"):
        run_mount(tmp_path, shared.index, group="no-such-group-dicomfs")


# -- listing speed --------------------------------------------------------------------------------


def test_ls_l_of_1000_entries_costs_no_request_per_entry(tmp_path: Path) -> None:
    """``ls -l`` of a 1,000-instance series is one listing, not a thousand lookups.

    READDIRPLUS hands the kernel every entry's attributes (``fs.py``), so
    neither a lookup nor a getattr per entry reaches the daemon. Counted in
    libfuse's own log of the requests it gets (``--fuse-debug``); what the
    listing costs in time is measured by ``bench/mount_bench.py``.
    """
    require_fuse()
    base = public_dir("dicomfs-fs-big-")
    src = base / "src"
    src.mkdir()
    results = []
    for i in range(1000):
        path = src / f"f{i:04d}.dcm"
        path.write_bytes(b"\0" * (128 + i))
        st = os.stat(path)
        results.append(FileResult(
            FileStat.from_stat(str(path), st),
            Instance("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.4.{i}", "1.2.3", "1.2.3.5",
                     modality="CT"),
        ))  # fmt: skip
    writer = IndexWriter(base / "index.sqlite")
    writer.apply(results)
    writer.close()
    (base / "mnt").mkdir()

    with mounted(base / "mnt", base / "index.sqlite", fuse_debug=True) as mount:
        folder = mount.mountpoint / "by-series" / "1.2.3.5"
        for _ in range(2):  # nothing cached yet, then again
            out = run("ls", "-l", folder)
            assert out.returncode == 0 and out.stdout.count(b"\n") == 1001
        requests = mount.log()
    shutil.rmtree(base, ignore_errors=True)
    per_entry = [
        line for line in requests.splitlines() if line.startswith("LOOKUP /by-series/1.2.3.5/")
    ]
    assert "opcode: READDIRPLUS" in requests
    assert per_entry == [], f"{len(per_entry)} entries looked up one by one"
    assert requests.count("opcode: GETATTR") <= 4


@pytest.mark.fuse
def test_symlinks_mode_links_to_the_sources() -> None:
    """--symlinks: files are links to their sources; readers follow them at native speed."""
    corpus, index, mountpoint = _corpus("dicomfs-fs-links-")
    try:
        with mounted(mountpoint, index, symlinks=True):
            plan_dir = mountpoint / "plans" / corpus.plan
            link = plan_dir / "plan.dcm"
            assert link.is_symlink()
            assert os.readlink(link) == corpus.files[corpus.plan]
            assert link.read_bytes() == Path(corpus.files[corpus.plan]).read_bytes()
            listing = run("ls", "-l", plan_dir / "references").stdout.decode()
            assert listing.count(" -> ") == len(corpus.package)
            dest = mountpoint.parent / "copy"
            # cp -L copies what the links point at: the package as plain files.
            assert run("cp", "-rL", plan_dir / "references", dest).returncode == 0
            for name in os.listdir(dest):
                uid = name.split("_", 1)[1][:-4]
                assert not (dest / name).is_symlink()
                assert (dest / name).read_bytes() == Path(corpus.files[uid]).read_bytes()
            # Generated files stay regular files.
            assert not (plan_dir / "manifest.json").is_symlink()
            assert json.loads((plan_dir / "manifest.json").read_bytes())["plan"] == corpus.plan
    finally:
        shutil.rmtree(mountpoint.parent, ignore_errors=True)


@pytest.mark.fuse
def test_readahead_window_is_raised(shared: Setup) -> None:
    """One request per CT slice instead of four (mount._raise_readahead)."""
    dev = os.stat(shared.mount.mountpoint).st_dev
    sysfs = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    wait_for(lambda: sysfs.read_text().strip() == "1024", 10, "read_ahead_kb to be 1024")
