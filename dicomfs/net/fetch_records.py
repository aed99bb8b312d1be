"""The records of a fetch: how it is asked to run and what it reports back.

``FetchOptions`` goes in, ``FetchReport`` (one ``Outcome`` per missing
reference, the ``SeriesInfo`` of every series retrieved whole, what the
reverse search kept and what it retrieved only to look at) comes out.
Plain data with no network or index code, so the command line, the
summary and the tests can hold them without pulling in the fetch logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dicomfs.index import graph
from dicomfs.net.store import Layout, StoredObject

Method = Literal["auto", "get", "move"]


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How to fetch; ``move_port`` is needed only when C-MOVE is used.

    ``move_callers`` are the calling AE titles the temporary C-MOVE receiver
    accepts (default: the PACS's own title, which is what most PACS use for
    their outgoing associations). ``forward_only`` skips the reverse search
    (the doses, RT images, records and plans that name the plan).
    """

    store: Path
    index: Path | str
    our_ae: str = "DICOMFS"
    method: Method = "auto"
    move_port: int | None = None
    move_bind: str = "0.0.0.0"
    move_callers: tuple[str, ...] = ()
    candidates: bool = False
    timeout: float = 300.0
    layout: Layout = "series"
    max_rounds: int = 8
    forward_only: bool = False


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A series as the PACS described it in a SERIES-level C-FIND answer."""

    study_uid: str
    series_uid: str
    modality: str
    count: int | None
    description: str

    def __str__(self) -> str:
        size = "? instances" if self.count is None else f"{self.count} instance(s)"
        desc = f", {self.description!r}" if self.description else ""
        return f"{self.modality or '?'} series {self.series_uid} ({size}{desc})"


@dataclass(slots=True)
class Outcome:
    """What happened to one missing reference.

    ``state``: ``found`` (retrieved), ``not_found``, ``candidates`` (a plan
    naming no structure set: series listed), or ``skipped`` (nothing that can
    be queried safely).
    """

    ref: graph.MissingRef
    state: str
    series_uid: str = ""
    level: str = ""
    note: str = ""
    candidates: list[SeriesInfo] = field(default_factory=list)


@dataclass(slots=True)
class FetchReport:
    """Everything one fetch did, filled in as it goes so a summary can say what and why."""

    plans: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    stored: list[StoredObject] = field(default_factory=list)
    series_retrieved: list[SeriesInfo] = field(default_factory=list)
    still_missing: dict[str, list[graph.MissingRef]] = field(default_factory=dict)
    image_level: bool | None = None
    methods: set[str] = field(default_factory=set)
    # The reverse search: (package role, object) of what it brought into the
    # package, and what it retrieved that the package does not hold.
    reverse_found: list[tuple[str, StoredObject]] = field(default_factory=list)
    looked_at: list[StoredObject] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not any(self.still_missing.values())

    @property
    def new_objects(self) -> list[StoredObject]:
        return [s for s in self.stored if not s.duplicate]
