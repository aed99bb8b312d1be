"""A list too long for memory: rows added in any order, read back sorted (an external sort).

A first index of ten million files has ten million files to parse, and
``reconcile`` hands them to the parser oldest first (the copy that arrived
first serves a duplicated UID, reliability.md C2). Held as a Python list,
that to-do list alone was 2.7 GB at 10M (issue 13). Here at most
``run_rows`` rows stay in memory; past that each full list is sorted and
written to a run file, and reading merges the runs (``heapq.merge``), so
memory holds one block per run, whatever the count.

Run files are made in the index's folder, not in ``/tmp``: a department's
``/tmp`` may be a RAM disk, and the index's folder is where dicomfs is known
to have room to write. They have no name (``tempfile.TemporaryFile``:
``O_TMPFILE``, or a file unlinked as soon as it is made), so a process
killed half-way leaves nothing behind to clean up. Rows are written with
``marshal``: the files are this process's own, never read from elsewhere,
and ``marshal`` keeps ``str`` with the surrogate escapes of undecodable
file names.
"""

from __future__ import annotations

import heapq
import marshal
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, Generic, TypeVar

from dicomfs.errors import IndexUnavailableError

__all__ = ["BLOCK_ROWS", "MAX_RUNS", "RUN_ROWS", "Spool", "chunks"]

# Rows in memory before a run is written: about 20 MB of (flag, mtime, path).
RUN_ROWS = 100_000
# Rows per marshal record, so a merge holds one block of each run.
BLOCK_ROWS = 1_000
# Past this many runs they are merged into one, so open files stay few (at
# ten million rows there are 100 runs; the merge keeps a billion in reach).
MAX_RUNS = 64

Row = TypeVar("Row", bound=Any)


class Spool(Generic[Row]):
    """Rows kept in memory up to ``run_rows``, in sorted run files past that."""

    def __init__(
        self,
        folder: str,
        *,
        run_rows: int | None = None,
        block_rows: int | None = None,
        max_runs: int | None = None,
    ) -> None:
        self._folder = folder
        # Read here, not bound as defaults, so a test can make every spool small.
        self._run_rows = run_rows or RUN_ROWS
        self._block_rows = block_rows or BLOCK_ROWS
        self._max_runs = max(2, max_runs or MAX_RUNS)
        self._rows: list[Row] = []
        self._runs: list[BinaryIO] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __enter__(self) -> Spool[Row]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def runs(self) -> int:
        """Run files on disk now (0 while every row fits in memory)."""
        return len(self._runs)

    def add(self, row: Row) -> None:
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self._run_rows:
            self._rows.sort()
            self._runs.append(self._write(self._rows))
            self._rows = []
            if len(self._runs) >= self._max_runs:
                merged = self._write(heapq.merge(*map(self._read, self._runs)))
                self._close_runs()
                self._runs = [merged]

    def __iter__(self) -> Iterator[Row]:
        """Every row added, in sorted order; adding more after this is not supported."""
        self._rows.sort()
        if not self._runs:
            return iter(self._rows)
        return heapq.merge(self._rows, *map(self._read, self._runs))

    def close(self) -> None:
        self._rows = []
        self._close_runs()

    def _close_runs(self) -> None:
        for handle in self._runs:
            handle.close()
        self._runs = []

    def _write(self, rows: Iterable[Row]) -> BinaryIO:
        try:
            handle = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115 (kept: a run)
            try:
                for block in chunks(rows, self._block_rows):
                    marshal.dump(block, handle)
                handle.flush()
            except BaseException:
                handle.close()
                raise
        except OSError as exc:
            raise IndexUnavailableError(
                f"cannot write the list of files to index beside the index, in {self._folder}: "
                f"{exc.strerror} (a first index needs about 100 bytes per file there "
                "for the time it runs)"
            ) from exc
        return handle

    @staticmethod
    def _read(handle: BinaryIO) -> Iterator[Row]:
        handle.seek(0)
        while True:
            try:
                block = marshal.load(handle)
            except EOFError:
                return
            yield from block


def chunks(items: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """Lists of ``size`` items in order, the last maybe shorter (3.12's ``itertools.batched``)."""
    chunk: list[Row] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
