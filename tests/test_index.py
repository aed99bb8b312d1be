"""The index on its own: real SQLite files and real PostgreSQL databases, records built by hand.

The parser is tested elsewhere; here the subject is storage: the duplicate
rule, promotion, removal, schema checks, file modes and concurrency. Tests
that take ``writer`` run once per backend (``conftest.index_at``); those
about the file (its mode, WAL, upgrades of old files) are SQLite's own.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import PrivateCluster
from schema_helpers import downgrade_postgres_to_schema_7, downgrade_to_schema_6

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
from dicomfs.errors import IndexCorruptError, IndexUnavailableError
from dicomfs.index import SCHEMA_VERSION, IndexReader, IndexWriter, database
from dicomfs.index.schema import CAPPED_WHERE

CT = "1.2.840.10008.5.1.4.1.1.2"
PLAN = "1.2.840.10008.5.1.4.1.1.481.5"


def make_file(tmp_path: Path, name: str, content: bytes) -> FileStat:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return FileStat.from_stat(str(path), os.stat(path))


def digest(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ct(uid: str, series: str = "1.2.3.4", **kw: str) -> Instance:
    return Instance(sop_class_uid=CT, sop_instance_uid=uid, series_uid=series, modality="CT", **kw)


@pytest.fixture
def writer(index_at: Path | str) -> Iterator[IndexWriter]:
    opened = IndexWriter(index_at)
    yield opened
    opened.close()


def test_index_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path / "idx" / "index.sqlite")
    assert writer.path is not None
    assert stat.S_IMODE(os.stat(writer.path).st_mode) == 0o600
    mode = sqlite3.connect(writer.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert writer.meta("schema_version") == str(SCHEMA_VERSION)


def test_first_copy_serves_and_identical_copy_is_benign(
    tmp_path: Path, writer: IndexWriter
) -> None:
    a = make_file(tmp_path, "a/one.dcm", b"same bytes")
    b = make_file(tmp_path, "b/one.dcm", b"same bytes")
    stats = writer.apply([FileResult(a, ct("1.2.1")), FileResult(b, ct("1.2.1"))], digest=digest)
    assert (stats.indexed, stats.benign_duplicates, stats.conflicts) == (2, 1, 0)
    served = writer.instance("1.2.1")
    assert served is not None and served.file.path == a.path
    [conflict] = writer.conflicts()
    assert (conflict.kind, conflict.kept_path, conflict.other_path) == ("benign", a.path, b.path)


def test_different_bytes_are_a_conflict_and_never_swap(tmp_path: Path, writer: IndexWriter) -> None:
    a = make_file(tmp_path, "a.dcm", b"first")
    b = make_file(tmp_path, "b.dcm", b"second, different")
    writer.apply([FileResult(a, ct("1.2.1", series="1.5"))], digest=digest)
    stats = writer.apply([FileResult(b, ct("1.2.1", series="1.6"))], digest=digest)
    assert stats.conflicts == 1
    served = writer.instance("1.2.1")
    assert served is not None and served.file.path == a.path and served.series_uid == "1.5"
    assert writer.status().conflicts == 1
    # The serving copy goes away: the other copy is promoted, the conflict is settled.
    writer.apply([], removed=[a.path])
    served = writer.instance("1.2.1")
    assert served is not None and served.file.path == b.path
    assert writer.conflicts() == []


def test_a_schema_3_index_is_upgraded_and_keeps_its_copies_apart(tmp_path: Path) -> None:
    """3 -> ... -> 8: the index of every row's UID goes; later copies are found by their
    own index; the log of changes is added; capped objects are counted from an index."""
    index = tmp_path / "i.sqlite"
    a, b, c = (make_file(tmp_path, f"{n}.dcm", n.encode() * 3) for n in "abc")
    writer = IndexWriter(index)
    writer.apply([FileResult(a, ct("1.2.1")), FileResult(b, ct("1.2.1"))], digest=digest)
    writer.close()
    downgrade_to_schema_6(index)
    conn = sqlite3.connect(index)  # the index as schema 3 had it
    conn.execute("DROP INDEX instances_copies")
    conn.execute("CREATE INDEX instances_sop ON instances(sop_uid, file_id)")
    conn.execute("DROP TABLE changes")
    conn.execute("DROP INDEX instances_capped")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    writer = IndexWriter(index)  # upgrades in place
    try:
        assert writer.meta("schema_version") == str(SCHEMA_VERSION) == "8"
        names = {r[0] for r in writer.rows("SELECT name FROM sqlite_master")}
        assert "instances_copies" in names and "instances_sop" not in names
        assert "changes" in names
        capped = writer.rows(  # INDEXED BY: an error if the index cannot serve the count
            "EXPLAIN QUERY PLAN SELECT count(*) FROM instance_rows "
            f"INDEXED BY instances_capped WHERE {CAPPED_WHERE}"
        )
        assert "instances_capped" in capped[0][3]  # status no longer reads every row
        stats = writer.apply([FileResult(c, ct("1.2.1"))], digest=digest)
        assert stats.conflicts == 1  # a third copy is still compared with the serving one
        writer.apply([], removed=[a.path])
        served = writer.instance("1.2.1")
        assert served is not None and served.file.path == b.path  # the oldest copy left serves
        assert [x.other_path for x in writer.conflicts()] == [c.path]
        plan = writer.rows(
            "EXPLAIN QUERY PLAN SELECT file_id FROM instances WHERE sop_uid = ? AND serving = 0",
            ("1.2.1",),
        )
        assert "instances_copies" in plan[0][3]
    finally:
        writer.close()


def _instance_table(index: Path) -> list[tuple[object, ...]]:
    """The columns (name, type, NOT NULL, default, key) and foreign keys of ``instance_rows``."""
    conn = sqlite3.connect(index)
    try:
        columns = conn.execute("PRAGMA table_info(instance_rows)").fetchall()
        return columns + conn.execute("PRAGMA foreign_key_list(instance_rows)").fetchall()
    finally:
        conn.close()


def test_a_schema_6_index_is_upgraded_to_uids_stored_once(tmp_path: Path) -> None:
    """6 -> 8: same rows, same answers, the table a new index gets, and details still cascade."""
    index = tmp_path / "i.sqlite"
    writer = IndexWriter(index)
    files = [
        FileResult(
            make_file(tmp_path, f"{n}.dcm", b"%d" % n),
            ct(f"1.5.{n}", series=f"1.6.{n % 3}", study_uid=f"1.7.{n % 2}",
               frame_of_reference_uid="1.8" if n % 2 else ""),
        )
        for n in range(12)
    ]  # fmt: skip
    writer.apply(files, digest=digest)
    before = writer.all_instances()
    writer.close()
    downgrade_to_schema_6(index)
    with pytest.raises(IndexCorruptError, match="run `dicomfs index`"):
        IndexReader(index)
    writer = IndexWriter(index)  # upgrades in place
    try:
        assert writer.meta("schema_version") == str(SCHEMA_VERSION)
        assert writer.all_instances() == before
        assert writer.series_instances("1.6.1") == [r for r in before if r.series_uid == "1.6.1"]
        assert writer.study_series_uids("1.7.0") == ["1.6.0", "1.6.1", "1.6.2"]
        stored = sorted(r[0] for r in writer.rows("SELECT uid FROM uids"))
        assert stored == ["", "1.6.0", "1.6.1", "1.6.2", "1.7.0", "1.7.1", "1.8"]
        writer.apply([], removed=[files[0].stat.path])
        assert writer.rows("SELECT count(*) FROM details") == [(11,)]  # cascades from the rows
    finally:
        writer.close()
    fresh = tmp_path / "fresh.sqlite"
    IndexWriter(fresh).close()
    assert _instance_table(index) == _instance_table(fresh)


def _plan_and_images() -> list[Instance]:
    """A plan naming a structure set, which names two images of a series (UIDs by number)."""
    images = [
        ct(f"1.5.{n}", series="1.6.1", study_uid="1.7", frame_of_reference_uid="1.8")
        for n in range(2)
    ]
    structures = Instance(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.481.3",
        sop_instance_uid="1.9.2",
        modality="RTSTRUCT",
        series_uid="1.6.2",
        study_uid="1.7",
        frame_of_reference_uid="1.8",
        edges=[
            Edge(i.sop_instance_uid, Level.INSTANCE, Role.IMAGE, f"ContourImageSequence[{n}]",
                 study_uid="1.7", series_uid="1.6.1")
            for n, i in enumerate(images)
        ],
    )  # fmt: skip
    plan = Instance(
        sop_class_uid=PLAN,
        sop_instance_uid="1.9.1",
        modality="RTPLAN",
        series_uid="1.6.3",
        study_uid="1.7",
        edges=[Edge("1.9.2", Level.INSTANCE, Role.STRUCTURE_SET, "ReferencedStructureSetSequence")],
    )
    return [*images, structures, plan]


def _answers(reader: IndexReader) -> list[object]:
    """What the graph and the trees ask of an index, by UID."""
    return [
        reader.all_instances(),
        reader.series_instances("1.6.1"),
        reader.study_instances("1.7"),
        reader.instances_on_frame_of_reference(["1.8"]),
        reader.study_series_uids("1.7"),
        reader.series_exists("1.6.1", "1.7"),
        reader.forward_edges("1.9.2"),
        reader.reverse_edges("1.5.0"),
    ]


def test_a_schema_7_postgres_index_is_upgraded_in_place_and_keeps_its_grants(
    tmp_path: Path, pg_cluster: PrivateCluster
) -> None:
    """7 -> 8, PostgreSQL's first upgrade: its views become its own (each UID looked up by
    key) in place, so the SELECT a mount role was granted on them stays; same answers
    before and after; a reader refuses the old version until a writer has upgraded."""
    import psycopg

    tag = f"{os.getpid()}_{tmp_path.name}".replace("-", "_").lower()
    name, mount = f"up_{tag}", f"upmount_{tag}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        admin.execute(f"CREATE ROLE {mount} LOGIN")
    url = pg_cluster.url(name)
    files = [
        FileResult(make_file(tmp_path, f"{inst.sop_instance_uid}.dcm", b"x"), inst)
        for inst in _plan_and_images()
    ]
    writer = IndexWriter(url)
    writer.apply(files)
    before = _answers(writer)
    writer.close()
    downgrade_postgres_to_schema_7(url)
    with psycopg.connect(url, autocommit=True) as admin:  # granted by name, not by default
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {mount}")
    with pytest.raises(IndexCorruptError, match="run `dicomfs index`"):
        IndexReader(url)
    writer = IndexWriter(url)  # upgrades
    try:
        assert writer.meta("schema_version") == str(SCHEMA_VERSION) == "8"
        views = writer.rows(
            "SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()"
        )
        assert sorted(v[0] for v in views) == ["edges", "instances"]
        assert all("JOIN" not in v[1] for v in views)  # no join left to plan as a hash
        writer.apply([FileResult(make_file(tmp_path, "new.dcm", b"n"), ct("1.5.9", "1.6.1"))])
        after = IndexReader(pg_cluster.url(name, user=mount))  # the granted role still reads
        try:
            assert [r.sop_uid for r in after.series_instances("1.6.1")] == [
                "1.5.0", "1.5.1", "1.5.9"
            ]  # fmt: skip
            writer.apply([], removed=[make_file(tmp_path, "new.dcm", b"n").path])
            assert _answers(after) == before
        finally:
            after.close()
    finally:
        writer.close()


def _generic_plan(reader: IndexReader, sql: str, params: Sequence[object]) -> Any:
    """PostgreSQL's plan of ``sql`` for any parameters: the one it keeps once psycopg has
    prepared a statement run five times (PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN))."""
    from psycopg.sql import Literal

    conn = reader._conn.raw  # type: ignore[attr-defined]
    numbers = iter(range(1, len(params) + 1))
    conn.execute(f"PREPARE asked AS {re.sub(r'[?]', lambda _: f'${next(numbers)}', sql)}")
    try:
        args = ", ".join(Literal(p).as_string(conn) for p in params)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        return conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE asked({args})").fetchone()[0]
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE asked")


def _scans(reader: IndexReader, sql: str, params: Sequence[object]) -> list[str]:
    """The steps of ``sql``'s plan that read every instance or edge row, in either engine."""
    if reader.postgres:
        # A list of UIDs: on 2,000 rows the generic plan of ``= ANY`` rightly scans (it
        # guesses ten UIDs, a tenth of this table); its plan for the UIDs given is checked.
        plan = (
            reader.rows(f"EXPLAIN (FORMAT JSON) {sql}", params)[0][0]
            if any(isinstance(p, list) for p in params)
            else _generic_plan(reader, sql, params)
        )
        nodes, scans = [plan[0]["Plan"]], []
        while nodes:
            node = nodes.pop()
            nodes.extend(node.get("Plans", ()))
            keyed = "Index Cond" in node or node["Node Type"] == "Bitmap Heap Scan"
            if node.get("Relation Name") in ("instance_rows", "edge_rows") and not keyed:
                scans.append(f"{node['Node Type']} on {node['Relation Name']}")
        return scans
    plan = [row[3] for row in reader.rows(f"EXPLAIN QUERY PLAN {sql}", params)]
    return [step for step in plan if step.startswith("SCAN ") and step != "SCAN g"]


