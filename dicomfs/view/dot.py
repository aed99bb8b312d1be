"""A package as Graphviz DOT text: the picture ``dicomfs graph`` draws.

A plan's package is easier to check as a picture than as a list: what the
plan names, what names it, what is missing and what was only guessed from a
shared frame of reference. This module turns a ``graph.Package`` into DOT
text and nothing else, so the command only adds rendering (running Graphviz's
``dot``) and tests can read the text without Graphviz.

Shape of the picture: one node per object; the image members of one series
collapse into one node with their count (a 300-slice CT is one box, not 300);
edges point from the object that holds a reference to the object it names,
labelled with the member's role as the package lists it (the reference role;
for an object that names the plan, what it is to the plan: dose, rt_image,
treatment_record); missing targets are dashed nodes, edges found only
through a frame of reference are dotted. Patient names and IDs are
never drawn: the labels are the kind of object and its RT label.

Every string drawn comes from a DICOM file and is untrusted. Node IDs are
generated (``n0``, ``n1`` ...), never UIDs; every label is a double-quoted DOT
string (never an HTML-like ``<...>`` label) with backslash and quote escaped,
``&`` written as an entity (Graphviz would otherwise decode ``&#27;`` into a
control character in the SVG), control, format and surrogate characters
replaced, and each text cut to ``MAX_TEXT`` characters. Output is sorted, so
the same package always gives the same text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dicomfs.index import InstanceRow, graph
from dicomfs.index.rows import REGISTRATION_CLASSES

MAX_TEXT = 60  # characters of one untrusted text in a label
UID_TAIL = 12  # characters of a UID shown (its end: the start is the org root)
ELLIPSIS = "\u2026"

# Objects drawn one node each; every other member is an image of a series.
_OWN_NODE_CLASSES = (
    frozenset({graph.STRUCTURE_SET_CLASS, graph.DOSE_CLASS, graph.RT_IMAGE_CLASS})
    | graph.RECORD_CLASSES
    | graph.SEGMENTATION_CLASSES
    | frozenset(REGISTRATION_CLASSES)
)
_OWN_NODE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "REG", "SEG"})

_ROOT_STYLE = "rounded,bold,filled"
_MISSING_STYLE = "rounded,dashed"


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` on one line, printable, at most ``limit`` characters (ellipsis when cut)."""
    out = []
    for ch in text[: limit * 2]:
        if ch in "\t\n\r\v\f":
            out.append(" ")
        elif unicodedata.category(ch).startswith("C"):  # control, format, surrogate, unassigned
            out.append("\ufffd")
        else:
            out.append(ch)
    line = "".join(out).strip()
    if len(line) > limit or len(text) > limit * 2:
        line = line[: limit - 1].rstrip() + ELLIPSIS
    return line


def quote(lines: Iterable[str]) -> str:
    """One DOT double-quoted label from already cleaned lines (``\\n`` between them)."""
    escaped = (
        line.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;") for line in lines
    )
    return '"' + "\\n".join(escaped) + '"'


def short_uid(uid: str) -> str:
    """The end of a UID, enough to tell objects apart without a 64-character line."""
    if len(uid) <= UID_TAIL:
        return clean(uid, UID_TAIL)
    return ELLIPSIS + clean(uid[-UID_TAIL:], UID_TAIL)


@dataclass(slots=True)
class _Node:
    kind: int  # 0 root, 1 object, 2 series, 3 missing: the drawing order
    sort: tuple[str, ...]
    lines: list[str]
    style: str = "rounded"
    members: set[str] = field(default_factory=set)


def _is_series_image(inst: InstanceRow) -> bool:
    if inst.is_plan or inst.sop_class in _OWN_NODE_CLASSES or not inst.series_uid:
        return False
    return not (inst.modality.startswith("RT") or inst.modality in _OWN_NODE_MODALITIES)


def _object_lines(inst: InstanceRow) -> list[str]:
    lines = [clean(inst.modality) or "?"]
    if inst.label.strip():
        lines.append(clean(inst.label))
    lines.append(short_uid(inst.sop_uid))
    return lines


def _series_lines(modality: str, series_uid: str, count: int) -> list[str]:
    kind = f"{clean(modality)} series" if modality.strip() else "series"
    images = "1 image" if count == 1 else f"{count} images"
    return [f"{kind}, {images}", short_uid(series_uid)]


def _members(pkg: graph.Package) -> Iterator[graph.Member]:
    yield from pkg.references
    yield from pkg.referenced_by
    yield from pkg.registrations
    yield from pkg.related
    yield from pkg.candidates


def _ends(member: graph.Member, root_uid: str) -> tuple[str, str]:
    """(holder, named) UIDs of the reference that brought ``member`` in.

    A reverse hit's ``via`` is itself (it names the root); a registration found
    by its frame of reference also names the root's frame, so it points there.
    """
    if member.via == member.sop_uid or not member.via:
        return member.sop_uid, root_uid
    if member.direction == "reverse":
        return member.sop_uid, member.via
    return member.via, member.sop_uid


