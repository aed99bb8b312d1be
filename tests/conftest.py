"""Shared fixtures: real data sets on disk and indexes built from them by the real scanner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pg_helpers import PgError, PrivateCluster, postgres_missing

from dicomfs.index import IndexReader, IndexWriter

if TYPE_CHECKING:
    from dicomfs.live.scan import ScanReport

# Real RT exports written by clinical and research software, kept in the
# repository (tests/data/real/README.md gives their origin and licences).
REAL_DATA = Path(__file__).resolve().parent / "data" / "real"


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from dicomfs.demo.patients import write_demo

    return write_demo(tmp_path_factory.mktemp("demo"), patients=2, hostile=True)


# The engines an index may live in (issue 17): tests of the index, the graph and
# the view run on each through ``index_at`` or their own parametrized fixtures.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL cluster for the whole session (``pg_helpers``), never the system's.

    In CI a cluster that cannot start fails the tests that need it; elsewhere they skip.
    """
    problem = postgres_missing()
    cluster = None
    if problem is None:
        try:
            cluster = PrivateCluster().start()
        except PgError as exc:
            problem = f"cannot start a private PostgreSQL cluster: {exc}"
    if cluster is None:
        assert problem is not None
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL tests must run in CI: {problem}")
        pytest.skip(problem)
    yield cluster
    cluster.stop()


def new_index(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where a new, empty index lives: a file under ``tmp_path``, or a new database."""
    if backend == "sqlite":
        return tmp_path / "idx" / "index.sqlite"
    cluster: PrivateCluster = request.getfixturevalue("pg_cluster")
    return cluster.database()


@pytest.fixture(params=BACKENDS)
def index_at(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A new index in each engine: the test runs once per backend."""
    return new_index(request.param, tmp_path, request)


def index_folders(path: Path | str, roots: Sequence[Path], workers: int) -> ScanReport:
    """Index ``roots`` into the index at ``path`` with the real scanner, as ``dicomfs index``."""
    from dicomfs.live.scan import reconcile

    writer = IndexWriter(path)
    try:
        return reconcile(writer, roots, workers=workers)
    finally:
        writer.close()


@pytest.fixture(scope="session")
def build_index() -> Callable[[Path | str, Sequence[Path], int], ScanReport]:
    """``index_folders`` for index fixtures in every test folder (with ``workers`` > 1, a pool)."""
    return index_folders


@pytest.fixture
def open_reader() -> Iterator[Callable[[Path | str], IndexReader]]:
    """Opens readers on index files; every reader opened is closed when the test ends."""
    opened: list[IndexReader] = []

    def open_(path: Path | str) -> IndexReader:
        reader = IndexReader(path)
        opened.append(reader)
        return reader

    yield open_
    for reader in opened:
        reader.close()


@pytest.fixture(scope="session")
def demo_index(demo_set, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("demo-index") / "index.sqlite"
    index_folders(path, [demo_set.root], workers=2)
    return path


@pytest.fixture(scope="session")
def real_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the real exports (tests may not write into shared/)."""
    dest = tmp_path_factory.mktemp("real") / "real"
    shutil.copytree(REAL_DATA, dest)
    return dest


@pytest.fixture(scope="session")
def real_index(real_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("real-index") / "index.sqlite"
    index_folders(path, [real_copy], workers=1)
    return path


@pytest.fixture(scope="session")
def demo_index_pg(demo_set, pg_cluster: PrivateCluster) -> str:  # type: ignore[no-untyped-def]
    """``demo_index`` in a database of the private cluster."""
    url = pg_cluster.database()
    index_folders(url, [demo_set.root], workers=2)
    return url


@pytest.fixture(scope="session")
def real_index_pg(real_copy: Path, pg_cluster: PrivateCluster) -> str:
    """``real_index`` in a database of the private cluster."""
    url = pg_cluster.database()
    index_folders(url, [real_copy], workers=1)
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn, for fixtures that pick their index by it."""
    return str(request.param)


def indexed(request: pytest.FixtureRequest, backend: str, name: str) -> Path | str:
    """The session index ``name`` (demo_index, real_index) in ``backend``."""
    return request.getfixturevalue(name if backend == "sqlite" else f"{name}_pg")  # type: ignore[no-any-return]


@pytest.fixture
def demo_reader(demo_index: Path, open_reader: Callable[[Path], IndexReader]) -> IndexReader:
    return open_reader(demo_index)


@pytest.fixture
def real_reader(real_index: Path, open_reader: Callable[[Path], IndexReader]) -> IndexReader:
    return open_reader(real_index)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the system users and groups the permission tests created."""
    from fuse_helpers import remove_test_accounts

    remove_test_accounts()
