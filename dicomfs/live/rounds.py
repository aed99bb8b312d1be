"""One round of looks: due paths in, parsed files and removals written to the index in batches.

Every queued path is a question about the disk, not a verdict taken from the
event: "look at this path now". A look that finds the file gone removes it,
a regular file whose change key matches the index is skipped (so repeated
events cause no churn, A9), and anything else is parsed once it has settled
(``pending.settled``, B1); one that has not is queued again. A symlink,
FIFO, socket or device is recorded as rejected from its ``lstat``, never
opened nor followed, exactly as the scan records it (``scan.special_result``,
A11): a link created under a watched source produces IN_CREATE, which
arrives here as a look. A folder event walks the folder. Because a look
is idempotent, merging duplicate events and processing them in any order
gives the same index.

What the index has of a path is asked of the index itself, one indexed
lookup per look (``IndexReader.file_key``), and a folder is compared with
the index in path order (``sources.compare``): the daemon holds no
per-file structure between rounds, so its memory does not grow with the
archive (issue 13); a folder event with more than ``FOLDER_LOOK_LIMIT``
files to look at is left to a reconcile, whose lists go to disk. Parsing
goes to the daemon's parse workers (``scan.ParserPool``, kept between
rounds) for bursts; each batch is one ``IndexWriter.apply`` transaction.
Runs on the ingest worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomfs.dicom.records import ChangeKey, FileResult, FileStat, Rejection, RejectKind
from dicomfs.index import IndexWriter
from dicomfs.live import scan, sources
from dicomfs.live.pending import CREATED, DIR, FILE, Counters, Entry, PendingQueue, settled
from dicomfs.live.spool import chunks

log = logging.getLogger(__name__)

_GONE = (errno.ENOENT, errno.ENOTDIR)
# Paths one folder event may add to a round before the folder is left to a
# reconcile: about 10 MB of paths.
FOLDER_LOOK_LIMIT = 50_000


@dataclass(slots=True)
class _Round:
    """The index a round writes to, and what its looks decided."""

    writer: IndexWriter
    to_parse: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    specials: dict[str, FileResult] = field(default_factory=dict)  # recorded without a parse


class Looker:
    """Looks at the paths of a round and writes what changed, batch by batch."""

    def __init__(
        self,
        queue: PendingQueue,
        counters: Counters,
        roots: Sequence[str],
        *,
        settle: float,
        batch_size: int,
        workers: int,
        pool: scan.ParserPool | None = None,
    ) -> None:
        self._queue = queue
        self.counters = counters
        self.roots = roots
        self.settle = settle
        self.batch_size = batch_size
        self.workers = workers
        self.pool = pool
        # Set by the ingest while its last reconcile raised the mass-loss alarm
        # (or a source folder is missing): a vanished file is then kept, as the
        # reconcile keeps it. Otherwise reads through the mount, each of which
        # has the file looked at again (C5), would de-index an unmounted
        # volume one file at a time.
        self.keep_vanished = False

    def run_round(self, entries: list[tuple[str, Entry]], writer: IndexWriter) -> None:
        """Look at every due path, then parse and write, batch by batch."""
        work = _Round(writer)
        # Sorted by components, a folder's subfolders follow it directly: each
        # is walked with the folder and skipped here.
        dirs = sorted(
            (p for p, entry in entries if entry.kind == DIR), key=lambda p: p.split(os.sep)
        )
        walked: list[str] = []
        for path in dirs:
            if not scan.is_under(path, walked[-1:]):
                self._look_dir(path, work)
                walked.append(path)
        for path, entry in entries:
            if entry.kind != DIR:
                self._look_file(path, entry, work)
        self._parse_and_apply(work)

    # -- looks ---------------------------------------------------------------------

    def _lstat(self, path: str) -> os.stat_result | None:
        """lstat, or None when the path is gone; raises OSError when it is unknown (A7)."""
        self.counters.looks += 1
        try:
            return os.lstat(path)
        except OSError as exc:
            if exc.errno in _GONE:
                return None
            raise

    def _look_file(self, path: str, entry: Entry, work: _Round) -> None:
        try:
            st = self._lstat(path)
        except OSError as exc:
            log.warning("cannot look at %s (%s); leaving it as it is", path, exc.strerror)
            return
        if st is not None and scan.is_special(st.st_mode):
            special = FileStat.from_stat(path, st)
            self._consider_special(special, work.writer.file_key(path), work)
            return
        if st is None or not stat.S_ISREG(st.st_mode):
            # Gone, or a folder now sits there: the folder's own events walk it.
            if work.writer.file_key(path) is not None:
                work.removed.append(path)
            return
        if entry.kind == CREATED and st.st_nlink < 2:
            return  # a new, probably half-written file: its close event will come
        key = FileStat.from_stat(path, st).change_key
        self._consider(path, key, work.writer.file_key(path), entry.seen, work)

    def _consider(
        self,
        path: str,
        key: ChangeKey,
        indexed: ChangeKey | None,
        seen: tuple[int, int] | None,
        work: _Round,
    ) -> None:
        """``key`` is ``FileStat.change_key`` (size, mtime_ns, inode, mode, uid, gid, ctime);
        ``indexed`` the index's, None when the file is not indexed."""
        if indexed == key:
            self.counters.unchanged += 1
            return
        size, mtime_ns = key[0], key[1]
        if not settled(size, mtime_ns, seen, self.settle):
            self.counters.deferred += 1
            self._queue.requeue(FILE, path, (size, mtime_ns))
            return
        work.to_parse.append(path)

    def _consider_special(self, st: FileStat, indexed: ChangeKey | None, work: _Round) -> None:
        """A symlink, FIFO, socket or device: recorded as rejected unless the index has it so."""
        if indexed == st.change_key:
            self.counters.unchanged += 1
            return
        work.specials[st.path] = scan.special_result(st)

    def _look_dir(self, path: str, work: _Round) -> None:
        try:
            st = self._lstat(path)
        except OSError as exc:
            log.warning("cannot look at folder %s (%s); leaving it as it is", path, exc.strerror)
            return
        if any(scan.is_under(root, [path]) for root in self.roots):
            # A source root itself vanished or was moved: never de-index a whole
            # source on one event (A8); the reconcile applies the mass-loss rule.
            self._queue.request_reconcile(f"source folder {path} changed")
            return
        before = len(work.to_parse) + len(work.removed)
        if st is None or not stat.S_ISDIR(st.st_mode):
            for gone, _ in work.writer.file_keys_under(path + os.sep):
                work.removed.append(gone)
                if self._too_big(path, work, before):
                    return
            return
        unreadable: list[str] = []
        tally = sources.Tally()
        for found, seen, indexed in sources.compare(work.writer, path, unreadable, tally):
            if seen is None:
                if not scan.is_under(found, unreadable):
                    work.removed.append(found)
            else:
                self.counters.looks += 1
                if scan.is_special(seen.mode):
                    self._consider_special(seen, indexed, work)
                else:
                    self._consider(found, seen.change_key, indexed, None, work)
            if self._too_big(path, work, before):
                break
        self.counters.looks += tally.unchanged
        self.counters.unchanged += tally.unchanged

    def _too_big(self, folder: str, work: _Round, before: int) -> bool:
        """Past ``FOLDER_LOOK_LIMIT`` paths, a folder is left to a reconcile (issue 13).

        A folder of a million files moved into (or out of) a source arrives as
        one event; a round would hold all its paths at once. What was found so
        far is written by this round; the reconcile, which keeps its lists on
        disk, does the rest.
        """
        if len(work.to_parse) + len(work.removed) - before < FOLDER_LOOK_LIMIT:
            return False
        self._queue.request_reconcile(
            f"more than {FOLDER_LOOK_LIMIT} files changed at once in folder {folder}"
        )
        return True

    # -- parse and write -------------------------------------------------------------------

    def _parse_and_apply(self, work: _Round) -> None:
        """Parse in the pool for bursts; write each batch as soon as it is complete."""
        for specials in chunks(work.specials.values(), self.batch_size):
            self._apply(work, specials, [])
        batch: list[FileResult] = []
        removed = self._removable(work.removed)
        # A file looked at twice in one round (its own event and its folder's walk) is parsed once.
        to_parse = list(dict.fromkeys(work.to_parse))
        results = scan.parse_many(to_parse, self.workers, self.pool) if to_parse else iter(())
        for path, result in zip(to_parse, results, strict=True):
            self.counters.parsed += 1
            if result is None:
                # Vanished or no longer a regular file between the look and the open.
                if work.writer.file_key(path) is not None:
                    removed += self._removable([path])
            elif not self._retry_truncated(result):
                batch.append(result)
            if len(batch) >= self.batch_size:
                self._apply(work, batch, removed[: self.batch_size])
                del removed[: self.batch_size]
                batch = []
        while batch or removed:
            self._apply(work, batch, removed[: self.batch_size])
            del removed[: self.batch_size]
            batch = []

    def _removable(self, paths: list[str]) -> list[str]:
        """``paths`` once each, or none while vanished files are kept (``keep_vanished``)."""
        if not self.keep_vanished:
            return list(dict.fromkeys(paths))
        if paths:
            self.counters.kept += len(paths)
            log.warning(
                "keeping %d vanished file(s) in the index while the mass-loss alarm stands; "
                "the next reconcile decides",
                len(paths),
            )
        return []

    def _retry_truncated(self, item: FileResult) -> bool:
        """A truncated file that is still changing is being written: look again later.

        Only a file that stays truncated once stable is recorded as rejected (B1).
        """
        if not (isinstance(item.result, Rejection) and item.result.kind == RejectKind.TRUNCATED):
            return False
        path = item.stat.path
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and (
            (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) == item.stat.skip_key
            and settled(st.st_size, st.st_mtime_ns, None, self.settle)
        ):
            return False
        self.counters.deferred += 1
        self._queue.requeue(FILE, path, None)
        return True

    def _apply(self, work: _Round, batch: list[FileResult], removed: list[str]) -> None:
        """One transaction: the looks of later rounds see it through the index."""
        stats = work.writer.apply(batch, removed, digest=scan.file_digest)
        self.counters.batches += 1
        self.counters.indexed += stats.indexed
        self.counters.rejected += stats.rejected
        self.counters.removed += stats.removed
