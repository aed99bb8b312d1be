"""Free text and name prefixes as full-text filters: FTS5 in SQLite, tsvector in PostgreSQL.

``search`` asks for rows matching words; how is the engine's. In SQLite the
words go to the FTS5 table sqlite-utils made (``details_fts``) as an FTS5
query, and the table drives the join (``search``'s docstring says why); in
PostgreSQL they go to ``details_search`` as a tsquery (``postgres``). Both
get the same terms, cut from the user's text by sqlite-utils' quoting, so a
search means the same in both.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dicomfs.index import postgres
from dicomfs.index.schema import SEARCH_COLUMNS

if TYPE_CHECKING:
    import sqlite_utils

_NAME_COLUMN = "patient_name"
assert _NAME_COLUMN in SEARCH_COLUMNS
_PHRASE = re.compile(r'"([^"]*)"')

# ``fts`` of a PostgreSQL index: its full-text table is always there.
POSTGRES_TEXT = "details_search"


@dataclass(slots=True)
class FullText:
    """A full-text filter: the join it drives, the key its rows are bounded by, its WHERE."""

    source: str
    key: str
    clause: str
    params: list[Any]


def full_text(fts: str, words: list[tuple[str, bool]]) -> FullText:
    """Free-text ``words`` (``terms``) against the full-text table ``fts`` (quoted for SQL)."""
    if fts == POSTGRES_TEXT:
        return _tsearch(*postgres.text_query(words))
    match = " ".join(f'"{core}"' + (" *" if prefix else "") for core, prefix in words)
    return _fts5(fts, match)


def _fts5(fts: str, match: str) -> FullText:
    # Full text drives the join (module docstring); CROSS JOIN fixes the order.
    return FullText(
        f"{fts} CROSS JOIN instances i ON i.file_id = {fts}.rowid",
        f"{fts}.rowid",
        f"{fts} MATCH ?",
        [match],
    )


def _tsearch(query: str, params: list[str]) -> FullText:
    return FullText(
        f"{POSTGRES_TEXT} s JOIN instances i ON i.file_id = s.file_id",
        "s.file_id",
        f"s.doc @@ {query}",
        list(params),
    )


def name_filter(fts: str, db: sqlite_utils.Database, lead: str) -> FullText:
    """Rows whose patient name has a word starting with ``lead`` (``name_lead``)."""
    if fts == POSTGRES_TEXT:
        return _tsearch(*postgres.name_query(lead))
    return _fts5(fts, f"{_NAME_COLUMN} : ^ {db.quote_fts(lead)} *")


def name_lead(pattern: str) -> str:
    """The letters every name matching ``pattern`` starts with, for a prefix query.

    Names are matched from their start, so the letters and digits before any
    wildcard or separator begin the first token of every matching name
    (``Smi*`` -> FTS5 ``patient_name : ^ "Smi" *``; in PostgreSQL a word of
    the name starting so). Empty when the pattern starts with anything else:
    such a pattern is checked against every name.
    """
    lead = ""
    for char in unicodedata.normalize("NFC", pattern):
        if not char.isalnum():
            break
        lead += char
    return lead


def terms(db: sqlite_utils.Database, text: str) -> list[tuple[str, bool]]:
    """Free text as safe terms: (a word or "phrase", whether it ends in ``*``: a prefix).

    sqlite-utils' ``quote_fts`` quotes every word (so ``AND``, ``NEAR(``,
    ``:`` or ``-`` are plain text) and balances quotes; a word ending in
    ``*`` keeps its meaning as a prefix. Empty when nothing is left to
    search for (empty, or ``*`` alone): no text filter.
    """
    quoted = str(db.quote_fts(text))
    found = []
    for phrase in _PHRASE.findall(quoted):
        core = phrase.rstrip("*")
        if core.strip():
            found.append((core, core != phrase))
    return found