def test_queries_that_select_by_uid_seek_an_index(tmp_path: Path, index_at: Path | str) -> None:
    """PostgreSQL's views spell UIDs out by lookups, which no index covers: a query that
    selects a study, series or frame of reference names its number (``rows.UID_NUMBER``).
    Each query asked while answering by UID seeks an index, in both engines; a scan
    would give the same answers, a million rows later. On PostgreSQL the plan checked is
    the one kept for a statement run often (it fails with a listing's LIMIT as a
    parameter: that plan read the archive in UID order to find a series' rows)."""
    from dicomfs.index import people
    from dicomfs.index.pages import listing_page

    writer = IndexWriter(index_at)
    others = [  # so that PostgreSQL plans as for an archive, not for tables of five rows
        Instance(
            sop_class_uid=CT, sop_instance_uid=f"1.4.{n}", series_uid=f"1.3.{n % 40}",
            study_uid=f"1.2.{n % 10}", frame_of_reference_uid=f"1.1.{n % 500}", modality="CT",
            edges=[Edge(f"1.4.{n + 1}", Level.INSTANCE, Role.IMAGE, "SourceImageSequence")],
        )
        for n in range(2000)
    ]  # fmt: skip
    files = [
        FileResult(make_file(tmp_path, f"{inst.sop_instance_uid}.dcm", b"x"), inst)
        for inst in [*_plan_and_images(), *others]
    ]
    writer.apply(files)
    if writer.postgres:
        writer._conn.execute("ANALYZE")
    writer.close()
    reader = IndexReader(index_at)
    asked: list[tuple[str, Sequence[object]]] = []
    rows = reader.rows

    def recorded(sql: str, params: Sequence[object] = ()) -> list[object]:
        asked.append((sql, params))
        return rows(sql, params)

    reader.rows = recorded  # type: ignore[method-assign]
    try:
        assert _answers(reader)[4] == ["1.6.1", "1.6.2", "1.6.3"]
        asked.pop(0)  # all_instances reads them all, as it should
        listed = listing_page(reader, None, 100, series_uid="1.6.1")
        assert listing_page(reader, "1.5.0", series_uid="1.6.1") == listed[1:]
        grouped = people.series(reader, "", "1.7"), people.members(reader, "", "1.7", "1.6.1")
        assert [r.sop_uid for r in listed] == ["1.5.0", "1.5.1"] and all(grouped)
        assert len(asked) == 11
        reader.rows = rows  # type: ignore[method-assign]
        for sql, params in asked:
            assert not _scans(reader, sql, params), sql
    finally:
        reader.close()


