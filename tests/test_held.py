"""What the kernel may hold of each path (``fuse.held``): the record and its rounds.

The mount itself is tested in ``test_fs.py`` (a source replaced and
re-indexed under a long-lived cache); here the bookkeeping that decides
what the kernel must forget, with the kernel's side played by a list of
the paths it was told to drop.
"""

from __future__ import annotations

from collections.abc import Hashable

from dicomfs.fuse.held import FOLDER, GENERATED, Held, Shown, shown
from dicomfs.view.nodes import DirNode, FileNode

A = ("/src/a.dcm", 1, 10, 100, 5, 5)
B = ("/src/a.dcm", 1, 11, 120, 6, 6)


class Index:
    """What each path shows now, and the generation that moves when that changes."""

    def __init__(self) -> None:
        self.shows: dict[str, Shown] = {}
        self.generation = 1

    def set(self, path: str, what: Shown | None) -> None:
        if what is None:
            self.shows.pop(path, None)
        else:
            self.shows[path] = what
        self.generation += 1


def make(limit: int = 1000) -> tuple[Held, Index, list[str]]:
    index, dropped = Index(), []
    held = Held(dropped.append, index.shows.get, lambda: index.generation, limit=limit)
    held.seen = index.generation
    return held, index, dropped


def test_a_path_told_one_source_is_consistent_with_it_only() -> None:
    held, _, _ = make()
    assert held.consistent("/by-sop/a.dcm", A)  # nothing held: anything goes
    held.tell("/by-sop/a.dcm", A)
    assert held.consistent("/by-sop/a.dcm", A)
    assert not held.consistent("/by-sop/a.dcm", B)


def test_two_sources_told_for_one_path_make_it_dropped() -> None:
    held, _, dropped = make()
    held.tell("/by-sop/a.dcm", A)
    held.tell("/by-sop/a.dcm", B)
    assert not held.consistent("/by-sop/a.dcm", B)
    assert held.round() == 1
    assert dropped == ["/by-sop/a.dcm"]
    assert held.consistent("/by-sop/a.dcm", B) and len(held) == 0


def test_when_the_index_moves_only_paths_that_changed_are_dropped() -> None:
    held, index, dropped = make()
    for path, what in (("/by-sop/a.dcm", A), ("/by-sop/b.dcm", B), ("/by-series/s", FOLDER)):
        index.shows[path] = what
        held.tell(path, what)
    assert held.round() == 0  # the generation has not moved: nothing is resolved again
    index.set("/by-sop/a.dcm", B)  # replaced and re-indexed
    index.set("/by-series/s", None)  # gone
    assert held.round() == 2
    assert sorted(dropped) == ["/by-series/s", "/by-sop/a.dcm"]
    assert held.consistent("/by-sop/a.dcm", B)
    assert not held.consistent("/by-sop/b.dcm", A)  # unchanged: still held
    assert held.round() == 0


def test_generated_files_are_dropped_at_every_round() -> None:
    held, _, dropped = make()
    held.tell("/.dicomfs/status.json", GENERATED)
    assert held.round() == 1 and dropped == ["/.dicomfs/status.json"]
    assert held.round() == 0  # forgotten once dropped, until told again


def test_what_is_told_while_a_path_is_dropped_stays_held() -> None:
    index, dropped = Index(), []
    held: Held

    def invalidate(path: str) -> None:
        dropped.append(path)
        held.tell(path, B)  # a reply racing the invalidation

    held = Held(invalidate, index.shows.get, lambda: index.generation)
    held.seen = index.generation
    held.tell("/by-sop/a.dcm", A)
    held.drop("/by-sop/a.dcm")
    held.round()
    assert dropped == ["/by-sop/a.dcm"]
    assert held.consistent("/by-sop/a.dcm", B) and not held.consistent("/by-sop/a.dcm", A)


def test_memory_is_bounded_by_dropping_the_oldest() -> None:
    held, _, dropped = make(limit=100)
    for i in range(150):
        held.tell(f"/by-sop/{i}.dcm", ("/src", 1, i, 1, 1, 1))
    held.round()
    assert len(held) <= 100
    assert "/by-sop/0.dcm" in dropped and "/by-sop/149.dcm" not in dropped


def test_an_unreadable_index_counts_as_moved() -> None:
    def broken() -> Hashable:
        raise OSError("index unreadable")

    dropped: list[str] = []
    held = Held(dropped.append, lambda path: A, broken)
    held.tell("/by-sop/a.dcm", A)
    held.seen = 0
    held.round()  # resolved again: unchanged, so kept
    assert dropped == [] and held.consistent("/by-sop/a.dcm", A)


def test_shown_names_sources_folders_and_generated_files() -> None:
    folder = DirNode("s", 0, 0, 0o750, 0)
    source = FileNode("a.dcm", "/src/a.dcm", 100, 5, 0, 0, 0o444, 10, 1, ctime_ns=5)
    made = FileNode("status.json", None, 2, 0, 0, 0, 0o444, 0, 0, b"{}")
    assert shown(folder) == FOLDER
    assert shown(made) == GENERATED
    assert shown(source) == source.identity


def test_a_busy_index_is_looked_at_again_only_after_a_pause() -> None:
    """Resolving every held path runs at most half the time while the index keeps moving."""
    held, index, dropped = make()
    index.shows["/by-sop/a.dcm"] = A
    held.tell("/by-sop/a.dcm", A)
    held._not_before = float("inf")  # a recheck just took long
    index.set("/by-sop/a.dcm", B)
    assert held.round() == 0 and held.seen != index.generation  # noticed later, not lost
    held._not_before = 0.0
    assert held.round() == 1 and dropped == ["/by-sop/a.dcm"]
    assert held.seen == index.generation
