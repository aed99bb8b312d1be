"""The mount shared over SMB, for real: a private smbd with the shipped share, smbclient reading.

Windows planning workstations read plans through a Samba share of the mount
(README, "Windows planning workstations"). Here a real ``smbd`` (started by
the test, loopback only, its state in a temporary folder; ``smb_helpers``)
shares a real ``allow_other`` mount of the demo data with the options of
``systemd/smb-dicomfs.conf.example``, and ``smbclient`` speaks SMB3 to it
as Samba users mapped to Unix users made for the test. The demo set is
copied into a folder every user may traverse (pytest's own folders are
0700, which would refuse every source to the SMB user), with one file made
0600 and one folder 0700 before indexing.

In CI a test that cannot start smbd fails; elsewhere it is skipped with the
reason. The kernel CIFS client part is skipped, with the reason, where the
kernel has no cifs.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuse_helpers import Mount, ensure_group, ensure_user, public_dir, require_fuse, wait_for
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from serve_helpers import serving
from smb_helpers import (
    PrivateSmbd,
    SmbError,
    listing_names,
    samba_missing,
    space_of,
)

from dicomfs.index import IndexReader
from dicomfs.view.nodes import FileNode
from dicomfs.view.tree import View

pytestmark = pytest.mark.fuse

GROUP = "dicomfs-smb-readers"
READER = "dicomfs-smb-in"  # in GROUP: a Windows user of the planning workstations
OUTSIDER = "dicomfs-smb-out"  # a Samba user outside GROUP
BIG_UID = "2.25.4242424242"
BIG_SIZE = 64 * 1024 * 1024
DENIED = "NT_STATUS_ACCESS_DENIED"


def require_samba() -> None:
    problem = samba_missing()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SMB tests must run in CI: {problem}")
        pytest.skip(problem)


def write_big_ct(path: Path, fill: int) -> None:
    """A 64 MiB CT image: big enough that a reader is still reading when its source is replaced."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = BIG_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, BIG_UID
    ds.Modality, ds.PatientID = "CT", "BIG"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = BIG_UID + ".1", BIG_UID + ".2"
    ds.Rows, ds.Columns = 4096, 8192
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes([fill]) * (4096 * 8192 * 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@dataclass
class Site:
    """The mount, its sources and index, the smbd sharing it, and who may log in."""

    base: Path
    src: Path
    index: Path
    mount: Mount
    smbd: PrivateSmbd
    passwords: dict[str, str]
    plan: str  # a plan whose package the reader may read entirely
    plan_source: Path  # its file
    closed_file: str  # SOP UID of a 0600 source
    in_closed_folder: str  # SOP UID of a 0644 source in a 0700 folder
    reindex: Callable[[], None]

    def smb(
        self, commands: str, user: str = READER, share: str = "dicomfs", *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return self.smbd.client(share, user, self.passwords[user], commands, *extra)

    def view(self) -> View:
        return View(
            lambda: IndexReader(self.index),
            dir_uid=0,
            dir_gid=0,
            mount_time_ns=0,
            cache_ttl=0,
            names="id",  # as the mount: patients/ by PatientID, filtered per reader
        )


@pytest.fixture(scope="module")
def site(demo_set, build_index) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    require_fuse()
    require_samba()
    ensure_group(GROUP)
    ensure_user(READER, (GROUP,))
    ensure_user(OUTSIDER)
    base = public_dir("dicomfs-smb-")
    src = base / "src"
    shutil.copytree(demo_set.root, src, symlinks=True)
    src.chmod(0o755)  # the copied root keeps pytest's 0700
    first, second = demo_set.patients[0], demo_set.patients[1]
    closed_file = second.plan_dose_uid
    in_closed_folder = second.registration_uid
    (src / second.files[closed_file]).chmod(0o600)
    closed_folder = (src / second.files[in_closed_folder]).parent
    closed_folder.chmod(0o700)
    write_big_ct(src / "big" / "big.dcm", fill=1)
    index = base / "index.sqlite"

    def reindex() -> None:
        build_index(index, [src], 1)

    reindex()
    (base / "mnt").mkdir()
    (base / "live-mnt").mkdir()
    mount = Mount(base / "mnt", index, allow_other=True, group=GROUP)
    mount.args += ["--source", str(src), "--names", "id"]
    passwords = {READER: secrets.token_hex(12), OUTSIDER: secrets.token_hex(12)}
    smbd = PrivateSmbd(base / "samba", {"dicomfs": base / "mnt", "live": base / "live-mnt"}, GROUP)
    try:
        mount.start()
        try:
            smbd.start()
        except SmbError as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        for user, password in passwords.items():
            smbd.add_user(user, password)
        here = Site(base, src, index, mount, smbd, passwords, first.plan_uid,
                    src / first.files[first.plan_uid], closed_file, in_closed_folder,
                    reindex)  # fmt: skip
        view = here.view()
        package = [
            node.real_path
            for _, node in view.listdir(f"plans/{first.plan_uid}/references")
            if isinstance(node, FileNode)
        ]
        view.close()
        # The package read in full below holds nothing closed to the reader.
        assert package and all(
            p is not None and not p.startswith(f"{closed_folder}/") for p in package
        )
        assert str(src / second.files[closed_file]) not in package
        yield here
    finally:
        smbd.stop()
        mount.close()
        closed_folder.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def names_of(view: View, path: str) -> set[str]:
    return {name for name, _ in view.listdir(path)}


def source_state(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every source file: (sha256, mtime, mode); what no SMB request may change."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(path)] = (digest, st.st_mtime_ns, st.st_mode)
    return state


# -- the shipped configuration --------------------------------------------------------------------


def test_shipped_share_config_as_samba_reads_it(tmp_path: Path) -> None:
    """testparm's view of the example: what protects patient data really is in force."""
    require_samba()
    conf = PrivateSmbd(tmp_path, {"dicomfs": tmp_path}, GROUP).conf

    def value(section: str, name: str) -> str:
        done = subprocess.run(
            ["testparm", "-s", "--section-name", section, "--parameter-name", name, str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    expected = {
        "read only": "Yes", "write list": "", "guest ok": "No", "valid users": f"@{GROUP}",
        "server smb encrypt": "required", "follow symlinks": "No",
        "store dos attributes": "No", "ea support": "No", "vfs objects": "",
        "oplocks": "No", "level2 oplocks": "No", "posix locking": "No",
    }  # fmt: skip
    assert {name: value("dicomfs", name) for name in expected} == expected
    assert value("global", "server min protocol") == "SMB3"
    assert value("global", "map to guest") == "Never"
    assert value("global", "smb1 unix extensions") == "No"


# -- reading --------------------------------------------------------------------------------------


def test_list_the_top_a_plan_and_a_series(site: Site) -> None:
    view = site.view()
    top = site.smb("ls")
    assert top.returncode == 0, top.stdout
    assert listing_names(top.stdout) == names_of(view, "")
    plan = site.smb(f"cd plans\\{site.plan}; ls")
    assert listing_names(plan.stdout) == names_of(view, f"plans/{site.plan}")
    assert {"plan.dcm", "references", "missing.txt", "manifest.json"} <= names_of(
        view, f"plans/{site.plan}"
    )
    # A series with files of its own: one whose instances all have unsafe UIDs
    # (the demo's hostile files) lists nothing, and a set has no fixed order.
    series = next(
        s for s in sorted(names_of(view, "by-series")) if names_of(view, f"by-series/{s}")
    )
    listed = site.smb(f"cd by-series\\{series}; ls")
    assert listing_names(listed.stdout) == names_of(view, f"by-series/{series}") != set()
    view.close()


def test_a_plan_found_by_patient_and_label_is_fetched_from_windows_names(
    site: Site, tmp_path: Path
) -> None:
    """patients/<id>/plans/<label date approval>/references over SMB: spaces, the same bytes."""
    view = site.view()
    patient = next(n for n in names_of(view, "patients") if n.startswith("DEMO-0-001"))
    plan = next(
        n for n in names_of(view, f"patients/{patient}/plans") if n.startswith("Prostate 2")
    )
    folder = f"patients/{patient}/plans/{plan}"
    listed = site.smb(f'cd "{folder.replace("/", chr(92))}"; ls')
    assert listing_names(listed.stdout) == names_of(view, folder), listed.stdout
    dest = tmp_path / "fetched"
    dest.mkdir()
    done = site.smb(
        f'lcd {dest}; cd "{folder.replace("/", chr(92))}"; recurse ON; prompt OFF; mget references'
    )
    assert done.returncode == 0 and "NT_STATUS" not in done.stdout, done.stdout
    expected = view.listdir(f"{folder}/references")
    assert sorted(p.name for p in (dest / "references").iterdir()) == [n for n, _ in expected]
    for name, node in expected:
        assert isinstance(node, FileNode) and node.real_path is not None
        assert filecmp.cmp(dest / "references" / name, node.real_path, shallow=False), name
    view.close()


def test_a_plans_references_fetched_recursively_equal_their_sources(
    site: Site, tmp_path: Path
) -> None:
    dest = tmp_path / "fetched"
    dest.mkdir()
    done = site.smb(f"lcd {dest}; cd plans\\{site.plan}; recurse ON; prompt OFF; mget references")
    assert done.returncode == 0 and "NT_STATUS" not in done.stdout, done.stdout
    view = site.view()
    expected = view.listdir(f"plans/{site.plan}/references")
    got = sorted(p.name for p in (dest / "references").iterdir())
    assert got == [name for name, _ in expected] and len(got) >= 5
    for name, node in expected:
        assert isinstance(node, FileNode) and node.real_path is not None
        assert filecmp.cmp(dest / "references" / name, node.real_path, shallow=False), name
    view.close()


def test_the_share_reports_the_sources_space(site: Site) -> None:
    done = site.smb("du")
    total, available = space_of(done.stdout)
    figures = os.statvfs(site.src)
    assert total > 0 and available > 0
    assert abs(total - figures.f_blocks * figures.f_frsize) < 1024 * 1024
    assert abs(available - figures.f_bavail * figures.f_frsize) < 0.05 * total
    assert "dfree is broken" not in site.smbd.log()


def test_encryption_is_required_on_the_wire(site: Site) -> None:
    """An SMB3 session to the share is encrypted (smbstatus); SMB2 clients are refused."""
    args = site.smbd.client_args("dicomfs", READER, site.passwords[READER])
    held = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert held.stdin is not None
        held.stdin.write(b"ls\n")
        held.stdin.flush()
        lines: list[str] = []

        def connected() -> bool:
            lines[:] = [
                line for line in site.smbd.status().splitlines() if line.startswith("dicomfs ")
            ]
            return bool(lines)

        wait_for(connected, 30, "the share connection in smbstatus")
        assert re.search(r"\bAES-(128|256)-(GCM|CCM)\b", lines[0]), lines
    finally:
        held.kill()
        held.wait(10)
    old = [
        "smbclient", "-p", str(site.smbd.port), "//127.0.0.1/dicomfs",
        "-U", f"{READER}%{site.passwords[READER]}", "-m", "SMB2_10", "-c", "ls",
    ]  # fmt: skip
    refused = subprocess.run(old, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "NT_STATUS_NOT_SUPPORTED" in refused.stdout + refused.stderr


# -- access control -------------------------------------------------------------------------------


def test_closed_sources_are_access_denied(site: Site, tmp_path: Path) -> None:
    for uid in (site.closed_file, site.in_closed_folder):
        target = tmp_path / f"{uid}.dcm"
        done = site.smb(f"get by-sop\\{uid}.dcm {target}")
        assert DENIED in done.stdout, done.stdout
        assert not target.exists() or target.stat().st_size == 0
    # Listing is allowed (the folder is the group's); opening is what the source decides.
    listed = site.smb(f"ls by-sop\\{site.closed_file}.dcm")
    assert f"{site.closed_file}.dcm" in listed.stdout


def test_a_user_outside_the_group_gets_nothing(site: Site) -> None:
    done = site.smb("ls", OUTSIDER)
    assert done.returncode != 0 and DENIED in done.stdout, done.stdout


def test_writes_are_refused_and_change_nothing(site: Site, tmp_path: Path) -> None:
    before = source_state(site.src)
    top_before = site.smb("ls").stdout
    local = tmp_path / "local.dcm"
    local.write_bytes(b"not to be written")
    view = site.view()
    some = f"by-sop\\{sorted(names_of(view, 'by-sop'))[0]}"
    view.close()
    attempts = [
        f"put {local} new.dcm",
        f"put {local} by-sop\\new.dcm",
        f"put {local} {some}",
        f"del {some}",
        f"rename {some} by-sop\\moved.dcm",
        "rename plans plans2",
        "mkdir newdir",
        f"mkdir plans\\{site.plan}\\newdir",
        "rmdir plans",
        f"deltree plans\\{site.plan}",
        f"setmode {some} +r",
        f"setmode {some} -r",
        f"setmode {some} +h",
        f"setmode {some} +a",
    ]
    for commands in attempts:
        done = site.smb(commands)
        assert DENIED in done.stdout, f"{commands}: {done.stdout}"
    assert source_state(site.src) == before
    assert site.smb("ls").stdout.splitlines()[:-2] == top_before.splitlines()[:-2]
    assert not (site.mount.mountpoint / "new.dcm").exists()


# -- sources that change --------------------------------------------------------------------------


def _bytes_received(port: int, pid: int) -> int:
    """What the client's SMB connection has received so far (``ss -ti``)."""
    out = subprocess.run(
        ["ss", "-tinpH", f"dport = :{port}"], capture_output=True, text=True, timeout=30
    ).stdout
    received = 0
    for block in re.split(r"\n(?=ESTAB|\S)", out):
        if f"pid={pid}," in block:
            received += sum(int(n) for n in re.findall(r"bytes_received:(\d+)", block))
    return received


def test_a_source_replaced_while_open_gives_the_old_bytes_or_an_error(site: Site) -> None:
    source = site.src / "big" / "big.dcm"
    old = source.read_bytes()
    assert len(old) > BIG_SIZE
    args = site.smbd.client_args("dicomfs", READER, site.passwords[READER])
    reader = subprocess.Popen(
        [*args, "-c", f"get by-sop\\{BIG_UID}.dcm -"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    head = reader.stdout.read(1 << 20)  # the file is open on the server now
    time.sleep(0.5)  # the client fills its window and the pipe, then waits for us
    received = _bytes_received(site.smbd.port, reader.pid)
    new_source = source.with_name("big.dcm.new")
    write_big_ct(new_source, fill=2)
    os.replace(new_source, source)  # a sender's rename: the old inode lives on while open
    rest = reader.stdout.read()
    status = reader.wait(60)
    got = head + rest
    # Most of the file was requested only after the replace, so the test means something.
    print(f"received {received} of {len(old)} before the replace")
    assert 0 < received < len(old) // 2, received
    if status == 0:
        assert got == old
    else:
        assert old.startswith(got), reader.stderr.read()
    # A new open of the changed, not yet re-indexed source: an error, never bytes.
    fresh = site.smb(f"get by-sop\\{BIG_UID}.dcm {site.base / 'after.dcm'}")
    assert "NT_STATUS_IO_DEVICE_ERROR" in fresh.stdout, fresh.stdout
    assert not (site.base / "after.dcm").exists() or (site.base / "after.dcm").stat().st_size == 0
    # Re-indexed: the new file, whole.
    site.reindex()
    again = site.smb(f"get by-sop\\{BIG_UID}.dcm {site.base / 'again.dcm'}")
    assert again.returncode == 0, again.stdout
    assert (site.base / "again.dcm").read_bytes() == source.read_bytes() != old


def test_a_file_copied_into_a_watched_source_appears_over_smb(site: Site, tmp_path: Path) -> None:
    """``dicomfs serve`` behind the share: a new file in a source shows up for SMB clients."""
    live_src = site.base / "live-src"
    live_src.mkdir(mode=0o755)
    live_mnt = site.base / "live-mnt"
    plan_file = site.plan_source
    with serving(
        [live_src], live_mnt, site.base / "live-index.sqlite",
        "--allow-other", "--group", GROUP, log_dir=site.base,
    ) as serve:  # fmt: skip
        assert f"{site.plan}.dcm" not in site.smb("ls by-sop\\*", share="live").stdout
        shutil.copy(plan_file, live_src / "arrived.dcm")
        target = tmp_path / "arrived.dcm"

        def arrived() -> bool:
            done = site.smb(f"get by-sop\\{site.plan}.dcm {target}", share="live")
            return done.returncode == 0 and target.exists()

        try:
            wait_for(arrived, 30, "the copied plan over SMB")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; serve log:\n{serve.log()[-3000:]}") from None
        assert target.read_bytes() == plan_file.read_bytes()
        listed = site.smb(f"cd plans\\{site.plan}; ls", share="live")
        assert "plan.dcm" in listing_names(listed.stdout)
        total, _ = space_of(site.smb("du", share="live").stdout)
        figures = os.statvfs(live_src)
        assert abs(total - figures.f_blocks * figures.f_frsize) < 1024 * 1024


# -- the kernel's SMB client ----------------------------------------------------------------------


def _kernel_has_cifs() -> str | None:
    """None when ``mount -t cifs`` can work here, else why not."""

    def listed() -> bool:
        return "cifs" in Path("/proc/filesystems").read_text().split()

    if listed():
        return None
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "cifs"], capture_output=True, timeout=60)
        if listed():
            return None
    if shutil.which("mount.cifs") is None:
        return "mount.cifs is missing (Debian package cifs-utils)"
    return f"the kernel ({os.uname().release}) has no cifs filesystem and no module to load"


def test_the_kernel_cifs_client_reads_the_share(site: Site) -> None:
    reason = _kernel_has_cifs()
    if reason:
        pytest.skip(f"kernel CIFS part only: {reason}")
    mnt = public_dir("dicomfs-smb-cifs-")
    options = (
        f"port={site.smbd.port},username={READER},password={site.passwords[READER]},"
        "vers=3.0,seal,ro,cache=none"
    )
    done = subprocess.run(
        ["mount", "-t", "cifs", "//127.0.0.1/dicomfs", str(mnt), "-o", options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    try:
        view = site.view()
        for name, node in view.listdir(f"plans/{site.plan}/references"):
            assert isinstance(node, FileNode) and node.real_path is not None
            through = mnt / "plans" / site.plan / "references" / name
            assert through.read_bytes() == Path(node.real_path).read_bytes(), name
        view.close()
        with pytest.raises(OSError):
            (mnt / "new.dcm").write_bytes(b"x")
        assert os.statvfs(mnt).f_blocks > 0
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
        mnt.rmdir()