def _unreadable(path: str) -> str:
    raise OSError(f"{path} unreadable")


def test_study_series_and_frame_uids_are_stored_once(tmp_path: Path, writer: IndexWriter) -> None:
    """A UID shared by many rows is one row of ``uids``, also across batches and rollbacks."""
    files = [
        FileResult(make_file(tmp_path, f"{n}.dcm", b"%d" % n), ct(f"1.5.{n}", study_uid="1.7"))
        for n in range(5)
    ]
    writer.apply(files[:3])
    writer.apply(files[3:])
    # A batch that fails after numbering a new UID: a copy of 1.5.1, whose digest fails.
    copy = FileResult(make_file(tmp_path, "copy.dcm", b"c"), ct("1.5.1", series="1.6.new"))
    with pytest.raises(OSError, match="unreadable"):
        writer.apply([copy], digest=_unreadable)
    writer.apply([FileResult(make_file(tmp_path, "x.dcm", b"x"), ct("1.5.10", series="1.6.new"))])
    assert sorted(r[0] for r in writer.rows("SELECT uid FROM uids")) == [
        "",
        "1.2.3.4",
        "1.6.new",
        "1.7",
    ]
    assert [r.series_uid for r in writer.series_instances("1.6.new")] == ["1.6.new"]


def test_rewrite_in_place_keeps_serving(tmp_path: Path, writer: IndexWriter) -> None:
    a = make_file(tmp_path, "a.dcm", b"v1")
    b = make_file(tmp_path, "b.dcm", b"v1")
    writer.apply([FileResult(a, ct("1.2.1")), FileResult(b, ct("1.2.1"))], digest=digest)
    a2 = make_file(tmp_path, "a.dcm", b"v2 longer")
    writer.apply([FileResult(a2, ct("1.2.1"))], digest=digest)
    served = writer.instance("1.2.1")
    assert served is not None and served.file.path == a.path and served.file.size == a2.size
    [conflict] = writer.conflicts()
    assert conflict.kind == "conflict" and conflict.kept_path == a.path


