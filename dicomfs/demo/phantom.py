"""The synthetic body: ellipses on square grids, painted into pixels, masks and contours.

Every image, dose grid, mask and contour of a demo patient is drawn from the
same few ellipses (body, vertebra, target), so objects that reference each
other also agree on what they show. Painting works a row span at a time, so
512x512 benchmark series take milliseconds, not seconds.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from dicomfs.demo.builders import ds_str

__all__ = [
    "CT_FOV",
    "CT_THICKNESS",
    "Grid",
    "Shape",
    "body",
    "ct_shapes",
    "mask_bits",
    "pack_bits",
    "paint",
    "z_positions",
]

CT_THICKNESS = 3.0
CT_FOV = 256.0


@dataclass(frozen=True)
class Shape:
    """An axis-aligned ellipse in patient x/y (mm) painted with one value."""

    cx: float
    cy: float
    rx: float
    ry: float
    value: int

    def span(self, y: float) -> tuple[float, float] | None:
        """Where row ``y`` crosses the ellipse, or None if it misses."""
        t = (y - self.cy) / self.ry
        if abs(t) >= 1.0:
            return None
        half = self.rx * math.sqrt(1.0 - t * t)
        return self.cx - half, self.cx + half

    def polygon(self, z: float, points: int) -> list[str]:
        """The outline at height ``z`` as RT Structure Set ContourData (x, y, z per point)."""
        coords: list[str] = []
        for k in range(points):
            angle = 2.0 * math.pi * k / points
            x = self.cx + self.rx * math.cos(angle)
            y = self.cy + self.ry * math.sin(angle)
            coords += [ds_str(x, 2), ds_str(y, 2), ds_str(z, 2)]
        return coords


@dataclass(frozen=True)
class Grid:
    """A square image grid centred on the patient axis."""

    size: int
    fov: float

    @property
    def spacing(self) -> float:
        return self.fov / self.size

    @property
    def origin(self) -> float:
        return -self.fov / 2.0 + self.spacing / 2.0

    def pixel_spacing(self) -> list[str]:
        """Pixel Spacing (row, column) as DS values."""
        return [ds_str(self.spacing), ds_str(self.spacing)]

    def position(self, z: float) -> list[str]:
        """Image Position (Patient) of the grid's first pixel at height ``z``."""
        return [ds_str(self.origin), ds_str(self.origin), ds_str(z)]

    def columns(self, x0: float, x1: float) -> tuple[int, int]:
        """The columns whose centres lie between ``x0`` and ``x1``, clipped to the grid."""
        first = math.ceil((x0 - self.origin) / self.spacing)
        last = math.floor((x1 - self.origin) / self.spacing) + 1
        return max(first, 0), min(last, self.size)


def paint(grid: Grid, shapes: Sequence[Shape], background: int, fmt: str) -> bytes:
    """Unsigned 16-bit pixels, one row at a time with slice assignment.

    Per-pixel Python loops would take seconds for a 512x512 benchmark
    series; painting spans keeps it in milliseconds.
    """
    blank = struct.pack(fmt, background) * grid.size
    values = [struct.pack(fmt, shape.value) for shape in shapes]
    out = bytearray()
    for row in range(grid.size):
        line = bytearray(blank)
        y = grid.origin + row * grid.spacing
        for shape, value in zip(shapes, values, strict=True):
            span = shape.span(y)
            if span is None:
                continue
            c0, c1 = grid.columns(*span)
            if c1 > c0:
                line[c0 * 2 : c1 * 2] = value * (c1 - c0)
        out += line
    return bytes(out)


def mask_bits(grid: Grid, shape: Shape) -> str:
    """One frame of a binary mask as '0'/'1' characters in pixel order."""
    rows: list[str] = []
    for row in range(grid.size):
        line = ["0"] * grid.size
        span = shape.span(grid.origin + row * grid.spacing)
        if span is not None:
            c0, c1 = grid.columns(*span)
            line[c0:c1] = ["1"] * max(c1 - c0, 0)
        rows.append("".join(line))
    return "".join(rows)


def pack_bits(bits: str) -> bytes:
    """PS3.5 8.1.1: bit-packed pixels, first pixel in the lowest bit, even length."""
    nbytes = (len(bits) + 7) // 8
    nbytes += nbytes % 2
    return int(bits[::-1] or "0", 2).to_bytes(nbytes, "little")


def z_positions(count: int, thickness: float) -> list[float]:
    """Slice heights of a series centred on z = 0."""
    return [(k - (count - 1) / 2.0) * thickness for k in range(count)]


def body(z: float) -> Shape:
    """The body outline at height ``z``."""
    # Bounded along z, so long benchmark series keep a plausible body.
    return Shape(0.0, 0.0, 90.0 + 10.0 * math.cos(z / 40.0), 70.0, 1064)


def ct_shapes(z: float) -> list[Shape]:
    """What a CT slice at height ``z`` shows: the body and a vertebra."""
    return [body(z), Shape(0.0, 50.0, 12.0, 12.0, 1724)]
