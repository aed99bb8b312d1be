"""Shared fixtures: real data sets on disk and indexes built from them by the real scanner."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.index import IndexReader, IndexWriter

# Real RT exports written by clinical and research software, kept in the
# repository (tests/data/real/README.md gives their origin and licences).
REAL_DATA = Path(__file__).resolve().parent / "data" / "real"


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from dicomfs.demo.patients import write_demo

    return write_demo(tmp_path_factory.mktemp("demo"), patients=2, hostile=True)


@pytest.fixture(scope="session")
def demo_index(demo_set, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    from dicomfs.live.scan import reconcile

    path = tmp_path_factory.mktemp("demo-index") / "index.sqlite"
    writer = IndexWriter(path)
    reconcile(writer, [demo_set.root], workers=2)
    writer.close()
    return path


@pytest.fixture(scope="session")
def real_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the real exports (tests may not write into shared/)."""
    dest = tmp_path_factory.mktemp("real") / "real"
    shutil.copytree(REAL_DATA, dest)
    return dest


@pytest.fixture(scope="session")
def real_index(real_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dicomfs.live.scan import reconcile

    path = tmp_path_factory.mktemp("real-index") / "index.sqlite"
    writer = IndexWriter(path)
    reconcile(writer, [real_copy], workers=1)
    writer.close()
    return path


@pytest.fixture
def demo_reader(demo_index: Path) -> Iterator[IndexReader]:
    reader = IndexReader(demo_index)
    yield reader
    reader.close()


@pytest.fixture
def real_reader(real_index: Path) -> Iterator[IndexReader]:
    reader = IndexReader(real_index)
    yield reader
    reader.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the system users and groups the permission tests created."""
    from fuse_helpers import remove_test_accounts

    remove_test_accounts()
