"""The geometry of a stack of slices: order along the normal, and every check on it.

A volume is a regular grid only if its slices share one orientation, lie at
distinct positions along the slice normal (the cross product of the row and
column direction cosines), one spacing apart, each straight "above" the one
before. :func:`stack` orders the slices by their position along the normal
(Instance Number says nothing about where a slice is) and raises the
:mod:`~aiodicomnet.imaging.errors` class naming the first of those
conditions that does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import (
    DuplicateSlices,
    GantryTilt,
    InconsistentSpacing,
    MissingSlices,
    MixedOrientation,
    MixedSizes,
)

__all__ = ["Plane", "Stack", "stack"]

#: Direction cosines that differ by less than this are one orientation.
ORIENTATION_TOLERANCE = 1e-4
#: Positions are Decimal Strings, often rounded to two decimals: distances
#: between slices, and in-plane shifts, may be off by this much (mm) and still
#: be regular.
POSITION_TOLERANCE = 0.02
#: A stack whose slice positions drift in-plane by less than this angle (degrees)
#: from the normal is not tilted (the drift of a whole stack is measured, so
#: rounding does not add up).
TILT_TOLERANCE = 0.1


@dataclass(frozen=True)
class Plane:
    """One slice's place: where it is, how it lies, how big its pixels are.

    Attributes:
        name: how messages name the slice (SOP Instance UID, and frame).
        position: Image Position (Patient) of its first pixel, LPS mm.
        orientation: Image Orientation (Patient): row then column cosines.
        pixel_spacing: (between rows, between columns), mm.
        rows, columns: its size.
    """

    name: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int


@dataclass(frozen=True)
class Stack:
    """Slices in order along their normal, with the grid they make.

    Attributes:
        order: indices into the planes given to :func:`stack`, first slice first.
        spacing: (between slices, between rows, between columns), mm.
        origin: position of the first slice's first pixel, LPS mm.
        direction: rows are the LPS unit vectors of the (slice, row, column) axes:
            the normal, the column cosines, the row cosines.
    """

    order: tuple[int, ...]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def stack(
    planes: Sequence[Plane],
    *,
    spacing_tolerance: float = 0.01,
    default_spacing: float | None = None,
) -> Stack:
    """Order ``planes`` along their normal and check that they make a regular grid.

    Args:
        planes: one per slice, in any order.
        spacing_tolerance: how far (relative) a distance between neighbouring
            slices may stray from the regular spacing (or by
            :data:`POSITION_TOLERANCE`, if more: rounded positions); also,
            relative to it, the distance under which two slices are duplicates.
            Gantry tilt is an in-plane drift of the whole stack of more than
            :data:`TILT_TOLERANCE` degrees (and :data:`POSITION_TOLERANCE` mm).
        default_spacing: the spacing between slices when there is only one
            slice (Spacing Between Slices or Slice Thickness); 1 mm if None.

    Raises:
        ImagingError: MixedSizes, MixedOrientation, DuplicateSlices, GantryTilt,
            MissingSlices or InconsistentSpacing (see :mod:`aiodicomnet.imaging.errors`).
    """
    if not planes:
        raise ValueError("no slices")
    first = planes[0]
    for p in planes[1:]:
        if (p.rows, p.columns) != (first.rows, first.columns):
            raise MixedSizes(
                f"slices of {first.rows}x{first.columns} ({first.name}) and "
                f"{p.rows}x{p.columns} ({p.name}) pixels"
            )
        if not np.allclose(p.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise MixedSizes(
                f"Pixel Spacing {_fmt(first.pixel_spacing)} ({first.name}) and "
                f"{_fmt(p.pixel_spacing)} ({p.name})"
            )
        if not np.allclose(p.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            raise MixedOrientation(
                f"Image Orientation (Patient) {_fmt(first.orientation)} ({first.name}) and "
                f"{_fmt(p.orientation)} ({p.name})"
            )
    row = np.asarray(first.orientation[:3], dtype=np.float64)
    col = np.asarray(first.orientation[3:], dtype=np.float64)
    row /= np.linalg.norm(row)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = np.asarray([p.position for p in planes], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    positions = positions[order]
    diffs = np.diff(along)

    if len(planes) == 1:
        dz = default_spacing or 1.0
    else:
        typical = float(np.median(diffs))
        dup_limit = max(1e-3, spacing_tolerance * max(typical, 1e-3))
        dup = np.flatnonzero(diffs <= dup_limit)
        if dup.size:
            k = int(dup[0])
            at = float(along[k])
            names = tuple(
                planes[int(i)].name
                for i, d in zip(order, along, strict=True)
                if abs(d - at) <= dup_limit
            )
            raise DuplicateSlices(
                f"{len(names)} slices at {at:g} mm along the normal: {', '.join(names[:4])}"
                + (" ..." if len(names) > 4 else ""),
                position=at,
                instances=names,
            )
        span = positions[-1] - positions[0]
        length = float(along[-1] - along[0])
        lateral = float(np.linalg.norm(span - length * normal))
        limit = max(POSITION_TOLERANCE, math.tan(math.radians(TILT_TOLERANCE)) * length)
        if lateral > limit:
            angle = math.degrees(math.atan2(lateral, length))
            raise GantryTilt(
                f"the slices shift {lateral:.4g} mm in-plane over {length:.4g} mm along "
                f"the normal (gantry tilt {angle:.2f} degrees): the grid is sheared; "
                "resample the series first",
                angle=angle,
            )
        regular = float(diffs.min())
        ratio = diffs / regular
        whole = np.rint(ratio)
        allowed = max(spacing_tolerance * regular, POSITION_TOLERANCE)
        off = np.abs(diffs - whole * regular) > allowed
        if off.any():
            raise InconsistentSpacing(
                "the distance between neighbouring slices varies: "
                f"{_fmt(sorted(set(np.round(diffs, 4).tolist())))} mm",
                spacings=tuple(float(d) for d in diffs),
            )
        gaps = tuple(
            (float(along[i]), float(along[i + 1]), int(whole[i]) - 1)
            for i in np.flatnonzero(whole > 1)
        )
        if gaps:
            lost = sum(g[2] for g in gaps)
            shown = "; ".join(f"{a:g} to {b:g} mm" for a, b, _ in gaps[:3])
            raise MissingSlices(
                f"{lost} slice(s) missing in a series spaced {regular:g} mm: gaps between "
                f"{shown}" + (" ..." if len(gaps) > 3 else ""),
                spacing=regular,
                gaps=gaps,
            )
        dz = float((along[-1] - along[0]) / (len(planes) - 1))
    dy, dx = first.pixel_spacing
    origin = tuple(float(v) for v in positions[0])
    return Stack(
        order=tuple(int(i) for i in order),
        spacing=(float(dz), float(dy), float(dx)),
        origin=(origin[0], origin[1], origin[2]),
        direction=np.stack([normal, col, row]),
    )
