"""Fuzzing, bounded for CI (reliability.md D5, C1).

The parser: arbitrary bytes and mutated real files already run in
tests/test_parse_properties.py (``test_arbitrary_bytes_*``, ``test_mutated_real_files_*``);
here mutations and splices of the *hostile* corpus, each parse bounded in
time and memory. Names: every function that turns a UID or a modality into a
path component. Paths: tests/test_view.py::test_any_path_resolves_or_is_not_found
covers a clean index; here the same property on the hostile corpus.
Crashes found by the atheris harness (fuzz/fuzz_parse.py, ``make fuzz``) are
kept in fuzz_regressions/ and replayed here.
"""

from __future__ import annotations

import os
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomfs.demo import HostileCorpus, write_hostile_corpus
from dicomfs.dicom.parse import parse_bytes
from dicomfs.dicom.records import UID_MAX_LENGTH, Instance, Rejection, clean_uid, is_safe_uid
from dicomfs.index import FileRow, IndexReader, IndexWriter, InstanceRow
from dicomfs.live.scan import reconcile
from dicomfs.view.names import member_name, modality_name, named, synthetic_name
from dicomfs.view.nodes import DirNode, FileNode, NotADirectory, NotFound
from dicomfs.view.tree import View

REGRESSIONS = Path(__file__).with_name("fuzz_regressions")
# Per parse: far above a real header parse (milliseconds), far below a hang.
PARSE_SECONDS = 5.0
# Per parse: the inflate cap is 64 MiB of *counting*, never of memory.
PARSE_BYTES = 64 * 1024 * 1024
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    return write_hostile_corpus(tmp_path_factory.mktemp("fuzz") / "src")


@pytest.fixture(scope="module")
def samples(corpus: HostileCorpus) -> list[bytes]:
    """Every corpus file small enough to mutate quickly (the bomb is tested on its own)."""
    found = []
    for relative in sorted(corpus.expected):
        data = (corpus.root / relative).read_bytes()
        if len(data) <= 64 * 1024:
            found.append(data)
    return found


