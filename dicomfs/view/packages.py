"""Plan and object packages as the mount shows them, kept until ingest touches them (issue 13).

A package (``graph.package``: everything a plan needs, what it lacks, its
manifest) costs a dozen queries and a JSON document: about 6 ms. ``find
MNT/plans -maxdepth 2`` asks for the attributes of every plan folder's
entries, and ``missing.txt`` and ``manifest.json`` have the sizes of their
content, so at 2,000 plans that was 17 s on every run. Packages depend on
the index alone, so they are kept with the index's generation (a meta value
``IndexWriter.apply`` moves in every batch that writes), and with what they
were computed from (``IndexReader.recording``). When the generation moves,
a kept package stays valid if none of the batches since touched anything
it was computed from (``index.changes``): a receiver writing a batch every
few seconds no longer makes every plan's package be computed again. When
that cannot be told (the log rolled on, the index was rebuilt), it is
computed again, as before.

Two sizes of memory: whole packages (member rows, manifest bytes: up to a
few hundred KB each) are kept for the last ``PACKAGES_KEPT`` plans; the
sizes of their generated files and what they depend on (``Head``, about
3 KB) for ``HEADS_KEPT``, so a plan folder is listed without its package,
which is made again only when a file of it is read. An index without a generation
(written by an older dicomfs) keeps packages for the view's TTL only.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from dicomfs.errors import UnknownUidError
from dicomfs.index import Changes, Depends, IndexReader, InstanceRow, graph
from dicomfs.view.cache import TTLCache, VersionedCache
from dicomfs.view.names import member_name
from dicomfs.view.nodes import NotFound
from dicomfs.view.report import PLAN_FOLDERS, format_manifest, format_missing

_E = TypeVar("_E")
PACKAGES_KEPT = 64
HEADS_KEPT = 20_000  # about 3 KB each with what the package depends on
LISTINGS_KEPT = 4096  # plan folders' listings: a few KB each
CHANGES_KEPT = 16  # (from, to) generation pairs whose changes are at hand


@dataclass(frozen=True, slots=True)
class Head:
    """What listing a plan folder needs of its package: the sizes of its generated files."""

    missing_size: int
    manifest_size: int
    depends: Depends | None  # what the package was computed from (index.changes)


@dataclass(frozen=True, slots=True)
class PackageView:
    folders: dict[str, dict[str, InstanceRow]]
    missing_txt: bytes
    manifest_json: bytes
    package: graph.Package  # to render manifest.json for one reader
    depends: Depends | None


@dataclass(frozen=True, slots=True)
class Listed(Generic[_E]):
    """A plan folder's listing, kept as long as the package it shows."""

    entries: _E
    depends: Depends | None


class Host(Protocol):
    """What packages need of ``tree.View``."""

    @property
    def reader(self) -> IndexReader: ...

    @property
    def cache(self) -> TTLCache: ...

    def generation(self) -> str | None: ...


class Packages:
    """Packages and their heads, per index generation; safe to share between threads."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._views = VersionedCache(PACKAGES_KEPT)
        self._heads = VersionedCache(HEADS_KEPT)
        self._listings = VersionedCache(LISTINGS_KEPT)
        self._lock = threading.Lock()
        self._changes: dict[tuple[Hashable, Hashable], Changes | None] = {}

    def view(self, uid: str) -> PackageView:
        """The package of ``uid`` with its folders' names; NotFound for an unknown UID."""
        generation = self._generation()
        if generation is None:
            return self._host.cache.get(("package", uid), lambda: self._build(uid))
        return self._views.get(uid, generation, lambda: self._build(uid), still=self._still)

    def head(self, uid: str) -> Head:
        def build() -> Head:
            view = self.view(uid)
            return Head(len(view.missing_txt), len(view.manifest_json), view.depends)

        return self._heads.get(uid, self._generation(), build, still=self._still)

    def listing(self, uid: str, rest: tuple[str, ...], compute: Callable[[], _E]) -> _E:
        """The listing of ``plans/<uid>/<rest>`` made by ``compute``, kept with the package.

        ``find MNT/plans -maxdepth 2`` lists every plan folder; made again
        each time (the view's TTL is a second), that was a third of the
        daemon's time per folder. What it shows comes from the index alone:
        the plan's row and its package, so it is kept until a batch touches
        what either was computed from.
        """

        def build() -> Listed[_E]:
            with self._host.reader.recording() as recorded:
                entries = compute()
            return Listed(entries, _union(recorded.depends, self.head(uid).depends))

        generation = self._generation()
        if generation is None:
            return compute()
        kept = self._listings.get((uid, *rest), generation, build, still=self._still)
        return kept.entries

    def _still(
        self, kept: Hashable, now: Hashable, value: Head | PackageView | Listed[Any]
    ) -> bool:
        """Whether no batch from generation ``kept`` to ``now`` touched what ``value`` needs."""
        key = (kept, now)
        with self._lock:
            known = key in self._changes
            changes = self._changes.get(key)
        if not known:  # one query for every plan kept at the same generation
            changes = self._host.reader.changes(str(kept), str(now))
            with self._lock:
                if len(self._changes) >= CHANGES_KEPT:
                    self._changes.clear()
                self._changes[key] = changes
        return changes is not None and not changes.touches(value.depends)

    def _generation(self) -> str | None:
        return self._host.generation()

    def _build(self, uid: str) -> PackageView:
        reader = self._host.reader
        try:
            with reader.recording() as recorded:
                pkg = graph.package(reader, uid)
        except UnknownUidError as exc:
            raise NotFound(uid) from exc
        folders: dict[str, dict[str, InstanceRow]] = {}
        for folder, members in zip(
            PLAN_FOLDERS, (pkg.references, pkg.referenced_by, pkg.registrations), strict=True
        ):
            entries = folders[folder] = {}
            for m in members:
                name = member_name(m.instance)
                if name is not None:
                    entries.setdefault(name, m.instance)
        manifest = format_manifest(pkg)
        return PackageView(folders, format_missing(pkg.missing), manifest, pkg, recorded.depends)


def _union(one: Depends | None, other: Depends | None) -> Depends | None:
    if one is None or other is None:
        return None
    return array("q", sorted(set(one) | set(other)))
