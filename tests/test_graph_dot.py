"""``dicomfs graph``: the package drawn by the real Graphviz, and the drawing looked at.

Each test renders with Graphviz's ``dot`` and reads what it drew: the SVG
parsed as XML (one ``<g class="node">`` per object, its text, dashed and
dotted strokes) and the PNG decoded here in plain Python (size, and pixels
of more than one colour, the plan's fill among them). Expectations come from
the files (read with pydicom) or from the demo generator's description of
what it wrote, never from the code under test. Without ``dot`` these tests
skip locally and fail in CI (scripts/setup.sh --test installs graphviz).
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from parse_helpers import RT_PLAN, RT_STRUCT, dataset, encode, ref

from dicomfs.index import IndexReader, InstanceRow, graph
from dicomfs.index.rows import FileRow
from dicomfs.view.dot import MAX_TEXT, package_dot

SVG = "{http://www.w3.org/2000/svg}"
DASHED = "5,2"  # Graphviz's stroke-dasharray for style=dashed
DOTTED = "1,5"  # ... and for style=dotted
ROOT_FILL = (0xFF, 0xF3, 0xC4)  # the plan's box is filled; the PNG must show it


def dot_program() -> str:
    found = shutil.which("dot")
    if found is None:
        message = "Graphviz's dot is not installed (scripts/setup.sh --test installs graphviz)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def dicomfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if k != "DICOMFS_INDEX"}
    return subprocess.run(
        [sys.executable, "-m", "dicomfs", *args],
        capture_output=True,
        env=base if env is None else {**base, **env},
        check=False,
    )


# -- reading what Graphviz drew ------------------------------------------------


@dataclass(frozen=True)
class Drawn:
    """The nodes (title -> text lines, dash pattern) and edges of an SVG."""

    nodes: dict[str, tuple[list[str], str]]
    edges: dict[tuple[str, str, str], str]  # (from, to, label) -> dash pattern

    def node(self, *needles: str) -> str:
        """The one node whose text holds every needle."""
        hits = [t for t, (lines, _) in self.nodes.items() if all(n in lines for n in needles)]
        assert len(hits) == 1, (needles, self.nodes)
        return hits[0]

    def lines(self, title: str) -> list[str]:
        return self.nodes[title][0]


def _dash(group: ET.Element) -> str:
    shapes = [e for e in group.iter() if e.tag in (f"{SVG}path", f"{SVG}polygon")]
    return shapes[0].get("stroke-dasharray", "") if shapes else ""


def read_svg(data: bytes) -> Drawn:
    root = ET.fromstring(data)
    assert root.tag == f"{SVG}svg"
    nodes: dict[str, tuple[list[str], str]] = {}
    edges: dict[tuple[str, str, str], str] = {}
    for group in root.iter(f"{SVG}g"):
        title = group.findtext(f"{SVG}title") or ""
        texts = [t.text or "" for t in group.iter(f"{SVG}text")]
        if group.get("class") == "node":
            nodes[title] = (texts, _dash(group))
        elif group.get("class") == "edge":
            src, dst = title.split("->")
            edges[(src, dst, "\n".join(texts))] = _dash(group)
    return Drawn(nodes, edges)


def draw(pkg: graph.Package) -> Drawn:
    done = subprocess.run(
        [dot_program(), "-Tsvg"], input=package_dot(pkg).encode(), capture_output=True, check=False
    )
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()
    return read_svg(done.stdout)


def png_colours(data: bytes) -> tuple[int, int, set[tuple[int, int, int]]]:
    """Width, height and the RGB colours of a PNG, decoded with zlib and the PNG filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, header, compressed = 8, b"", bytearray()
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed += body
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and colour_type in (2, 6), header
    step = 3 if colour_type == 2 else 4
    stride = width * step
    raw = zlib.decompress(bytes(compressed))
    assert len(raw) == height * (stride + 1)
    previous = bytearray(stride)
    colours: set[tuple[int, int, int]] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up = previous[i]
            corner = previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + guess) & 0xFF
        colours.update((line[x], line[x + 1], line[x + 2]) for x in range(0, stride, step))
        previous = line
    return width, height, colours


# -- real exports ----------------------------------------------------------------


def read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, force=True, stop_before_pixels=True)


