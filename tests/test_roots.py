"""Named source roots and host names: how paths are stored in an index several hosts share.

The mapping on its own, then through a real index in each backend: the
paths the writer stores, what a reader on "another host" (another mapping in
this process) reads back, and the scan's path-range merge under a root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.dicom.records import FileResult, FileStat, Instance
from dicomfs.errors import ConfigError
from dicomfs.index import IndexReader, IndexWriter, roots
from dicomfs.index.roots import UNMAPPED, Roots

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(autouse=True)
def _restore_roots() -> Iterator[None]:
    """Each test sets the process's roots; afterwards they are as before (from the
    environment: the hostname, no roots), as the mounts other tests start have them."""
    before = roots._current
    yield
    roots._current = before


def test_a_path_under_a_root_is_stored_by_name_and_read_back_on_each_host() -> None:
    a = Roots({"nas": "/mnt/nas", "scans": "/mnt/nas/scans"}, "alpha")
    b = Roots({"nas": "/srv/archive"}, "beta")
    stored = a.stored(b"/mnt/nas/2024/ct1.dcm")
    assert stored == b"nas:/2024/ct1.dcm"
    assert a.local(stored) == b"/mnt/nas/2024/ct1.dcm"
    assert b.local(stored) == b"/srv/archive/2024/ct1.dcm"
    # The longest root takes its own files; a root unknown on a host is never a local path.
    assert a.stored(b"/mnt/nas/scans/x.dcm") == b"scans:/x.dcm"
    assert b.local(b"scans:/x.dcm") == UNMAPPED + b"scans/x.dcm"
    # A folder that only starts like a root is not under it.
    assert a.stored(b"/mnt/nasty/x.dcm") == b"/mnt/nasty/x.dcm"


def test_a_shared_index_names_the_host_of_a_path_under_no_root() -> None:
    a, b = Roots({}, "alpha"), Roots({}, "beta")
    stored = a.stored(b"/data/x.dcm", shared=True)
    assert stored == b"@alpha:/data/x.dcm"
    assert a.local(stored) == b"/data/x.dcm"
    assert b.local(stored) == UNMAPPED + b"alpha/data/x.dcm"  # beta's /data is not alpha's
    assert a.stored(b"/data/x.dcm") == b"/data/x.dcm"  # an SQLite index: plain paths


def test_roots_order_is_kept_so_range_queries_still_work() -> None:
    a = Roots({"nas": "/mnt/nas"}, "alpha")
    local = sorted([b"/mnt/nas/a/1", b"/mnt/nas/a/2", b"/mnt/nas/b", b"/mnt/nas/\xff"])
    assert sorted(a.stored(p) for p in local) == [a.stored(p) for p in local]


@pytest.mark.parametrize(
    ("mapping", "host", "message"),
    [
        ({"n a s": "/mnt/nas"}, "alpha", "root name"),
        ({"nas": "relative/path"}, "alpha", "not an absolute path"),
        ({"nas": "/"}, "alpha", "cannot be a root"),
        ({}, "bad host!", "host name"),
    ],
)
def test_bad_names_and_paths_are_clear_errors(
    mapping: dict[str, str], host: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Roots(mapping, host)


def test_an_odd_hostname_is_made_a_name_and_an_odd_given_name_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hostname only tags this host's rows: made valid, so no command fails on it."""
    monkeypatch.delenv(roots.HOST_ENV, raising=False)
    monkeypatch.setattr(roots.socket, "gethostname", lambda: "lab pc#3.example.org")
    assert Roots({}).host == "lab-pc-3"
    with pytest.raises(ConfigError, match="host name"):
        Roots({}, "lab pc#3")


def test_a_source_holding_a_root_is_refused() -> None:
    mapping = Roots({"nas": "/mnt/nas"}, "alpha")
    mapping.check_sources([Path("/mnt/nas"), Path("/mnt/nas/sub"), Path("/other")])
    with pytest.raises(ConfigError, match="holds the root nas"):
        mapping.check_sources([Path("/mnt")])


def test_environment_gives_roots_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(roots.ENV, "nas=/mnt/nas, scans=/mnt/scans")
    monkeypatch.setenv(roots.HOST_ENV, "planning1")
    roots._current = None
    found = roots.current()
    assert found.mapping == {"nas": "/mnt/nas", "scans": "/mnt/scans"}
    assert found.host == "planning1"
    with pytest.raises(ConfigError, match="name=/path"):
        roots.parse("nas")


def _file(folder: Path, name: str) -> FileStat:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(name.encode())
    return FileStat.from_stat(str(path), os.stat(path))


def test_two_hosts_read_one_index_with_their_own_paths(
    tmp_path: Path, index_at: Path | str
) -> None:
    """Host alpha indexes its NAS and a folder of its own; host beta, with the NAS elsewhere,
    reads the NAS files at its paths, and alpha's own folder as not its own."""
    nas_a, nas_b = tmp_path / "alpha-nas", tmp_path / "beta-archive"
    roots.configure({"nas": nas_a}, "alpha")
    writer = IndexWriter(index_at)
    shared = writer.postgres
    files = [_file(nas_a, "p1/ct1.dcm"), _file(nas_a, "p1/ct2.dcm"), _file(tmp_path, "own/x.dcm")]
    writer.apply(
        [
            FileResult(f, Instance(sop_class_uid=CT, sop_instance_uid=f"1.2.{n}", modality="CT"))
            for n, f in enumerate(files)
        ]
    )
    stored = sorted(bytes(r[0]) for r in writer.rows("SELECT path FROM files"))
    own = os.fsencode(files[2].path)
    assert stored == sorted(
        [b"nas:/p1/ct1.dcm", b"nas:/p1/ct2.dcm", (b"@alpha:" + own) if shared else own]
    )
    # The scan's merge: keys under the root come back as local paths, in order.
    under = [p for p, _ in writer.raw_file_keys_under(str(nas_a))]
    assert under == sorted(os.fsencode(f.path) for f in files[:2])
    assert writer.file_key(files[0].path) is not None
    writer.close()

    roots.configure({"nas": nas_b}, "beta")
    reader = IndexReader(index_at)
    served = reader.instance("1.2.0")
    assert served is not None and served.file.path == str(nas_b / "p1/ct1.dcm")
    assert served.file.dev == 0  # another host's device numbers are not compared
    other = reader.instance("1.2.2")
    assert other is not None
    if shared:  # alpha's own folder is not beta's
        assert os.fsencode(other.file.path).startswith(UNMAPPED + b"alpha/")
    reader.close()
