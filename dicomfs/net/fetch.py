"""Fetch exactly what a plan's package is missing from a PACS, at the lowest level it answers.

dicomfs knows each missing object by SOP Instance UID and, usually, the
study and series the referencing object says it lives in (graph.MissingRef).
So instead of pulling whole studies:

1. When the PACS answers IMAGE-level C-FIND, each missing object is found
   by its UID and retrieved alone (C-GET, or C-MOVE to a temporary
   receiver of ours). When every instance of a series is needed, the series
   is retrieved in one request instead of one per instance.
2. When it answers only STUDY/SERIES level (many do), the smallest series
   that holds the object is retrieved: the series the reference names;
   otherwise the series of the expected modality (structure set ->
   RTSTRUCT, image -> CT/MR/PT ...) in the study of the referencing object,
   smallest first, one at a time, stopping as soon as the UID arrives.
   Series already complete in the index are never retrieved again.
3. A plan that names no structure set at all (a study-level missing entry)
   gets the RTSTRUCT series of its study listed as candidates; they are
   retrieved only with ``candidates=True``, because nothing says which one
   the plan was made on and the package will still not name it.

4. Unless ``forward_only``, the reverse half: doses, RT images, records and
   plans name the plan, not the other way round, so the RTDOSE, RTIMAGE,
   RTRECORD, RTPLAN (and REG) series of the studies the package lives in
   are looked through (``fetch_reverse``); everything retrieved is indexed,
   the package keeps what names the plan, and the report lists the rest as
   retrieved only to be looked at.

Objects land in the store folder through the same atomic writer as the
receiver and are indexed after each round; a round's arrivals can reveal
new needs (a structure set names its CT slices, a dose its structure set)
and new studies to search, so rounds repeat until nothing new arrives.

This module runs those rounds; the pieces are ``fetch_needs`` (what is
missing, read from the index), ``fetch_resolve`` (where to look for each
need, at which level), ``fetch_reverse`` (what names the plan),
``fetch_session`` (asking the PACS, C-GET or C-MOVE) and ``fetch_records``
(the options and the report).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dicomfs.index import IndexReader, IndexWriter
from dicomfs.live.scan import reconcile
from dicomfs.net.fetch_needs import ROLE_MODALITIES, missing_for, needs_for, plans_to_fetch
from dicomfs.net.fetch_records import FetchOptions, FetchReport, Method, Outcome, SeriesInfo
from dicomfs.net.fetch_resolve import Resolver
from dicomfs.net.fetch_reverse import (
    ReverseSearch,
    classify,
    member_uids,
    registration_needs,
    search_studies,
)
from dicomfs.net.fetch_session import MoveTarget, PacsSession
from dicomfs.net.pacs import PacsAddress
from dicomfs.net.qr import Collector, Peer, ProgressFn
from dicomfs.net.store import StoreWriter

__all__ = [
    "ROLE_MODALITIES",
    "FetchOptions",
    "FetchReport",
    "Method",
    "Outcome",
    "SeriesInfo",
    "fetch",
    "index_store",
    "missing_for",
    "plans_to_fetch",
    "stderr_progress",
]

log = logging.getLogger(__name__)


def stderr_progress(message: str) -> None:
    print(f"fetch: {message}", file=sys.stderr, flush=True)


def fetch(
    pacs: PacsAddress,
    plan_uids: Sequence[str] | None,
    options: FetchOptions,
    progress: ProgressFn = stderr_progress,
) -> FetchReport:
    """Retrieve what the plans (None: every plan with something missing) miss, then index it.

    Unless ``options.forward_only``, also retrieve what names the plans (see
    ``fetch_reverse``); the PACS is then asked even when nothing is missing.

    Raises PacsError when the PACS cannot be reached or refuses us, and the
    index errors of IndexReader/IndexWriter; a missing object the PACS does
    not have is an outcome, not an error.
    """
    plans = plans_to_fetch(options.index, plan_uids)
    report = FetchReport(plans=plans)
    report.still_missing = missing_for(options.index, plans)
    if not plans or (options.forward_only and report.complete):
        progress("nothing is missing; the PACS was not asked")
        return report
    before = member_uids(options.index, plans)
    options.store.mkdir(parents=True, exist_ok=True)
    collector = Collector()
    writer = StoreWriter(options.store, layout=options.layout, on_stored=collector.add)
    mover = MoveTarget(options, pacs, collector)
    with contextlib.ExitStack() as stack:
        stack.callback(mover.stop)
        progress(f"asking {pacs} as {options.our_ae}")
        peer = stack.enter_context(
            Peer(pacs, our_ae=options.our_ae, writer=writer, timeout=options.timeout)
        )
        session = PacsSession(peer, options, collector, mover, report, progress)
        _rounds(session, plans)
    report.stored = collector.items()
    report.still_missing = missing_for(options.index, plans)
    if not options.forward_only:
        classify(options.index, plans, before, report)
    return report


def _rounds(session: PacsSession, plans: list[str]) -> None:
    """Forward needs, then the reverse search, round after round until nothing new arrives."""
    options, progress, collector = session.options, session.progress, session.collector
    reverse = None if options.forward_only else ReverseSearch(session)
    attempted: set[tuple[str, str]] = set()
    for round_number in range(1, options.max_rounds + 1):
        needs = needs_for(options.index, plans, attempted)
        if reverse is not None:
            seen = attempted | {(n.ref.level.value, n.uid) for n in needs}
            needs += registration_needs(options.index, plans, seen)
        attempted.update((n.ref.level.value, n.uid) for n in needs)
        mark = len(collector)
        pending = False
        reader = IndexReader(options.index)
        try:
            if needs:
                progress(f"round {round_number}: {len(needs)} missing reference(s) to look for")
                Resolver(session, reader).resolve(needs)
            if reverse is not None:
                pending = reverse.run(reader, search_studies(reader, plans))
        finally:
            reader.close()
        arrived = collector.since(mark)
        if arrived:
            fresh = sum(not s.duplicate for s in arrived)
            progress(f"indexing {fresh} new file(s) in {options.store}")
            index_store(options.index, options.store)
        elif not pending:
            break


def index_store(index: Path | str, store: Path) -> None:
    """Bring the index level with the store folder (the daemon may also be watching it)."""
    writer = IndexWriter(index)
    try:
        reconcile(writer, [store], workers=1)
    finally:
        writer.close()
