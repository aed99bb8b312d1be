"""Access control through the mount (reliability.md F1, F2, F3, F5), with real users.

We run as root; the mount is a real ``dicomfs mount`` daemon with
``allow_other``; readers are unprivileged users created here (and removed at
the end of the session) and every read is a real ``cat`` run by them
(``runuser``). The source tree holds a 0644 file, a 0600 file, a 0644 file
inside a 0700 folder, and a 0644 file whose POSIX ACL denies one user.
The rule under test: a reader gets through the mount exactly what they could
read from the source itself.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import index_folders
from fuse_helpers import Mount, ensure_group, ensure_user, public_dir, require_fuse
from rel_helpers import dicomfs_as, write_ct_copies

pytestmark = pytest.mark.fuse

GROUP = "dicomfs-rel-readers"
INSIDER = "dicomfs-rel-in"  # in GROUP
OUTSIDER = "dicomfs-rel-out"  # in no group of ours


@dataclass
class Tree:
    base: Path
    index: Path
    uids: dict[str, str]  # "open", "secret", "hidden", "acl" -> SOP UID
    paths: dict[str, Path]


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    require_fuse()
    ensure_group(GROUP)
    ensure_user(INSIDER, (GROUP,))
    ensure_user(OUTSIDER)
    base = public_dir("dicomfs-rel-access-")
    src = base / "src"
    made = write_ct_copies(src, 2) | write_ct_copies(src / "private", 1, start=2)
    made |= write_ct_copies(src / "acl", 1, start=3)
    (open_uid, open_path), (secret_uid, secret_path), (hidden_uid, hidden_path), acl = made.items()
    os.chmod(secret_path, 0o600)
    os.chmod(src / "private", 0o700)
    # 0644, but the ACL takes everything from INSIDER (who is in the file's
    # "other" class otherwise): the kernel refuses INSIDER, nobody else.
    subprocess.run(["setfacl", "-m", f"u:{INSIDER}:---", str(acl[1])], check=True)
    index = base / "index.sqlite"
    index_folders(index, [src], 1)
    yield Tree(
        base,
        index,
        {"open": open_uid, "secret": secret_uid, "hidden": hidden_uid, "acl": acl[0]},
        {"open": open_path, "secret": secret_path, "hidden": hidden_path, "acl": acl[1]},
    )
    for mnt in base.glob("mnt*"):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def reindex(tree: Tree) -> None:
    """Bring the index level with the sources after a test changed a mode or ACL.

    Such a change moves the file's inode change time, so the mount refuses
    the file until it is indexed again (serve does that by itself).
    """
    index_folders(tree.index, [tree.base / "src"], 1)


def cat(user: str, path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", user, "--", "cat", str(path)], capture_output=True)


def denied(user: str, path: Path) -> bool:
    done = cat(user, path)
    return done.returncode != 0 and b"Permission denied" in done.stderr


def mount(tree: Tree, name: str, **options: object) -> Mount:
    mnt = tree.base / name
    mnt.mkdir(exist_ok=True)
    return Mount(mnt, tree.index, **options).start()  # type: ignore[arg-type]


def mount_options(mnt: Path) -> tuple[set[str], set[str]]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(mnt):
            sep = fields.index("-")
            return set(fields[5].split(",")), set(fields[sep + 3].split(","))
    raise AssertionError(f"{mnt} is not mounted")


def test_default_group_denies_an_unprivileged_user_everything(tree: Tree) -> None:
    """F1, F2 with the defaults: allow_other, group = the daemon's own group (root)."""
    m = mount(tree, "mnt-default", allow_other=True)
    try:
        # What the source folders deny ...
        assert denied(OUTSIDER, tree.paths["secret"])
        assert denied(OUTSIDER, tree.paths["hidden"])
        assert cat(OUTSIDER, tree.paths["open"]).returncode == 0
        # ... the mount denies too (and, outside the group, everything else).
        for key in ("secret", "hidden", "open"):
            assert denied(OUTSIDER, m.mountpoint / "by-sop" / f"{tree.uids[key]}.dcm"), key
        listing = subprocess.run(
            ["runuser", "-u", OUTSIDER, "--", "ls", str(m.mountpoint / "by-sop")],
            capture_output=True,
        )
        assert listing.returncode != 0 and b"Permission denied" in listing.stderr
        options, super_options = mount_options(m.mountpoint)
        assert {"ro", "nosuid", "nodev"} <= options  # F3
        assert {"default_permissions", "allow_other"} <= super_options
        assert m.stop() == 0
    finally:
        m.close()