def test_monaco_plan_draws_its_structure_set_and_one_node_for_the_ct_series(
    real_copy: Path, real_reader: IndexReader
) -> None:
    folder = real_copy / "monaco-tinyvmat"
    plan = read(folder / "TinyFS_TinyVMAT.dcm")
    rs = read(folder / "TinyFS_StrctrSets.dcm")
    cts = [read(p) for p in sorted(folder.glob("TinyFS_CT1_*.DCM"))]
    [series_uid] = {ct.SeriesInstanceUID for ct in cts}

    drawn = draw(graph.package(real_reader, plan.SOPInstanceUID))

    assert len(drawn.nodes) == 3, drawn.nodes
    plan_node = drawn.node("RTPLAN", plan.RTPlanLabel, "…" + plan.SOPInstanceUID[-12:])
    rs_node = drawn.node("RTSTRUCT", rs.StructureSetLabel, "…" + rs.SOPInstanceUID[-12:])
    ct_node = drawn.node(f"CT series, {len(cts)} images", "…" + series_uid[-12:])
    assert drawn.edges == {
        (plan_node, rs_node, "structure_set"): "",
        (rs_node, ct_node, "image"): "",
    }
    assert all(dash == "" for _, dash in drawn.nodes.values())


def test_pinnacle_plan_draws_the_missing_structure_set_dashed(
    real_copy: Path, real_reader: IndexReader
) -> None:
    files = [read(p) for p in (real_copy / "pinnacle-plan-dose").glob("*.dcm")]
    [plan] = [d for d in files if d.Modality == "RTPLAN"]
    [dose] = [d for d in files if d.Modality == "RTDOSE"]

    drawn = draw(graph.package(real_reader, plan.SOPInstanceUID))

    plan_node = drawn.node("RTPLAN", plan.RTPlanLabel)
    dose_node = drawn.node("RTDOSE", "…" + dose.SOPInstanceUID[-12:])
    # The plan names no structure set: one is missing from the plan's study.
    missing = drawn.node("missing structure_set", "study …" + plan.StudyInstanceUID[-12:])
    assert len(drawn.nodes) == 3
    assert drawn.nodes[missing][1] == DASHED
    assert drawn.nodes[plan_node][1] == drawn.nodes[dose_node][1] == ""
    assert drawn.edges == {
        (plan_node, missing, "structure_set"): DASHED,
        (dose_node, plan_node, "dose"): "",
    }


# -- demo patients: a full package, and one with inferred candidates ------------


def test_demo_plan_draws_every_member_once_with_series_collapsed(  # type: ignore[no-untyped-def]
    demo_set, demo_reader
) -> None:
    patient = demo_set.patients[0]
    drawn = draw(graph.package(demo_reader, patient.plan_uid))

    objects = [
        patient.plan_uid,
        patient.plan_structure_set_uid,
        patient.plan_dose_uid,
        *patient.beam_dose_uids,
        patient.rt_image_uid,
        patient.record_uid,
        patient.verification_image_uid,
        patient.verification_plan_uid,
        patient.registration_uid,
    ]
    titles = {uid: drawn.node("…" + uid[-12:]) for uid in objects}
    ct = drawn.node(f"CT series, {len(patient.ct_uids)} images", "…" + patient.ct_series_uid[-12:])
    mr = drawn.node(f"MR series, {len(patient.mr_uids)} images", "…" + patient.mr_series_uid[-12:])
    assert len(drawn.nodes) == len(set(titles.values())) + 2 == len(objects) + 2
    assert titles[patient.plan_uid] == "n0"
    assert {ct, mr}.isdisjoint(titles.values())

    plan, rs = titles[patient.plan_uid], titles[patient.plan_structure_set_uid]
    assert (plan, rs, "structure_set") in drawn.edges
    assert (rs, ct, "image") in drawn.edges
    assert (titles[patient.plan_dose_uid], plan, "dose") in drawn.edges
    assert (
        titles[patient.record_uid],
        titles[patient.verification_image_uid],
        "verification_image",
    ) in drawn.edges
    assert (titles[patient.registration_uid], mr, "registered_image") in drawn.edges
    # Complete, explicit package: nothing dashed, nothing dotted.
    assert {dash for _, dash in drawn.nodes.values()} == {""}
    assert set(drawn.edges.values()) == {""}