def test_one_batch_of_rewrites_duplicates_and_odd_uids_is_stored_as_file_by_file(
    tmp_path: Path, writer: IndexWriter
) -> None:
    """What PostgreSQL's writer asks ahead for a whole batch (``index.lookahead``) must
    answer as the questions asked file by file would: a path twice in one batch, a UID
    that moves from one file to another, copies met in the same batch, a NUL in a UID."""
    old = make_file(tmp_path, "old.dcm", b"old")
    writer.apply([FileResult(old, ct("1.2.9"))], digest=digest)
    a1 = make_file(tmp_path, "a.dcm", b"v1")
    moved = make_file(tmp_path, "old.dcm", b"now another uid")  # 1.2.9 leaves old.dcm ...
    c = make_file(tmp_path, "c.dcm", b"takes 1.2.9")  # ... and arrives here, later
    d = make_file(tmp_path, "d.dcm", b"v1")
    nul = make_file(tmp_path, "nul.dcm", b"nul")
    a2 = make_file(tmp_path, "a.dcm", b"v2, longer")
    stats = writer.apply(
        [
            FileResult(a1, ct("1.2.1")),
            FileResult(moved, ct("1.2.8")),
            FileResult(c, ct("1.2.9")),
            FileResult(d, ct("1.2.1")),
            FileResult(nul, ct("1.2.\x007")),
            FileResult(a2, ct("1.2.1")),
        ],
        digest=digest,
    )
    assert stats.indexed == 6
    served = {u: writer.instance(u) for u in ("1.2.1", "1.2.8", "1.2.9", "1.2.\x007")}
    assert {u: i.file.path if i else None for u, i in served.items()} == {
        "1.2.1": a1.path,  # the first copy in the batch, rewritten in place
        "1.2.8": old.path,
        "1.2.9": c.path,
        "1.2.\x007": nul.path,
    }
    row = served["1.2.1"]
    assert row is not None and row.file.size == a2.size
    [conflict] = writer.conflicts()
    assert (conflict.kept_path, conflict.other_path) == (a1.path, d.path)
    files = writer.rows("SELECT count(*), count(DISTINCT path), min(id) > 0 FROM files")
    assert tuple(files[0]) == (5, 5, True)
    serving = writer.rows("SELECT count(*) FROM instance_rows WHERE serving = 1")
    assert serving[0][0] == 4


