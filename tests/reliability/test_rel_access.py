"""Access control through the mount (reliability.md F1, F2, F3), with real users.

We run as root; the mount is a real ``dicomfs mount`` daemon with
``allow_other``; readers are unprivileged users created here and every read
is a real ``cat`` run by them (``runuser``). The source tree holds a 0644
file, a 0600 file and a 0644 file inside a 0700 folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuse_helpers import Mount, ensure_group, ensure_user, public_dir, require_fuse
from rel_helpers import write_ct_copies

from dicomfs.index import IndexWriter
from dicomfs.live.scan import reconcile

pytestmark = pytest.mark.fuse

GROUP = "dicomfs-rel-readers"
INSIDER = "dicomfs-rel-in"  # in GROUP
OUTSIDER = "dicomfs-rel-out"  # in no group of ours


@dataclass
class Tree:
    base: Path
    index: Path
    uids: dict[str, str]  # "open", "secret", "hidden" -> SOP UID
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
    (open_uid, open_path), (secret_uid, secret_path), (hidden_uid, hidden_path) = made.items()
    os.chmod(secret_path, 0o600)
    os.chmod(src / "private", 0o700)
    index = base / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [src], workers=1)
    writer.close()
    yield Tree(
        base,
        index,
        {"open": open_uid, "secret": secret_uid, "hidden": hidden_uid},
        {"open": open_path, "secret": secret_path, "hidden": hidden_path},
    )
    for mnt in base.glob("mnt*"):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


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


def test_group_members_read_what_file_modes_allow(tree: Tree) -> None:
    """F2 with a configured group: the group is who may use the mount at all.

    Decision (docs/reliability.md F2): flat views cannot carry the modes of
    the source folders, so membership of the configured group is the trust
    boundary; inside it each file's own owner and mode apply (a 0600 file
    stays unreadable), and a user outside the group gets EACCES everywhere.
    """
    m = mount(tree, "mnt-group", allow_other=True, group=GROUP)
    try:
        by_sop = m.mountpoint / "by-sop"
        ok = cat(INSIDER, by_sop / f"{tree.uids['open']}.dcm")
        assert ok.returncode == 0 and ok.stdout == tree.paths["open"].read_bytes()
        assert denied(INSIDER, by_sop / f"{tree.uids['secret']}.dcm")
        # The documented consequence: the 0700 folder does not carry over.
        assert denied(INSIDER, tree.paths["hidden"])
        assert cat(INSIDER, by_sop / f"{tree.uids['hidden']}.dcm").returncode == 0
        for key in ("secret", "hidden", "open"):
            assert denied(OUTSIDER, by_sop / f"{tree.uids[key]}.dcm"), key
        assert m.stop() == 0
    finally:
        m.close()


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
        assert b"Input/output error" in done.stderr or b"Permission denied" in done.stderr
        assert "changed owner or mode since it was indexed" in m.log()
        assert m.stop() == 0
    finally:
        os.chmod(target, 0o644)
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