def test_demo_plan_without_its_structure_set_dashes_it_and_dots_the_guesses(  # type: ignore[no-untyped-def]
    demo_set, demo_reader
) -> None:
    patient = demo_set.patients[0]
    pkg = graph.package(demo_reader, patient.missing_structure_set_plan_uid)
    drawn = draw(pkg)

    plan = drawn.node("RTPLAN", "…" + patient.missing_structure_set_plan_uid[-12:])
    missing = drawn.node(
        "missing structure_set", "instance …" + patient.missing_structure_set_uid[-12:]
    )
    assert drawn.nodes[missing][1] == DASHED
    assert drawn.edges[(plan, missing, "structure_set")] == DASHED
    assert [t for t, (_, dash) in drawn.nodes.items() if dash] == [missing]

    # No structure set resolves, so objects on the plan's frame of reference are
    # offered as candidates, dotted: the CT series as one node, the others one each.
    ct = drawn.node(f"CT series, {len(patient.ct_uids)} images", "…" + patient.ct_series_uid[-12:])
    assert drawn.edges[(plan, ct, "candidate")] == DOTTED
    others = {m.sop_uid for m in pkg.candidates} - set(patient.ct_uids)
    assert others, "the demo plan has candidates besides its CT"
    for uid in others:
        assert drawn.edges[(plan, drawn.node("…" + uid[-12:]), "candidate")] == DOTTED
    dotted = {key for key, dash in drawn.edges.items() if dash == DOTTED}
    assert dotted == {key for key in drawn.edges if key[2] == "candidate"}
    assert len(dotted) == 1 + len(others)


def test_the_text_is_the_same_whatever_order_the_package_lists(demo_set, demo_reader) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[1]
    pkg = graph.package(demo_reader, patient.plan_uid)
    first = package_dot(pkg)
    shuffle = random.Random(7).shuffle
    for members in (pkg.references, pkg.referenced_by, pkg.registrations, pkg.candidates):
        shuffle(members)
    assert package_dot(pkg) == first
    # Node names are generated, never a UID from a file.
    assert patient.plan_uid not in {line.split()[0] for line in first.splitlines()[4:-1]}


# -- hostile text ----------------------------------------------------------------

HOSTILE = 'a"b\\c\nd<b>bold</b> &#27;&amp; \\N\\" x'


def _instance(uid: str, sop_class: str, modality: str, label: str) -> InstanceRow:
    file = FileRow(1, "/nowhere", 0, 0, 0, 0, 0, 0, 0o100644)
    return InstanceRow(
        uid, sop_class, modality, "PATIENT-ID-NOT-DRAWN", "", "", "", label, "", "", None, "",
        False, (), file,
    )  # fmt: skip