def test_file_turning_into_garbage_releases_its_uid(tmp_path: Path, writer: IndexWriter) -> None:
    a = make_file(tmp_path, "a.dcm", b"x")
    writer.apply([FileResult(a, ct("1.2.1"))])
    writer.apply([FileResult(a, Rejection(RejectKind.TRUNCATED, "ended at 10 of 20 bytes"))])
    assert writer.instance("1.2.1") is None
    [row] = writer.rejected()
    assert (row.path, row.kind) == (a.path, "truncated")
    assert writer.status().rejected_files == 1


def test_edges_forward_and_reverse_follow_the_serving_copy(
    tmp_path: Path, writer: IndexWriter
) -> None:
    plan = Instance(
        sop_class_uid=PLAN,
        sop_instance_uid="1.9.1",
        modality="RTPLAN",
        edges=[
            Edge("1.9.2", Level.INSTANCE, Role.STRUCTURE_SET, "ReferencedStructureSetSequence[0]"),
            Edge(
                "1.9.3",
                Level.INSTANCE,
                Role.DOSE,
                "ReferencedDoseSequence[0]",
                qualifiers=(("beam", "1"),),
            ),
        ],
    )
    p = make_file(tmp_path, "plan.dcm", b"plan")
    writer.apply([FileResult(p, plan)])
    fwd = writer.forward_edges("1.9.1")
    assert [(r.edge.target_uid, r.edge.role) for r in fwd] == [
        ("1.9.2", Role.STRUCTURE_SET),
        ("1.9.3", Role.DOSE),
    ]
    assert fwd[1].edge.qualifier("beam") == "1"
    assert [r.src_uid for r in writer.reverse_edges("1.9.3")] == ["1.9.1"]
    writer.apply([], removed=[p.path])
    assert writer.reverse_edges("1.9.3") == [] and writer.forward_edges("1.9.1") == []