def test_group_members_read_exactly_what_the_sources_allow_them(tree: Tree) -> None:
    """F2, F5 with a configured group: the group is who may use the mount at all.

    Inside it a reader gets what they could read directly, checked by the
    kernel on an open made with their own credentials: a 0600 file, a file in
    a 0700 folder and a file whose ACL denies them all stay closed. A user
    outside the group gets EACCES everywhere.
    """
    m = mount(tree, "mnt-group", allow_other=True, group=GROUP)
    try:
        by_sop = m.mountpoint / "by-sop"
        ok = cat(INSIDER, by_sop / f"{tree.uids['open']}.dcm")
        assert ok.returncode == 0 and ok.stdout == tree.paths["open"].read_bytes()
        for key in ("secret", "hidden", "acl"):
            assert denied(INSIDER, tree.paths[key]), key  # the source refuses ...
            assert denied(INSIDER, by_sop / f"{tree.uids[key]}.dcm"), key  # ... so does the mount
        for key in ("secret", "hidden", "open", "acl"):
            assert denied(OUTSIDER, by_sop / f"{tree.uids[key]}.dcm"), key
        # The daemon itself (root) still reads everything: the check is per reader.
        assert (by_sop / f"{tree.uids['acl']}.dcm").read_bytes() == tree.paths["acl"].read_bytes()
        assert "Ignoring invalid" not in m.log()  # libfuse thread options are given
        assert m.stop() == 0
    finally:
        m.close()


def test_an_acl_that_denies_one_user_holds_for_every_path_to_the_file(tree: Tree) -> None:
    """F5: by-sop, by-series and a plan-less objects/ view all open the same source."""
    m = mount(tree, "mnt-acl", allow_other=True, group=GROUP)
    try:
        uid = tree.uids["acl"]
        paths = [m.mountpoint / "by-sop" / f"{uid}.dcm", m.mountpoint / f"objects/{uid}/self.dcm"]
        for path in paths:
            assert denied(INSIDER, path), path
        # The ACL is dropped: the same reader now gets the bytes, with no remount.
        subprocess.run(["setfacl", "-b", str(tree.paths["acl"])], check=True)
        reindex(tree)
        try:
            for path in paths:
                done = cat(INSIDER, path)
                assert done.returncode == 0 and done.stdout == tree.paths["acl"].read_bytes()
        finally:
            subprocess.run(
                ["setfacl", "-m", f"u:{INSIDER}:---", str(tree.paths["acl"])], check=True
            )
            reindex(tree)
        assert m.stop() == 0
    finally:
        m.close()


def test_test_accounts_are_removed_again() -> None:
    """The suite leaves no system users or groups behind (conftest.py removes them)."""
    from fuse_helpers import remove_test_accounts

    ensure_group("dicomfs-probe-group")
    ensure_user("dicomfs-probe-user", ("dicomfs-probe-group",))
    assert remove_test_accounts({"dicomfs-probe-user", "dicomfs-probe-group"}) == [
        "dicomfs-probe-user",
        "dicomfs-probe-group",
    ]
    for database, name in (("passwd", "dicomfs-probe-user"), ("group", "dicomfs-probe-group")):
        assert subprocess.run(["getent", database, name], capture_output=True).returncode == 2


def test_a_chmod_after_indexing_is_never_bypassed(tree: Tree) -> None:
    """F1: the mount mirrored 0644; the source became 0600 without an event: no bytes."""
    m = mount(tree, "mnt-chmod", allow_other=True, group=GROUP)
    target = tree.paths["open"]
    try:
        served = m.mountpoint / "by-sop" / f"{tree.uids['open']}.dcm"
        assert cat(INSIDER, served).returncode == 0
        os.chmod(target, 0o600)
        done = cat(INSIDER, served)
        assert done.returncode != 0 and done.stdout == b""
        # The reader's own open is refused by the kernel (0600, not theirs) ...
        assert b"Permission denied" in done.stderr
        assert "permission denied to the reader" in m.log()
        # ... and a reader the new mode still admits (the daemon's own user) is
        # refused too, because owner and mode no longer match what was indexed.
        with pytest.raises(OSError) as raised:
            served.read_bytes()
        assert raised.value.errno == errno.EIO
        assert "changed owner or mode since it was indexed" in m.log()
        assert m.stop() == 0
    finally:
        os.chmod(target, 0o644)
        reindex(tree)
        m.close()