class _Drawing:
    """Nodes keyed by what they stand for, edges keyed by their two nodes and role."""

    def __init__(self, root: InstanceRow) -> None:
        self.root_key = ("object", root.sop_uid)
        lines = _object_lines(root)
        self.nodes: dict[tuple[str, str], _Node] = {
            self.root_key: _Node(0, (), lines, _ROOT_STYLE, {root.sop_uid})
        }
        self.node_of: dict[str, tuple[str, str]] = {root.sop_uid: self.root_key}
        # (from, to, role) -> style; an explicit edge wins over an inferred one.
        self.edges: dict[tuple[tuple[str, str], tuple[str, str], str], str] = {}

    def add_instance(self, inst: InstanceRow) -> None:
        if inst.sop_uid in self.node_of:
            return
        if _is_series_image(inst):
            key = ("series", inst.series_uid)
            node = self.nodes.get(key)
            if node is None:
                node = self.nodes[key] = _Node(2, (inst.modality, inst.series_uid), [])
            node.members.add(inst.sop_uid)
            node.lines = _series_lines(inst.modality, inst.series_uid, len(node.members))
        else:
            key = ("object", inst.sop_uid)
            sort = (inst.modality, inst.label, inst.sop_uid)
            self.nodes[key] = _Node(1, sort, _object_lines(inst), members={inst.sop_uid})
        self.node_of[inst.sop_uid] = key

    def add_edge(self, src_uid: str, dst: tuple[str, str], role: str, style: str) -> None:
        src = self.node_of.get(src_uid, self.root_key)
        if src == dst:
            return  # images of one series naming each other: no loop on the series box
        key = (src, dst, clean(role))
        if key not in self.edges or style == "":
            self.edges[key] = style

    def add_missing(self, ref: graph.MissingRef) -> None:
        key = ("missing", f"{ref.level.value}\x00{ref.uid}")
        if key not in self.nodes:
            lines = [
                clean(f"missing {ref.expected}"),
                clean(f"{ref.level.value} {short_uid(ref.uid)}"),
            ]
            sort = (ref.level.value, ref.uid)
            self.nodes[key] = _Node(3, sort, lines, _MISSING_STYLE)
        self.add_edge(ref.referenced_by, key, ref.expected, "dashed")


def _title(pkg: graph.Package, inferred: bool) -> list[str]:
    root = pkg.root
    what = "package of" if root.is_plan else "graph view of"
    title = [clean(f"{what} {clean(root.modality) or '?'} {clean(root.label)}")]
    if pkg.missing:
        title.append("dashed: referenced but not indexed")
    if inferred:
        title.append("dotted: inferred from a shared frame of reference")
    if pkg.truncated:
        title.append(f"truncated: more than {graph.MAX_MEMBERS} members")
    return title


def package_dot(pkg: graph.Package) -> str:
    """The DOT text of ``pkg`` (a digraph named ``package``), newline-terminated."""
    drawing = _Drawing(pkg.root)
    members = [m for m in _members(pkg) if m.direction != "self"]
    for member in members:
        drawing.add_instance(member.instance)
    inferred = False
    for member in members:
        holder, named = _ends(member, pkg.root.sop_uid)
        is_inferred = member.provenance is graph.Provenance.INFERRED
        inferred = inferred or is_inferred
        dst = drawing.node_of.get(named, drawing.root_key)
        drawing.add_edge(holder, dst, member.role, "dotted" if is_inferred else "")
    for ref in pkg.missing:
        drawing.add_missing(ref)

    order = sorted(drawing.nodes, key=lambda k: (drawing.nodes[k].kind, drawing.nodes[k].sort))
    rank = {key: i for i, key in enumerate(order)}
    out = [
        "digraph package {",
        f'  graph [rankdir=LR, fontname="Helvetica", fontsize=12, labelloc=t, '
        f"label={quote(_title(pkg, inferred))}];",
        '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for key in order:
        node = drawing.nodes[key]
        attrs = [f"label={quote(node.lines)}"]
        if node.style != "rounded":
            attrs.append(f'style="{node.style}"')
        if node.kind == 0:
            attrs.append('fillcolor="#fff3c4"')
        elif node.kind == 2:
            attrs.append("shape=box3d")
        elif node.kind == 3:
            attrs += ['color="#666666"', 'fontcolor="#444444"']
        out.append(f"  n{rank[key]} [{', '.join(attrs)}];")
    edges = sorted(drawing.edges.items(), key=lambda e: (rank[e[0][0]], rank[e[0][1]], e[0][2]))
    for (src, dst, role), style in edges:
        attrs = [f"label={quote([role])}"]
        if style:
            attrs.append(f"style={style}")
        out.append(f"  n{rank[src]} -> n{rank[dst]} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"