def test_reader_is_read_only_and_one_per_thread(tmp_path: Path, writer: IndexWriter) -> None:
    files = [
        FileResult(make_file(tmp_path, f"f{i}.dcm", b"%d" % i), ct(f"1.3.{i}")) for i in range(50)
    ]
    writer.apply(files)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            reader = IndexReader(writer.target)
            for _ in range(20):
                assert len(reader.series_instances("1.2.3.4")) == 50
            with pytest.raises(database.errors(), match=r"read-only|readonly"):
                reader._conn.execute("DELETE FROM files")
            reader.close()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    # The writer keeps writing while readers read (WAL).
    writer.apply([FileResult(make_file(tmp_path, "late.dcm", b"late"), ct("1.3.99", series="9"))])
    for t in threads:
        t.join()
    assert errors == []


def test_missing_index_and_foreign_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(IndexUnavailableError, match="dicomfs index"):
        IndexReader(tmp_path / "nope.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.commit()
    with pytest.raises(IndexCorruptError):
        IndexReader(other)
    with pytest.raises(IndexCorruptError):
        IndexWriter(other)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexCorruptError):
        IndexReader(garbage)


def test_non_utf8_paths_round_trip(tmp_path: Path, writer: IndexWriter) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.dcm")
    with open(raw, "wb") as handle:
        handle.write(b"x")
    st = os.stat(raw)
    fs = FileStat(os.fsdecode(raw), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, 0, 0, 0o644)
    writer.apply([FileResult(fs, ct("1.4.1"))])
    served = writer.instance("1.4.1")
    assert served is not None and os.fsencode(served.file.path) == raw
    assert os.fsdecode(raw) in writer.file_keys()