def test_without_allow_other_no_other_user_gets_in(tree: Tree) -> None:
    """F3: allow_other only when configured."""
    m = mount(tree, "mnt-private")
    try:
        _, super_options = mount_options(m.mountpoint)
        assert "allow_other" not in super_options and "default_permissions" in super_options
        for user in (INSIDER, OUTSIDER):
            assert denied(user, m.mountpoint / "by-sop" / f"{tree.uids['open']}.dcm"), user
        assert (m.mountpoint / "by-sop" / f"{tree.uids['open']}.dcm").read_bytes()
        assert m.stop() == 0
    finally:
        m.close()


def test_a_daemon_that_cannot_take_readers_credentials_refuses_allow_other(tree: Tree) -> None:
    """F5: without CAP_SETUID/CAP_SETGID every read would use the daemon's own rights."""
    mnt = tree.base / "mnt-unprivileged"
    mnt.mkdir(exist_ok=True)
    own = tree.base / "outsider"  # an index of their own, in a folder of their own
    own.mkdir(exist_ok=True)
    index = own / "index.sqlite"
    shutil.copy(tree.index, index)
    for path in (mnt, own, index):
        os.chown(path, pwd.getpwnam(OUTSIDER).pw_uid, -1)
    done = dicomfs_as(OUTSIDER, "mount", mnt, "--index", index, "--allow-other")
    assert done.returncode == 6, done.stderr  # EXIT_MOUNT
    assert b"allow_other needs CAP_SETUID and CAP_SETGID" in done.stderr
    assert not os.path.ismount(mnt)


def test_source_paths_in_generated_files_are_shown_only_to_who_may_list_them(tree: Tree) -> None:
    """I3: manifest.json and rejected.txt withhold folders a reader cannot list.

    A real export names its folder after the patient; INSIDER may use the
    mount but cannot list that folder (0750, group root), so the patient's
    name must not reach them through the generated files. The daemon's own
    user, who can, sees the full paths; once the folder opens, so does INSIDER.
    """
    from dicomfs.demo import write_demo

    export = tree.base / "src" / "Patient Doe^Jane 1961-02-03"
    demo = write_demo(export, patients=1, ct_slices=2, hostile=False)
    (export / "broken.dcm").write_bytes(b"DICM" * 10)  # rejected, inside the closed folder
    for folder in [export, *(p for p in export.rglob("*") if p.is_dir())]:
        os.chmod(folder, 0o750)
    index = tree.base / "index-phi.sqlite"
    index_folders(index, [tree.base / "src"], 1)
    mnt = tree.base / "mnt-phi"
    mnt.mkdir(exist_ok=True)
    m = Mount(mnt, index, allow_other=True, group=GROUP).start()
    try:
        manifest_path = mnt / "plans" / demo.patients[0].plan_uid / "manifest.json"
        for path in (manifest_path, mnt / ".dicomfs" / "rejected.txt"):
            own = path.read_bytes()  # the daemon's user (root) may list everything
            assert b"Doe^Jane" in own, path
            seen = cat(INSIDER, path)
            assert seen.returncode == 0, seen.stderr
            assert b"Doe^Jane" not in seen.stdout and b"1961" not in seen.stdout, path
        doc = json.loads(cat(INSIDER, manifest_path).stdout)
        assert doc["members"] and {m["source_path"] for m in doc["members"]} == {None}
        rejected = cat(INSIDER, mnt / ".dicomfs" / "rejected.txt").stdout.decode()
        assert "<withheld>\t" in rejected
        assert str(tree.paths["open"].parent) not in rejected  # nothing else was rejected there
        # The folder opens: the same reader now sees the paths, without a remount.
        for folder in [export, *(p for p in export.rglob("*") if p.is_dir())]:
            os.chmod(folder, 0o755)
        doc = json.loads(cat(INSIDER, manifest_path).stdout)
        assert all("Doe^Jane" in m["source_path"] for m in doc["members"])
        assert m.stop() == 0
    finally:
        m.close()
