"""Two hosts, one PostgreSQL index (issue 17), on one machine.

Each "host" is a real ``dicomfs serve`` (ingest, watch and FUSE mount) with a
name of its own (``DICOMFS_HOST``) and its own view of one shared folder:
the folder is bind-mounted at a different path for each, as a NAS mounted
at /mnt/nas on one host and /srv/archive on the other, and each names it
root ``nas`` at its own path (``DICOMFS_ROOTS``). Host alpha ingests the
NAS; host beta ingests a folder of its own. Both write into one database of
a private cluster and both mounts must show the same tree, serve the NAS
files from their own path, and show what the other host indexes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuse_helpers import public_dir, require_fuse, system_mount, wait_for
from pg_helpers import PrivateCluster
from serve_helpers import ServeProcess

from dicomfs.demo.patients import DemoSet, write_demo
from dicomfs.index.roots import UNMAPPED

DEADLINE = 60.0


def bound(source: Path, target: Path) -> contextlib.AbstractContextManager[Path]:
    """``source`` bind-mounted at ``target``: the same files under another path."""
    return system_mount(target, "a bind mount", "--bind", str(source))


def demo(folder: Path, seed: int) -> DemoSet:
    return write_demo(folder, patients=1, hostile=False, seed=seed, ct_slices=3, mr_slices=2)


def tree(mnt: Path) -> dict[str, int]:
    """Every path under the layout folders of a mount, with its size (no file is opened)."""
    found: dict[str, int] = {}
    for top in ("by-sop", "by-series", "by-study", "plans"):
        for folder, dirs, files in os.walk(mnt / top):
            dirs.sort()
            for name in files:
                path = Path(folder) / name
                found[str(path.relative_to(mnt))] = path.lstat().st_size
    return found


def sop_uids(mnt: Path) -> set[str]:
    return {name.removesuffix(".dcm") for name in os.listdir(mnt / "by-sop")}


def uids_of(written: DemoSet) -> set[str]:
    return {uid for patient in written.patients for uid in patient.files}


@dataclass
class Hosts:
    alpha: ServeProcess
    beta: ServeProcess
    base: Path
    nas: DemoSet  # on the shared folder, ingested by alpha
    own: DemoSet  # in beta's own folder, ingested by beta

    def files(self) -> dict[str, Path]:
        """SOP Instance UID -> the file as written (the shared folder's own path)."""
        return {
            uid: written.root / rel
            for written in (self.nas, self.own)
            for patient in written.patients
            for uid, rel in patient.files.items()
        }


@pytest.fixture
def hosts(pg_cluster: PrivateCluster) -> Iterator[Hosts]:
    require_fuse()
    base = public_dir("dicomfs-hosts-")
    url = pg_cluster.database()
    nas = base / "nas"
    nas_set = demo(nas / "first", seed=11)
    with contextlib.ExitStack() as stack:
        a_nas = stack.enter_context(bound(nas, base / "alpha" / "mnt-nas"))
        b_nas = stack.enter_context(bound(nas, base / "beta" / "srv-archive"))
        b_local = base / "beta" / "local"
        own_set = demo(b_local / "own", seed=12)
        started = []
        for name, source, root, log in (
            ("alpha", a_nas, a_nas, base / "alpha"),
            ("beta", b_local, b_nas, base / "beta"),
        ):
            (log / "mnt").mkdir()
            serve = ServeProcess(
                [source],
                log / "mnt",
                url,
                env={"DICOMFS_HOST": name, "DICOMFS_ROOTS": f"nas={root}"},
                log_dir=log,
            )
            stack.callback(serve.cleanup)
            started.append(serve.start())
        hosts = Hosts(started[0], started[1], base, nas_set, own_set)
        for serve in started:
            serve.wait_idle_indexed(len(hosts.files()), DEADLINE)
        yield hosts
    shutil.rmtree(base, ignore_errors=True)


def test_two_hosts_show_one_tree_and_each_serves_the_nas_from_its_own_path(
    hosts: Hosts,
) -> None:
    alpha, beta = hosts.alpha, hosts.beta
    # The same tree through both mounts: the same names, the same files. Reports differ
    # only where they should: a manifest gives each host's own paths of the sources.
    a_tree, b_tree = tree(alpha.mnt), tree(beta.mnt)
    assert a_tree.keys() == b_tree.keys() and len(a_tree) > len(hosts.files())
    reports = {p for p in a_tree if p.endswith((".json", ".txt"))}
    assert {p: a_tree[p] for p in a_tree.keys() - reports} == {
        p: b_tree[p] for p in b_tree.keys() - reports
    }
    plan = hosts.nas.patients[0].plan_uid
    manifest = (beta.mnt / "plans" / plan / "manifest.json").read_text()
    assert str(hosts.base / "beta" / "srv-archive") in manifest
    assert str(hosts.base / "alpha") not in manifest

    # Every NAS file reads through both mounts as the bytes of the shared folder;
    # beta's own files only through beta's mount: alpha has no such folder.
    own = uids_of(hosts.own)
    for uid, source in sorted(hosts.files().items()):
        data = source.read_bytes()
        assert (beta.mnt / "by-sop" / f"{uid}.dcm").read_bytes() == data
        if uid in own:
            with pytest.raises(OSError):
                (alpha.mnt / "by-sop" / f"{uid}.dcm").read_bytes()
        else:
            assert (alpha.mnt / "by-sop" / f"{uid}.dcm").read_bytes() == data


def test_what_one_host_ingests_appears_in_the_other_hosts_mount(hosts: Hosts) -> None:
    alpha, beta, base = hosts.alpha, hosts.beta, hosts.base
    # A new patient arrives on alpha's NAS path: beta's mount shows it, and reads it
    # from beta's own path of the NAS.
    started = time.monotonic()
    added = demo(base / "alpha" / "mnt-nas" / "second", seed=13)
    new = uids_of(added)
    wait_for(lambda: new <= sop_uids(beta.mnt), DEADLINE, "alpha's files in beta's mount")
    seen_after = time.monotonic() - started
    for uid, rel in added.patients[0].files.items():
        through_beta = (beta.mnt / "by-sop" / f"{uid}.dcm").read_bytes()
        assert through_beta == (base / "beta" / "srv-archive" / "second" / rel).read_bytes()
    # And the other way: a folder beta ingests shows up in alpha's mount (listed; alpha
    # cannot read it, it has no such folder).
    more = uids_of(demo(base / "beta" / "local" / "more", seed=14))
    wait_for(lambda: more <= sop_uids(alpha.mnt), DEADLINE, "beta's files in alpha's mount")
    assert seen_after < DEADLINE
    assert tree(alpha.mnt).keys() == tree(beta.mnt).keys()


def test_each_host_stores_its_paths_by_root_or_by_its_name(hosts: Hosts) -> None:
    """The rows say where they came from: ``nas:`` for the shared folder, ``@beta:`` for
    beta's own; no path of either host's local mount of the NAS is stored."""
    import psycopg

    assert isinstance(hosts.alpha.index, str)
    with psycopg.connect(hosts.alpha.index) as conn:
        stored = sorted(bytes(row[0]) for row in conn.execute("SELECT path FROM files"))
    nas = os.fsencode(hosts.base / "nas")
    expected = sorted(
        b"nas:" + os.fsencode(path)[len(nas) :]
        if os.fsencode(path).startswith(nas + b"/")
        else b"@beta:" + os.fsencode(path)
        for path in hosts.files().values()
    )
    assert stored == expected
    assert not any(UNMAPPED in p for p in stored)


def test_an_outage_of_the_database_is_said_and_loses_nothing(tmp_path: Path) -> None:
    """The server stops under a running serve: status.json says the index cannot be
    reached, files arriving meanwhile are indexed once it is back (a cluster of its own)."""
    require_fuse()
    cluster = PrivateCluster().start()
    base = public_dir("dicomfs-outage-")
    try:
        first = demo(base / "src" / "first", seed=21)
        (base / "mnt").mkdir()
        serve = ServeProcess([base / "src"], base / "mnt", cluster.database(), log_dir=base)
        try:
            serve.start()
            count = len(uids_of(first))
            serve.wait_idle_indexed(count, DEADLINE)
            cluster.pause()
            wait_for(
                lambda: "index_unreachable" in serve.status(), DEADLINE, "the outage in status"
            )
            assert "instances" not in serve.status()  # no counts it cannot know
            second = demo(base / "src" / "second", seed=22)  # arrives during the outage
            time.sleep(1.0)  # let ingest try, and fail, to write it
            cluster.resume()
            # The failed batch is retried by a reconcile (ingest.RETRY_DELAY, 30 s).
            serve.wait_idle_indexed(count + len(uids_of(second)), DEADLINE + 30)
            for uid, rel in second.patients[0].files.items():
                got = (serve.mnt / "by-sop" / f"{uid}.dcm").read_bytes()
                assert got == (second.root / rel).read_bytes()
            assert serve.status()["ingest"]["errors"] >= 1  # the outage was met, not missed
            assert serve.terminate() == 0
        finally:
            serve.cleanup()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
