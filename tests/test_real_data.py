"""The real exports in tests/data/real are the files SOURCES.tsv names, byte for byte."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from conftest import REAL_DATA


def test_every_listed_file_is_present_and_unchanged() -> None:
    with open(REAL_DATA / "SOURCES.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    on_disk = {p.name: p for p in REAL_DATA.glob("*/*") if p.name not in ("README.md",)}
    assert len(rows) == len(on_disk) == 21
    for row in rows:
        path = on_disk[Path(row["path"]).name]
        data = path.read_bytes()
        assert len(data) == int(row["bytes"]), path
        assert hashlib.sha256(data).hexdigest() == row["sha256"], path