def test_hostile_text_is_drawn_literally_and_bounded() -> None:
    ten_kb = HOSTILE + "\x00\x1b\u202e\ud800" + "x" * 10_000
    plan = _instance(ten_kb, RT_PLAN, "RTPLAN\n<i>", ten_kb)
    rs = _instance('1.2"3', RT_STRUCT, "RTSTRUCT", "\\")
    pkg = graph.Package(root=plan)
    pkg.references.append(graph.Member(rs, '"role"\n<x>', "", ten_kb, "forward"))
    pkg.missing.append(
        graph.MissingRef(graph.Level.INSTANCE, ten_kb + "9", "image", '1.2"3', "path")
    )
    text = package_dot(pkg)
    assert "PATIENT-ID-NOT-DRAWN" not in text
    assert len(text) < 3000  # 10 kB of label did not make it in

    drawn = draw(pkg)
    assert len(drawn.nodes) == 3
    plan_lines = drawn.lines("n0")
    # Each line shown literally: quotes, backslashes, markup and entity text as written.
    assert plan_lines[0] == "RTPLAN <i>"
    assert plan_lines[1].startswith('a"b\\c d<b>bold</b> &#27;&amp; \\N\\" x')
    assert plan_lines[1].endswith("…") and len(plan_lines[1]) == MAX_TEXT
    assert "\ufffd" * 4 in plan_lines[1]  # NUL, ESC, bidi override and surrogate replaced
    assert all(len(line) <= MAX_TEXT for lines, _ in drawn.nodes.values() for line in lines)
    assert drawn.lines(drawn.node("RTSTRUCT"))[1:] == ["\\", '1.2"3']
    assert drawn.lines("n2") == ["missing image", "instance …xxxxxxxxxxx9"]
    assert drawn.nodes["n2"][1] == DASHED
    assert [k[2] for k in drawn.edges if k[1] == "n1"] == ['"role" <x>']


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the invalid values
def test_a_hostile_plan_file_indexes_and_draws(
    tmp_path: Path,
    build_index: Callable[[Path, Sequence[Path], int], Any],
    open_reader: Callable[[Path], IndexReader],
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    hostile_rs = '1.2.3"<b>&#27;'
    plan = dataset(
        RT_PLAN,
        Modality="RTPLAN",
        RTPlanLabel=HOSTILE + "y" * 10_000,
        PatientName="Doe^Jane",
        ReferencedStructureSetSequence=[ref(RT_STRUCT, hostile_rs)],
    )
    (folder / "plan.dcm").write_bytes(encode(plan))
    build_index(tmp_path / "index.sqlite", [folder], 1)
    reader = open_reader(tmp_path / "index.sqlite")

    text = package_dot(graph.package(reader, plan.SOPInstanceUID))
    assert "Doe" not in text and "P1" not in text  # no patient name or ID in the picture
    drawn = draw(graph.package(reader, plan.SOPInstanceUID))
    label = drawn.lines("n0")[1]
    assert label.startswith('a"b\\c d<b>bold</b> &#27;&amp; \\N\\" x') and len(label) <= MAX_TEXT
    missing = drawn.node("missing structure_set")
    assert drawn.nodes[missing][1] == DASHED
    assert drawn.lines(missing)[1] == "instance …" + hostile_rs[-12:]


# -- the command -----------------------------------------------------------------


def test_graph_command_writes_dot_svg_and_a_png_that_shows_the_package(  # type: ignore[no-untyped-def]
    demo_set, demo_index: Path, tmp_path: Path
) -> None:
    dot_program()
    patient = demo_set.patients[0]
    index = ["--index", str(demo_index)]

    text = dicomfs("graph", patient.plan_uid, *index)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(b"digraph package {") and text.stdout.endswith(b"}\n")

    svg = dicomfs("graph", patient.plan_uid, *index, "-o", str(tmp_path / "p.svg"))
    assert svg.returncode == 0 and svg.stdout == b"", svg.stderr
    drawn = read_svg((tmp_path / "p.svg").read_bytes())
    assert drawn.node(
        f"CT series, {len(patient.ct_uids)} images", "…" + patient.ct_series_uid[-12:]
    )

    png_path = tmp_path / "p.image"
    png = dicomfs("graph", patient.plan_uid, *index, "--format", "png", "-o", str(png_path))
    assert png.returncode == 0, png.stderr
    width, height, colours = png_colours(png_path.read_bytes())
    assert width > 100 and height > 100
    assert len(colours) > 1
    assert ROOT_FILL in colours  # the plan's box is drawn, filled
    assert (0, 0, 0) in colours  # and the lines and text


def test_graph_without_graphviz_says_how_to_get_it_and_dot_text_still_works(  # type: ignore[no-untyped-def]
    demo_set, demo_index: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    no_dot = {"PATH": str(empty)}
    plan = demo_set.patients[0].plan_uid
    out = tmp_path / "p.svg"

    run = dicomfs("graph", plan, "--index", str(demo_index), "-o", str(out), env=no_dot)
    assert run.returncode == 1
    message = run.stderr.decode()
    assert "apt install graphviz" in message and "--format dot" in message
    assert not out.exists()

    run = dicomfs("graph", plan, "--index", str(demo_index), "--format", "dot", env=no_dot)
    assert run.returncode == 0 and run.stdout.startswith(b"digraph package {"), run.stderr


def test_graph_refuses_a_non_plan_unless_asked(demo_set, demo_index: Path) -> None:  # type: ignore[no-untyped-def]
    ct = demo_set.patients[0].ct_uids[0]
    run = dicomfs("graph", ct, "--index", str(demo_index))
    assert run.returncode == 3 and b"not an RT Plan" in run.stderr
    run = dicomfs("graph", ct, "--index", str(demo_index), "--any")
    assert run.returncode == 0 and b"graph view of CT" in run.stdout