def bounded_parse(data: bytes) -> Instance | Rejection:
    """parse_bytes, asserting the time and memory it may take (D5)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = parse_bytes(data)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(result, Instance | Rejection), type(result)
    assert elapsed < PARSE_SECONDS, f"{len(data)} bytes took {elapsed:.1f} s"
    assert peak < PARSE_BYTES, f"{len(data)} bytes took {peak / 1e6:.0f} MB"
    if isinstance(result, Instance):
        assert result.sop_instance_uid and result.sop_class_uid
        assert all(edge.target_uid for edge in result.edges)
    else:
        assert result.reason
    return result


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "overwrite", "length"]),
    st.floats(0, 1, exclude_max=True),
    st.binary(min_size=1, max_size=8),
)


@FUZZ
@given(data=st.data(), mutations=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_hostile_files_end_in_a_record_or_rejection(
    samples: list[bytes], data: st.DataObject, mutations: list[tuple[str, float, bytes]]
) -> None:
    buffer = bytearray(data.draw(st.sampled_from(samples)))
    for op, where, payload in mutations:
        at = int(where * len(buffer)) if buffer else 0
        if op == "flip" and buffer:
            buffer[at] ^= payload[0] or 0xFF
        elif op == "insert":
            buffer[at:at] = payload
        elif op == "delete":
            del buffer[at : at + len(payload)]
        elif op == "length":  # a declared length becomes huge or undefined
            buffer[at : at + 4] = b"\xff\xff\xff\xff" if payload[0] & 1 else b"\xf0\xff\xff\x7f"
        else:
            buffer[at : at + len(payload)] = payload
    bounded_parse(bytes(buffer))


@FUZZ
@given(data=st.data())
def test_spliced_hostile_files_end_in_a_record_or_rejection(
    samples: list[bytes], data: st.DataObject
) -> None:
    """The head of one file on the tail of another: structure that lies about its size."""
    first, second = data.draw(st.sampled_from(samples)), data.draw(st.sampled_from(samples))
    cut1 = data.draw(st.integers(0, len(first)))
    cut2 = data.draw(st.integers(0, len(second)))
    bounded_parse(first[:cut1] + second[cut2:])


def test_bomb_and_deep_nesting_are_bounded(corpus: HostileCorpus) -> None:
    for relative, kind in (
        ("bomb/deflate-bomb.dcm", "too_large"),
        ("nesting/5000-levels.dcm", "too_deep"),
    ):
        result = bounded_parse((corpus.root / relative).read_bytes())
        assert isinstance(result, Rejection) and result.kind.value == kind


def test_atheris_regressions_replay() -> None:
    """Every input the atheris harness ever crashed on (fuzz/fuzz_parse.py)."""
    inputs = sorted(REGRESSIONS.glob("*.bin"))
    assert inputs, f"no regression inputs in {REGRESSIONS}"
    for path in inputs:
        bounded_parse(path.read_bytes())


# -- names ----------------------------------------------------------------------------------

NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
uids = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[0-9.]{1,70}", fullmatch=True),
    st.from_regex(r"(0|[1-9][0-9]{0,20})(\.(0|[1-9][0-9]{0,20})){0,12}", fullmatch=True),
    st.binary(max_size=70).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from([".", "..", "1.2/3", "1.2\x00", "1.2.03", "/", "", "0", "0.0", "1." * 40]),
)


def row(uid: str, modality: str) -> InstanceRow:
    file = FileRow(1, "/src/x.dcm", 1, 1, 1, 1, 0, 0, 0o644)
    return InstanceRow(
        uid, "1.2.840.10008.5.1.4.1.1.2", modality, "", "", "", "", "", "", "", None, "",
        is_safe_uid(uid), (), file,
    )  # fmt: skip


def assert_safe_name(name: str) -> None:
    assert "/" not in name and "\x00" not in name, repr(name)
    assert name not in (".", "..", ""), repr(name)
    assert len(name.encode("utf-8", "surrogateescape")) <= 255, repr(name)
    assert NAME.fullmatch(name), repr(name)


@settings(max_examples=400, deadline=None)
@given(uid=uids, modality=st.text(max_size=40))
def test_uid_to_name_mapping_never_gives_an_unsafe_name(uid: str, modality: str) -> None:
    """No name contains '/' or NUL, none is '.' or '..', none is longer than 255 bytes."""
    inst = row(uid, modality)
    assert_safe_name(synthetic_name(uid))
    assert_safe_name(modality_name(modality))
    member = member_name(inst)
    if member is not None:
        assert_safe_name(member)
        assert named(inst) and member.endswith(f"_{uid}.dcm")
    if is_safe_uid(uid):
        assert_safe_name(uid)
        assert_safe_name(f"{uid}.dcm")
        assert len(uid) <= UID_MAX_LENGTH and uid.isascii()
        assert clean_uid(uid) == uid
    else:
        assert member is None and not named(inst)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=80))
def test_clean_uid_then_is_safe_uid_on_any_bytes(raw: bytes) -> None:
    """The parser path: bytes from a file, padding stripped, then judged."""
    uid = clean_uid(raw.decode("latin-1"))
    if is_safe_uid(uid):
        assert_safe_name(uid)
        assert re.fullmatch(r"[0-9.]{1,64}", uid)


# -- any path on the hostile index ------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_view(corpus: HostileCorpus) -> Iterator[View]:
    index = corpus.root.parent / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [corpus.root], workers=1)
    writer.close()
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)
    yield view
    view.close()


def _parts(corpus: HostileCorpus) -> st.SearchStrategy[str]:
    values = [v for v in corpus.uids.values()] + [corpus.study_uid, corpus.series_uid]
    fixed = ["by-sop", "by-series", "by-study", "plans", "objects", ".dicomfs", "references",
             "referenced-by", "registrations", "plan.dcm", "self.dcm", "missing.txt",
             "manifest.json", "status.json", "rejected.txt", "..", ".", "", "\x00"]  # fmt: skip
    return st.one_of(
        st.sampled_from(fixed),
        st.sampled_from(values),
        st.sampled_from(values).map(lambda v: f"{v}.dcm"),
        st.sampled_from(values).map(lambda v: f"CT_{v}.dcm"),
        st.sampled_from(values).map(synthetic_name),
        st.text(max_size=12),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_path_on_the_hostile_index_resolves_or_is_not_found(
    corpus: HostileCorpus, hostile_view: View, data: st.DataObject
) -> None:
    parts = data.draw(st.lists(_parts(corpus), max_size=5))
    path = "/".join(parts)
    try:
        node = hostile_view.lookup(path)
    except (NotFound, NotADirectory):
        return
    assert isinstance(node, DirNode | FileNode)
    if isinstance(node, DirNode):
        for name, _ in hostile_view.listdir(path):
            assert_safe_name(name)
    elif node.real_path is not None:
        assert os.fsencode(node.real_path).startswith(os.fsencode(corpus.root) + b"/")