def test_status_counts_objects_capped_while_parsing(writer: IndexWriter, tmp_path: Path) -> None:
    """D6: a capped object is indexed and counted; `dicomfs status` and status.json say so."""
    import json
    import subprocess
    import sys

    from dicomfs.dicom.records import EDGES_CAPPED
    from dicomfs.view.listing import cat_bytes
    from dicomfs.view.tree import View

    capped = Instance(
        sop_class_uid=CT, sop_instance_uid="1.9.1", series_uid="1.9", modality="CT",
        flags=["vr_mismatch", f"{EDGES_CAPPED}:more than 20000 references"],
    )  # fmt: skip
    other = Instance(
        sop_class_uid=CT, sop_instance_uid="1.9.2", series_uid="1.9", modality="CT",
        flags=["edges_cappedness"],  # only the exact flag counts
    )  # fmt: skip
    writer.apply(
        [
            FileResult(make_file(tmp_path, "a.dcm", b"a"), capped),
            FileResult(make_file(tmp_path, "b.dcm", b"b"), other),
        ]
    )
    assert writer.status().capped_objects == 1
    view = View(lambda: IndexReader(writer.target), dir_uid=0, dir_gid=0, mount_time_ns=0)
    assert json.loads(cat_bytes(view, "/.dicomfs/status.json"))["capped_objects"] == 1
    done = subprocess.run(
        [sys.executable, "-m", "dicomfs", "status", "--index", str(writer.target)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "capped        1 objects hit a size bound" in done.stdout


def test_postgres_tables_have_the_columns_of_sqlite(
    tmp_path: Path, pg_cluster: PrivateCluster
) -> None:
    """``postgres.pg_ddl`` is ``schema.DDL`` with types substituted: same tables, same columns
    in the same order (edge_rows' ``id`` standing for SQLite's rowid), same views."""
    lite, pg = IndexWriter(tmp_path / "i.sqlite"), IndexWriter(pg_cluster.database())
    try:
        names = [
            r[0]
            for r in lite.rows(
                "SELECT name FROM sqlite_master WHERE type IN "
                "('table', 'view') AND name NOT LIKE 'details_fts%'"
            )
        ]
        assert {"files", "instance_rows", "instances", "edge_rows", "edges"} <= set(names)
        for name in names:
            expected = [r[1] for r in lite.rows(f"PRAGMA table_info({name})")]
            found = [
                r[0]
                for r in pg.rows(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "ORDER BY ordinal_position",
                    (name,),
                )
            ]
            assert found == (["id", *expected] if name == "edge_rows" else expected), name
    finally:
        lite.close()
        pg.close()


def test_a_batch_cut_off_by_a_lost_connection_leaves_nothing_and_is_applied_again(
    tmp_path: Path, pg_cluster: PrivateCluster
) -> None:
    """The server ends the writer's session in the middle of a batch: the batch is rolled
    back whole, and the same writer connects again for the next one (issue 17)."""
    import psycopg

    url = pg_cluster.database()
    writer = IndexWriter(url)
    try:
        a = make_file(tmp_path, "a.dcm", b"a")
        writer.apply([FileResult(a, ct("1.2.1"))], digest=digest)
        backend = writer._conn.raw.info.backend_pid  # type: ignore[attr-defined]

        def cut_off(path: str) -> str:  # called inside the batch, for the duplicate
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            return digest(path)

        batch = [
            FileResult(make_file(tmp_path, "b.dcm", b"b"), ct("1.2.2")),
            FileResult(make_file(tmp_path, "copy.dcm", b"a"), ct("1.2.1")),
            FileResult(make_file(tmp_path, "c.dcm", b"c"), ct("1.2.3")),
        ]
        with pytest.raises(psycopg.OperationalError):
            writer.apply(batch, digest=cut_off)
        reader = IndexReader(url)
        assert [r.sop_uid for r in reader.all_instances()] == ["1.2.1"]  # nothing of the batch
        stats = writer.apply(batch, digest=digest)  # a new session, the whole batch
        assert (stats.indexed, stats.benign_duplicates) == (3, 1)
        assert [r.sop_uid for r in reader.all_instances()] == ["1.2.1", "1.2.2", "1.2.3"]
        reader.close()
    finally:
        writer.close()


def test_readers_and_the_writer_outlive_a_server_restart(tmp_path: Path) -> None:
    """A restart of the database server between statements costs no reader or writer an
    error: each connects again, once, and carries on (a cluster of its own: all its
    connections are cut)."""
    from pg_helpers import PrivateCluster as Cluster

    cluster = Cluster().start()
    try:
        url = cluster.database()
        writer = IndexWriter(url)
        writer.apply([FileResult(make_file(tmp_path, "a.dcm", b"a"), ct("1.2.1"))])
        reader = IndexReader(url)
        assert reader.instance("1.2.1") is not None
        cluster.restart()
        assert reader.instance("1.2.1") is not None  # connected again
        writer.apply([FileResult(make_file(tmp_path, "b.dcm", b"b"), ct("1.2.2"))])
        assert [r.sop_uid for r in reader.all_instances()] == ["1.2.1", "1.2.2"]
        with pytest.raises(database.errors(), match=r"read-only|readonly"):
            reader._conn.execute("DELETE FROM files")  # still a read-only session
        reader.close()
        writer.close()
    finally:
        cluster.stop()


def test_the_roles_of_the_readme_read_and_write_as_it_says(
    tmp_path: Path, pg_cluster: PrivateCluster
) -> None:
    """README "Several hosts", step by step: a writer role owning the database creates the
    tables; the mount role, given only what the README grants, reads, searches and
    counts, and a writer opened with it says which role it needs."""
    import psycopg

    from dicomfs.index.search import Query, find

    tag = f"{os.getpid()}_{tmp_path.name}".replace("-", "_").lower()
    ingest, mount, name = f"ingest_{tag}", f"mount_{tag}", f"roles_{tag}"
    admin_url = pg_cluster.url()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {ingest} LOGIN")
        admin.execute(f"CREATE ROLE {mount} LOGIN")
        admin.execute(f"CREATE DATABASE {name} OWNER {ingest}")
    with psycopg.connect(pg_cluster.url(name), autocommit=True) as admin:
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {mount}")
        admin.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {ingest} IN SCHEMA public "
            f"GRANT SELECT ON TABLES TO {mount}"
        )
    writer = IndexWriter(pg_cluster.url(name, user=ingest))  # makes the tables
    writer.apply([FileResult(make_file(tmp_path, "a.dcm", b"a"), ct("1.2.1"))])
    writer.close()
    as_mount = pg_cluster.url(name, user=mount)
    reader = IndexReader(as_mount)
    try:
        assert reader.instance("1.2.1") is not None
        assert reader.status().instances == 1
        assert [h.uid for h in find(reader, Query(level="instance"))] == ["1.2.1"]
    finally:
        reader.close()
    with pytest.raises(IndexUnavailableError, match="mount host's role"):
        IndexWriter(as_mount)
