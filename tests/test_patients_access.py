"""Who sees which patient under ``patients/`` when others may read (issue 10, item 3).

A folder of ``patients/`` is named after patient data, so on a shared mount
(``allow_other``) and over WebDAV it is shown only to a reader who may read
the file it stands for. Real users, created here, read through a real mount
run as root with ``names = "id"`` and through a real ``dicomfs serve`` share
with a users file; every command is theirs (``runuser``).

The sources: patient PATA in a 0700 folder of reader A, patient PATB in
0600 files of reader B, patient PATAB in 0640 files of a group of A and B,
and patient PATX in 0644 files whose ACL shuts A out. Reader C is in the
mount's group and may read PATX only.

The kernel's dentry cache is shared by all readers: a folder one reader
looked up stays reachable by name for others for up to ``ENTRY_TIMEOUT``
(listings are filtered regardless). So lookups of another reader's patient
are checked before anyone has looked it up, and again once the kernel has
forgotten it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import index_folders
from fuse_helpers import (
    REPO,
    Mount,
    ensure_group,
    ensure_user,
    public_dir,
    require_fuse,
    wait_for,
)
from webdav_helpers import Reply, child_names, curl, dicomfs_as, free_port, write_ct_copies

from dicomfs.fuse.fs import ENTRY_TIMEOUT
from dicomfs.share.webdav_users import hash_password

GROUP = "dicomfs-pat-readers"  # who may use the mount at all
GROUP_AB = "dicomfs-pat-ab"
READER_A = "dicomfs-pat-a"  # in GROUP and GROUP_AB
READER_B = "dicomfs-pat-b"  # in GROUP and GROUP_AB
READER_C = "dicomfs-pat-c"  # in GROUP only
PATIENTS = ("PATA", "PATAB", "PATB", "PATX")
READS = {
    READER_A: ("PATA", "PATAB"),
    READER_B: ("PATAB", "PATB", "PATX"),
    READER_C: ("PATX",),
}
NO_SUCH = b"No such file or directory"


@dataclass
class Sources:
    base: Path
    src: Path
    index: Path
    files: dict[str, list[Path]]  # patient ID -> its source files


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def run(user: str, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["runuser", "-u", user, "--", *[str(a) for a in args]], capture_output=True, timeout=60
    )


@pytest.fixture(scope="module")
def sources() -> Iterator[Sources]:
    ensure_group(GROUP)
    ensure_group(GROUP_AB)
    for user in READS:
        ensure_user(user, (GROUP, GROUP_AB) if user != READER_C else (GROUP,))
    base = public_dir("dicomfs-patients-access-")
    src = base / "src"
    files = {
        pid: list(write_ct_copies(src / folder, 2, series=series, patient_id=pid).values())
        for pid, folder, series in (
            ("PATA", "a", 31), ("PATB", "b", 32), ("PATAB", "ab", 33), ("PATX", "x", 34),
        )
    }  # fmt: skip
    os.chown(src / "a", uid_of(READER_A), -1)
    os.chmod(src / "a", 0o700)  # the folder keeps B and C out; the files are 0644
    for path in files["PATB"]:
        os.chown(path, uid_of(READER_B), -1)
        os.chmod(path, 0o600)
    for path in files["PATAB"]:
        os.chown(path, -1, grp.getgrnam(GROUP_AB).gr_gid)
        os.chmod(path, 0o640)
    for path in files["PATX"]:  # 0644, but the ACL takes everything from A
        subprocess.run(["setfacl", "-m", f"u:{READER_A}:---", str(path)], check=True)
    index = base / "index.sqlite"
    index_folders(index, [src], 1)  # after the modes and ACLs: they change ctime
    # The premise, asked of the kernel directly: each reader reads exactly these.
    for user, mine in READS.items():
        for pid, paths in files.items():
            assert (run(user, "cat", paths[0]).returncode == 0) == (pid in mine), (user, pid)
    yield Sources(base, src, index, files)
    for mnt in base.glob("mnt*"):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


# -- the mount ------------------------------------------------------------------------------


def shared_mount(sources: Sources, name: str) -> Mount:
    """``allow_other``, the readers' group, and names = "id": the administrator's choice."""
    require_fuse()
    mnt = sources.base / name
    mnt.mkdir(exist_ok=True)
    mount = Mount(mnt, sources.index, allow_other=True, group=GROUP)
    mount.args += ["--names", "id"]
    return mount.start()


def listed(user: str, folder: Path) -> list[str]:
    done = run(user, "ls", "-1", folder)
    assert done.returncode == 0, (user, folder, done.stderr)
    return done.stdout.decode().splitlines()


def not_found(user: str, *command: str | Path) -> bool:
    done = run(user, *command)
    return done.returncode != 0 and NO_SUCH in done.stderr


def walk(user: str, folder: Path) -> list[str]:
    """Every path under ``folder`` as ``user`` finds it, relative to ``folder``."""
    done = run(user, "find", folder, "-mindepth", "1")
    assert done.returncode == 0, (user, folder, done.stderr)
    return sorted(os.path.relpath(line, folder) for line in done.stdout.decode().splitlines())


@pytest.mark.fuse
def test_each_reader_finds_and_lists_only_the_patients_whose_files_they_may_read(
    sources: Sources,
) -> None:
    m = shared_mount(sources, "mnt-patients")
    try:
        patients = m.mountpoint / "patients"
        # Lookups first: on a fresh mount nobody has looked any patient up yet,
        # so every answer comes from the daemon, asked as the reader.
        for user, mine in READS.items():
            for pid in set(PATIENTS) - set(mine):
                assert not_found(user, "stat", patients / pid), (user, pid)
        for user, mine in READS.items():
            assert listed(user, patients) == list(mine), user
        # Inside their own patients, readers walk the whole tree the daemon's
        # user sees, and read the files.
        for user, mine in READS.items():
            for pid in mine:
                seen = walk(user, patients / pid)
                assert seen == walk("root", patients / pid), (user, pid)
                assert "studies" in seen and any(p.endswith(".dcm") for p in seen), seen
                first = next(p for p in seen if p.endswith(".dcm"))
                done = run(user, "cat", patients / pid / first)
                assert done.returncode == 0, (user, pid, done.stderr)
                assert done.stdout in {p.read_bytes() for p in sources.files[pid]}
        # The daemon's own user (root) sees every patient.
        assert sorted(os.listdir(patients)) == list(PATIENTS)
        assert m.stop() == 0
    finally:
        m.close()


@pytest.mark.fuse
def test_what_another_reader_looked_up_moments_ago_stays_hidden_where_it_counts(
    sources: Sources,
) -> None:
    """The guarantee with the kernel's shared dentry cache in play.

    Root's listing leaves a cached entry for every patient. A listing is
    always answered by the daemon, filtered for the reader; a folder cannot
    be opened by a reader who may not see it (``opendir``); a lookup by name
    is the daemon's again once the kernel has forgotten the entry
    (``ENTRY_TIMEOUT``).
    """
    m = shared_mount(sources, "mnt-cached")
    try:
        patients = m.mountpoint / "patients"
        assert sorted(os.listdir(patients)) == list(PATIENTS)
        for user, mine in READS.items():
            assert listed(user, patients) == list(mine), user
            for pid in set(PATIENTS) - set(mine):
                assert not_found(user, "ls", patients / pid), (user, pid)
                listing = run(user, "ls", "-1", patients / pid / "studies")
                assert listing.stdout == b"", (user, pid)  # never a study of theirs

        def forgotten() -> bool:
            return all(
                not_found(user, "stat", patients / pid)
                for user, mine in READS.items()
                for pid in set(PATIENTS) - set(mine)
            )

        wait_for(forgotten, 20 * ENTRY_TIMEOUT, "the kernel to ask the daemon again")
        assert m.stop() == 0
    finally:
        m.close()


def test_a_daemon_that_cannot_take_readers_credentials_refuses_names_for_others(
    sources: Sources,
) -> None:
    """run_mount with allow_other and names = "id": refused without CAP_SETUID/CAP_SETGID.

    ``--symlinks`` passes the first check (sources read directly by the
    reader), so the refusal is the names rule's own.
    """
    mnt = sources.base / "mnt-unprivileged"
    mnt.mkdir(exist_ok=True)
    own = sources.base / "reader-c"  # an index of their own, in a folder of their own
    own.mkdir(exist_ok=True)
    index = own / "index.sqlite"
    shutil.copy(sources.index, index)
    for path in (mnt, own, index):
        os.chown(path, uid_of(READER_C), -1)
    args = ("mount", mnt, "--index", index, "--allow-other", "--symlinks")
    done = dicomfs_as(READER_C, *args, "--names", "id")
    assert done.returncode == 6, done.stderr  # EXIT_MOUNT
    assert b"names = 'id' on a mount other users can open needs CAP_SETUID" in done.stderr
    assert not os.path.ismount(mnt)
    done = dicomfs_as(READER_C, *args, "--names", "name")
    assert done.returncode == 6 and b"names = 'name'" in done.stderr, done.stderr
    assert not os.path.ismount(mnt)


# -- the WebDAV share -----------------------------------------------------------------------

HTTP_USERS = {"alice": READER_A, "bob": READER_B, "carol": READER_C, "admin": "root"}


@contextlib.contextmanager
def serving_webdav(sources: Sources) -> Iterator[str]:
    """``dicomfs serve`` with only a WebDAV port, names = "id" and a users file; its URL."""
    users = sources.base / "dav-users"
    users.write_text(
        "".join(
            f"{name}:{unix}:{hash_password(name + ' pw')}\n" for name, unix in HTTP_USERS.items()
        )
    )
    users.chmod(0o600)
    port = free_port()
    log = sources.base / "dav-serve.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), DICOMFS_NAMES="id")
    env.pop("DICOMFS_CONFIG", None)
    args = [sys.executable, "-m", "dicomfs", "serve", str(sources.src),
            "--index", str(sources.base / "dav-index.sqlite"), "--workers", "1",
            "--webdav-port", str(port), "--webdav-users", str(users)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=out, env=env, cwd="/", start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            try:
                reply = propfind(url, "/patients/", "admin")
            except AssertionError:
                return False  # not listening yet
            return reply.status == 207 and len(child_names("/patients/", reply.body)) == len(
                PATIENTS
            )

        wait_for(ready, 60, "serve to list every patient over WebDAV")
        assert proc.poll() is None, log.read_text(errors="replace")
        yield url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # parse workers left in its session, if any


def propfind(url: str, path: str, user: str, depth: str = "1") -> Reply:
    return curl(url + path, "-X", "PROPFIND", "-H", f"Depth: {depth}", "-u", f"{user}:{user} pw")


def test_over_webdav_each_user_finds_and_lists_only_their_readers_patients(
    sources: Sources,
) -> None:
    with serving_webdav(sources) as url:
        for http_user, unix_user in HTTP_USERS.items():
            mine = PATIENTS if unix_user == "root" else READS[unix_user]
            listing = propfind(url, "/patients/", http_user)
            assert listing.status == 207, (http_user, listing.status)
            assert child_names("/patients/", listing.body) == list(mine), http_user
            for pid in PATIENTS:
                folder, studies = f"/patients/{pid}/", f"/patients/{pid}/studies/"
                if pid in mine:
                    assert propfind(url, folder, http_user, "0").status == 207
                    reply = propfind(url, studies, http_user)
                    assert reply.status == 207 and len(child_names(studies, reply.body)) == 1
                    continue
                # Exactly as a patient that does not exist: the folder, and
                # everything below it, by lookup and by GET.
                for path, depth in ((folder, "0"), (folder, "1"), (studies, "1")):
                    reply = propfind(url, path, http_user, depth)
                    assert reply.status == 404, (http_user, path, reply.status)
                reply = curl(url + folder, "-u", f"{http_user}:{http_user} pw")
                assert reply.status == 404, (http_user, pid, reply.status)
            assert propfind(url, "/patients/NOSUCH/", http_user, "0").status == 404
