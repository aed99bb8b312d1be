"""Shared test helpers: a small real DICOM corpus with its index, and real FUSE mounts.

The corpus is written with pydicom to real files and indexed by handing
``FileResult`` records (built here, with the edges each file holds) to
``IndexWriter.apply``, so view and mount tests do not depend on the parser.
Every expectation a test checks is derived from the ``Corpus`` returned.

Mounts run ``python -m dicomfs.fuse.mount`` in a subprocess, wait for the mount
with a deadline (never a fixed sleep), dump the daemon's log when it does not
come up, and unmount with ``fusermount3 -u``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomfs.dicom.records import (
    Edge,
    FileResult,
    FileStat,
    Instance,
    Level,
    Rejection,
    RejectKind,
    Role,
)
from dicomfs.index import IndexWriter

P = "1.2.826.0.1.3680043.10.543."
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
RS_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
PLAN_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"
DOSE_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
REG_CLASS = "1.2.840.10008.5.1.4.1.1.66.1"
HOSTILE_UID = "../../x"
LONG_UID = "1.2.826.0.1.3680043.10.543.99." + "9" * 50  # 80 characters
UNSAFE_SERIES = "1.2.03"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Corpus:
    """UIDs and files of the test corpus; ``files`` maps SOP UID -> source path."""

    root: Path
    study: str = P + "1"
    ct_series: str = P + "2"
    ct: tuple[str, ...] = (P + "2.1", P + "2.2", P + "2.3")
    secret: str = P + "2.4"  # mode 0600, in the CT series and the plan package
    frame: str = P + "3"
    rs1: str = P + "4.1"  # the structure set the plan names
    rs2: str = P + "4.2"  # same CT series, not in the package
    rs_series: str = P + "4"
    plan: str = P + "5.1"
    plan_series: str = P + "5"
    dose: str = P + "6.1"  # names the plan: reverse hop
    dose_series: str = P + "6"
    missing_dose: str = P + "6.9"  # named by the plan, never written
    mr_series: str = P + "7"
    mr: str = P + "7.1"
    mr_frame: str = P + "8"
    reg: str = P + "9.1"
    reg_series: str = P + "9"
    odd: str = P + "10.1"  # non-UTF-8 file name
    odd_series: str = P + "10"
    hostile_series: str = P + "11"
    unsafe_series_member: str = P + "12.1"
    files: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    results: list[FileResult] = field(default_factory=list)

    @property
    def package(self) -> set[str]:
        """What plans/<plan>/references/ must hold: the plan itself and what it needs."""
        return {self.plan, self.rs1, *self.ct, self.secret, self.dose}

    @property
    def safe_instances(self) -> set[str]:
        return {u for u in self.files if u not in (HOSTILE_UID, LONG_UID)}


def _dataset(sop_class: str, sop_uid: str, modality: str, series: str, study: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = "TEST01"
    ds.PatientName = "Test^Patient"
    return ds


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def _stat(path: Path) -> FileStat:
    return FileStat.from_stat(os.fsdecode(path), os.lstat(path))


def build_corpus(root: Path) -> Corpus:
    """Write the corpus under ``root`` and return it with its FileResult records."""
    # Hostile values must reach the files unchanged: pydicom's checks are off here.
    with config.disable_value_validation():
        return _build(root)


def _build(root: Path) -> Corpus:
    c = Corpus(root=root)
    root.mkdir(parents=True, exist_ok=True)

    def put(
        relative: str | bytes,
        ds: Dataset,
        edges: list[Edge],
        *,
        frame: str = "",
        label: str = "",
        mode: int = 0o644,
        pixels: int = 0,
    ) -> None:
        path = root / os.fsdecode(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        if frame:
            ds.FrameOfReferenceUID = frame
        if pixels:
            ds.Rows, ds.Columns = 128, pixels // 256
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
            ds.PhotometricInterpretation = "MONOCHROME2"
            seed = hashlib.sha256(ds.SOPInstanceUID.encode()).digest()
            ds.PixelData = (seed * (pixels // len(seed) + 1))[:pixels]
        ds.save_as(path, enforce_file_format=True)
        os.chmod(path, mode)
        uid = str(ds.SOPInstanceUID)
        inst = Instance(
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=uid,
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            frame_of_reference_uid=frame,
            patient_id="TEST01",
            modality=str(ds.Modality),
            label=label,
            flags=[] if Instance("", uid).uid_is_safe else ["unsafe_sop_uid"],
            edges=edges,
        )
        c.files[uid] = os.fsdecode(path)
        c.results.append(FileResult(_stat(path), inst))

    images = [*c.ct, c.secret]
    for i, uid in enumerate(images):
        mode = 0o600 if uid == c.secret else 0o644
        put(f"ct/slice{i}.dcm", _dataset(CT_CLASS, uid, "CT", c.ct_series, c.study), [],
            frame=c.frame, mode=mode, pixels=96 * 1024 if i == 0 else 32 * 1024)  # fmt: skip

    for uid, name in ((c.rs1, "rs1"), (c.rs2, "rs2")):
        ds = _dataset(RS_CLASS, uid, "RTSTRUCT", c.rs_series, c.study)
        ds.StructureSetLabel = name
        ds.ContourImageSequence = [_ref(CT_CLASS, u) for u in images]
        edges = [
            Edge(u, Level.INSTANCE, Role.IMAGE, "RTReferencedSeriesSequence/ContourImageSequence")
            for u in images
        ]
        edges.append(
            Edge(c.ct_series, Level.SERIES, Role.SERIES, "RTReferencedSeriesSequence",
                 qualifiers=(("instances_listed", "yes"),))
        )  # fmt: skip
        edges.append(Edge(c.frame, Level.FRAME_OF_REFERENCE, Role.FRAME_OF_REFERENCE, "FoR"))
        put(f"rt/{name}.dcm", ds, edges, frame=c.frame, label=name)

    ds = _dataset(PLAN_CLASS, c.plan, "RTPLAN", c.plan_series, c.study)
    ds.RTPlanLabel = "Plan\tone"
    ds.ReferencedStructureSetSequence = [_ref(RS_CLASS, c.rs1)]
    ds.ReferencedDoseSequence = [_ref(DOSE_CLASS, c.missing_dose)]
    put("rt/plan.dcm", ds, [
        Edge(c.rs1, Level.INSTANCE, Role.STRUCTURE_SET, "ReferencedStructureSetSequence"),
        Edge(c.missing_dose, Level.INSTANCE, Role.DOSE, "ReferencedDoseSequence",
             class_hint=DOSE_CLASS, study_uid=c.study, series_uid=c.dose_series),
    ], frame=c.frame, label="Plan\tone")  # fmt: skip

    ds = _dataset(DOSE_CLASS, c.dose, "RTDOSE", c.dose_series, c.study)
    ds.ReferencedRTPlanSequence = [_ref(PLAN_CLASS, c.plan)]
    put("rt/dose.dcm", ds, [Edge(c.plan, Level.INSTANCE, Role.PLAN, "ReferencedRTPlanSequence")],
        frame=c.frame)  # fmt: skip

    put("mr/mr1.dcm", _dataset(MR_CLASS, c.mr, "m/r", c.mr_series, c.study), [], frame=c.mr_frame,
        pixels=16 * 1024)  # fmt: skip
    put("rt/reg.dcm", _dataset(REG_CLASS, c.reg, "REG", c.reg_series, c.study), [
        Edge(c.mr_frame, Level.FRAME_OF_REFERENCE, Role.FRAME_OF_REFERENCE,
             "RegistrationSequence/FrameOfReferenceUID"),
        Edge(c.mr, Level.INSTANCE, Role.IMAGE, "RegistrationSequence/ReferencedImageSequence"),
    ], frame=c.frame)  # fmt: skip

    put(b"odd/caf\xe9.dcm", _dataset(CT_CLASS, c.odd, "CT", c.odd_series, c.study), [],
        pixels=8 * 1024)  # fmt: skip
    for name, uid in (("passwd", HOSTILE_UID), ("long", LONG_UID)):
        ds = _dataset(CT_CLASS, uid, "CT", c.hostile_series, c.study)
        put(f"hostile/{name}.dcm", ds, [])
    ds = _dataset(CT_CLASS, c.unsafe_series_member, "CT", UNSAFE_SERIES, c.study)
    put("hostile/unsafe-series.dcm", ds, [])

    for name, text in (("notes.txt", "not dicom"), ("bad\tname\n.dcm", ""), (b"caf\xe9.txt", "")):
        path = root / os.fsdecode(name)
        path.write_text(text)
        reason = "no DICM prefix\tand no SOP UID"
        c.rejected[os.fsdecode(path)] = reason
        c.results.append(FileResult(_stat(path), Rejection(RejectKind.NOT_DICOM, reason)))
    return c


def write_index(index: Path | str, corpus: Corpus) -> Path | str:
    writer = IndexWriter(index)
    try:
        writer.apply(
            corpus.results, digest=lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()
        )
    finally:
        writer.close()
    return index


def reindex(index: Path | str, corpus: Corpus, uid: str) -> None:
    """Record the file of ``uid`` again with its current stat (content unchanged)."""
    original = next(r for r in corpus.results if r.stat.path == corpus.files[uid])
    writer = IndexWriter(index)
    try:
        writer.apply([FileResult(_stat(Path(original.stat.path)), original.result)])
    finally:
        writer.close()


# -- mounts -----------------------------------------------------------------------


def require_fuse() -> None:
    """Skip (locally) or fail (in CI) when this machine cannot mount FUSE."""
    problem = None
    if not Path("/dev/fuse").exists():
        problem = "/dev/fuse is missing"
    elif shutil.which("fusermount3") is None:
        problem = "fusermount3 is missing (Debian package fuse3)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"FUSE tests must run in CI: {problem}")
        pytest.skip(problem)


def public_dir(prefix: str) -> Path:
    """A temporary folder other users can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Mount:
    """A real ``python -m dicomfs.fuse.mount`` daemon on ``mountpoint``."""

    def __init__(
        self,
        mountpoint: Path,
        index: Path | str,
        *,
        allow_other: bool = False,
        group: str | None = None,
        symlinks: bool = False,
        names: str | None = None,
        fuse_debug: bool = False,
    ) -> None:
        self.mountpoint = mountpoint
        self.index = index
        self.args = [
            sys.executable,
            "-m",
            "dicomfs.fuse.mount",
            str(mountpoint),
            "--index",
            str(index),
        ]
        self.args += ["--allow-other"] if allow_other else []
        self.args += ["--group", group] if group else []
        self.args += ["--symlinks"] if symlinks else []
        self.args += ["--names", names] if names else []
        self.args += ["--fuse-debug"] if fuse_debug else []
        fd, log = tempfile.mkstemp(prefix="dicomfs-mount-", suffix=".log", dir=mountpoint.parent)
        os.close(fd)
        self.log_path = Path(log)
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 20.0) -> Mount:
        require_fuse()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=env, cwd="/")
        deadline = time.monotonic() + timeout
        while not (os.path.ismount(self.mountpoint) and _live(self.mountpoint)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                status = self.proc.poll()
                self.kill()
                pytest.fail(f"mount did not come up (exit {status}); daemon log:\n{self.log()}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 20.0) -> int:
        """Unmount with fusermount3 -u and wait for the daemon to exit."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while os.path.ismount(self.mountpoint) and self.proc.poll() is None:
            done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        try:
            return self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon did not exit; log:\n{self.log()}") from None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if os.path.ismount(self.mountpoint) or _stale(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                self.stop()
        self.kill()


def _live(path: Path) -> bool:
    """The mount answers (a stale one left by a killed daemon says ENOTCONN)."""
    try:
        os.listdir(path)
    except OSError:
        return False
    return True


def _stale(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return True
    return False


@contextlib.contextmanager
def mounted(mountpoint: Path, index: Path | str, **kwargs: object) -> Iterator[Mount]:
    mount = Mount(mountpoint, index, **kwargs)  # type: ignore[arg-type]
    try:
        yield mount.start()
    finally:
        mount.close()


# Accounts the tests made in this run, removed again at the end of the session
# (conftest.py, pytest_sessionfinish): a test leaves no system users behind.
_MADE_USERS: list[str] = []
_MADE_GROUPS: list[str] = []
TEST_ACCOUNT_PREFIX = "dicomfs-"


def _exists(database: str, name: str) -> bool:
    return subprocess.run(["getent", database, name], capture_output=True).returncode == 0


def ensure_group(name: str) -> None:
    assert name.startswith(TEST_ACCOUNT_PREFIX), name
    if not _exists("group", name):
        subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
        _MADE_GROUPS.append(name)


def ensure_user(name: str, groups: tuple[str, ...] = ()) -> None:
    """A system user for permission tests (we run as root), in exactly ``groups``."""
    assert name.startswith(TEST_ACCOUNT_PREFIX), name
    if not _exists("passwd", name):
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        _MADE_USERS.append(name)
    subprocess.run(["usermod", "-G", ",".join(groups), name], check=True, capture_output=True)


def remove_test_accounts(only: set[str] | None = None) -> list[str]:
    """Delete the users, their personal groups and the groups this session created."""
    removed = []
    users = [u for u in _MADE_USERS if only is None or u in only]
    groups = [g for g in _MADE_GROUPS if only is None or g in only]
    for user in reversed(users):
        if subprocess.run(["userdel", user], capture_output=True).returncode == 0:
            removed.append(user)
        # useradd made a group of the same name (USERGROUPS_ENAB); userdel drops
        # it only when empty, so make sure.
        if _exists("group", user):
            subprocess.run(["groupdel", user], capture_output=True)
    for group in reversed(groups):
        if subprocess.run(["groupdel", group], capture_output=True).returncode == 0:
            removed.append(group)
    _MADE_USERS[:] = [u for u in _MADE_USERS if u not in users]
    _MADE_GROUPS[:] = [g for g in _MADE_GROUPS if g not in groups]
    return removed


@contextlib.contextmanager
def system_mount(path: Path, what: str, *args: str) -> Iterator[Path]:
    """``mount ARGS PATH`` (made first), unmounted lazily at the end.

    We run as root; in CI a mount that cannot be made fails the test.
    """
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *args, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount {what}: {done.stderr.strip()}")
        pytest.skip(f"cannot mount {what}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        # Not os.path.ismount: a bind mount within one filesystem does not look like one.
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, inodes: int | None = None) -> Iterator[Path]:
    """A real tmpfs of ``size`` (and ``inodes``) mounted at ``path``: figures we know."""
    options = f"size={size},mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
    with system_mount(path, "a tmpfs", "-t", "tmpfs", "-o", options, "tmpfs") as mounted:
        yield mounted
