"""A series as a volume: voxels (z, y, x) with their geometry and their sources.

:func:`volume_from` reads every header first, orders the slices along the
slice normal and checks the grid (:mod:`~aiodicomnet.imaging.geometry`),
then allocates the voxels once and decodes one instance at a time into
them, applying Rescale Slope and Intercept (from the per-frame or shared
functional groups for enhanced multi-frame CT and MR). Peak memory is the
volume plus one instance.

It is CPU work: call it from a worker thread, or ``await``
:func:`load_volume_from` (which runs it in one) from the event loop.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .._dimse.bridge import run_in_thread
from ._extra import require
from .errors import MixedSeries, NotAnImage
from .geometry import Plane, stack
from .pixels import Rescale, decode_frames, output_dtype, rescale_into
from .sources import Source, SourceLike, as_source

__all__ = ["SliceRef", "Volume", "load_volume_from", "volume_from"]


@dataclass(frozen=True)
class SliceRef:
    """Where one slice of a volume came from.

    Attributes:
        sop_class_uid, sop_instance_uid: its instance.
        frame: its frame number (1-based) in a multi-frame instance, else None.
    """

    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None


@dataclass(eq=False)
class Volume:
    """Voxels and the geometry that places them in the patient (LPS, mm).

    Every per-axis tuple is in the voxels' own order, (z, y, x): slice, row, column.

    Attributes:
        voxels: the rescaled values, shape (slices, rows, columns).
        spacing: (between slices, between rows, between columns), mm.
        origin: the centre of voxel (0, 0, 0): the first slice's Image
            Position (Patient), LPS mm.
        direction: 3x3; its rows are the LPS unit vectors of the z, y and x
            axes: the slice normal, the column cosines, the row cosines
            (Image Orientation (Patient) gives x then y).
        study_instance_uid, series_instance_uid, frame_of_reference_uid: of
            the source series.
        slices: where each slice came from, in z order.
        headers: the source data sets without pixel data (one per instance,
            in the order of their first slice), for objects that refer to
            the series, such as a segmentation.
    """

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    slices: tuple[SliceRef, ...]
    headers: tuple[Dataset, ...] = field(repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, columns)."""
        z, y, x = self.voxels.shape
        return (z, y, x)

    @property
    def affine(self) -> np.ndarray:
        """4x4: a voxel index (z, y, x, 1) to its LPS position (x, y, z, 1), mm."""
        m = np.eye(4)
        m[:3, :3] = (self.direction * np.asarray(self.spacing)[:, None]).T
        m[:3, 3] = self.origin
        return m

    def position(self, index: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS positions (mm) of voxel indices (z, y, x): one (3,) or many (n, 3)."""
        idx = np.asarray(index, dtype=np.float64)
        scaled = idx * np.asarray(self.spacing)
        out: np.ndarray = np.asarray(self.origin) + scaled @ self.direction
        return out

    def plane_position(self, z: int) -> tuple[float, float, float]:
        """Image Position (Patient) of slice ``z``."""
        p = self.position((z, 0, 0))
        return (float(p[0]), float(p[1]), float(p[2]))

    @property
    def image_orientation(self) -> tuple[float, float, float, float, float, float]:
        """Image Orientation (Patient): row cosines then column cosines."""
        r, c = self.direction[2], self.direction[1]
        return (
            float(r[0]), float(r[1]), float(r[2]), float(c[0]), float(c[1]), float(c[2])
        )  # fmt: skip

    def to_sitk(self) -> Any:
        """This volume as a ``SimpleITK.Image`` (needs SimpleITK, in the ``imaging`` extra).

        ITK orders axes (x, y, z): spacing and direction are reversed to it,
        and the voxels are shared through a copy SimpleITK makes.
        """
        sitk = require("SimpleITK", "converting a volume to a SimpleITK image")
        image = sitk.GetImageFromArray(self.voxels)
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(float(v) for v in self.direction[::-1].T.ravel()))
        return image

    def __repr__(self) -> str:
        z, y, x = self.shape
        return (
            f"<Volume {z}x{y}x{x} {self.voxels.dtype} spacing={_mm(self.spacing)} "
            f"origin={_mm(self.origin)} series={self.series_instance_uid}>"
        )


def allocate(shape: tuple[int, int, int], dtype: np.dtype[Any]) -> np.ndarray:
    """An uninitialised array for the voxels, its memory mapped in at once where it can be.

    Every page of a new volume is written once, and on Linux the first
    write to each page is a page fault: for 500 slices of 512x512 int32
    (500 MiB), faulting the pages one by one as slices are decoded took
    ~0.9 s on the 2-core benchmark machine, asking the kernel to populate
    the whole mapping up front (``MAP_POPULATE``) ~0.25 s. Elsewhere, or
    if the mapping fails, a plain ``numpy.empty``.
    """
    count = int(np.prod(shape)) * dtype.itemsize
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None or count == 0:
        return np.empty(shape, dtype=dtype)
    try:
        mapped = mmap.mmap(-1, count, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except OSError:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mapped, dtype=dtype).reshape(shape)


def _mm(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


@dataclass
class _Frame:
    source: int
    frame: int | None  # 0-based within a multi-frame instance
    plane: Plane
    rescale: Rescale


def _floats(value: Any, n: int, what: str, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n:
        raise NotAnImage(f"{name}: {what} is {value!r}, not {n} numbers")
    return out


def _item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _group(per_frame: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    """A functional group macro's item: per-frame first, then shared."""
    for groups in (per_frame, shared):
        if groups is not None:
            found = _item(groups, keyword)
            if found is not None:
                return found
    return None


def _rescale(ds: Dataset | None) -> Rescale:
    if ds is None:
        return (1.0, 0.0)
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    return (
        float(slope) if slope not in (None, "") else 1.0,
        float(intercept) if intercept not in (None, "") else 0.0,
    )


def _frames_of(index: int, header: Dataset, name: str) -> list[_Frame]:
    """The slices of one instance: its frames, each with its plane and rescale."""
    rows, columns = header.get("Rows"), header.get("Columns")
    if rows is None or columns is None:
        raise NotAnImage(f"{name}: no Rows/Columns (is it an image?)")
    uid = str(header.get("SOPInstanceUID", name))
    if "ModalityLUTSequence" in header:
        raise NotAnImage(f"{name}: a Modality LUT Sequence, not a linear rescale, is not supported")
    if "PerFrameFunctionalGroupsSequence" in header:
        shared = _item(header, "SharedFunctionalGroupsSequence")
        frames = []
        for k, per_frame in enumerate(header.PerFrameFunctionalGroupsSequence):
            where = f"{uid} frame {k + 1}"
            position = _group(per_frame, shared, "PlanePositionSequence")
            orient = _group(per_frame, shared, "PlaneOrientationSequence")
            measures = _group(per_frame, shared, "PixelMeasuresSequence")
            if position is None or orient is None or measures is None:
                raise NotAnImage(
                    f"{where}: no Plane Position, Plane Orientation or Pixel Measures "
                    "functional group"
                )
            plane = Plane(
                where,
                _floats(position.get("ImagePositionPatient"), 3, "Image Position (Patient)", where),  # type: ignore[arg-type]
                _floats(
                    orient.get("ImageOrientationPatient"), 6, "Image Orientation (Patient)", where
                ),  # type: ignore[arg-type]
                _floats(measures.get("PixelSpacing"), 2, "Pixel Spacing", where),  # type: ignore[arg-type]
                int(rows),
                int(columns),
            )
            transform = _group(per_frame, shared, "PixelValueTransformationSequence")
            frames.append(_Frame(index, k, plane, _rescale(transform)))
        return frames
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        raise NotAnImage(
            f"{name}: a multi-frame instance without per-frame functional groups "
            "(no position for each frame)"
        )
    plane = Plane(
        uid,
        _floats(header.get("ImagePositionPatient"), 3, "Image Position (Patient)", name),  # type: ignore[arg-type]
        _floats(header.get("ImageOrientationPatient"), 6, "Image Orientation (Patient)", name),  # type: ignore[arg-type]
        _floats(header.get("PixelSpacing"), 2, "Pixel Spacing", name),  # type: ignore[arg-type]
        int(rows),
        int(columns),
    )
    return [_Frame(index, None, plane, _rescale(header))]


def _same(headers: Sequence[Dataset], sources: Sequence[Source], keyword: str) -> str:
    values = {str(h.get(keyword, "")) for h in headers}
    if len(values) > 1:
        by_value = {str(h.get(keyword, "")): s.name for h, s in zip(headers, sources, strict=True)}
        shown = "; ".join(f"{v or '(none)'} ({n})" for v, n in list(by_value.items())[:3])
        raise MixedSeries(f"instances with different {keyword}: {shown}")
    return values.pop()


def volume_from(
    items: Iterable[SourceLike],
    *,
    dtype: Any = None,
    spacing_tolerance: float = 0.01,
) -> Volume:
    """Build a :class:`Volume` from the instances of one series (blocking: CPU and files).

    Args:
        items: pydicom Datasets, paths of Part 10 files, Part 10 bytes,
            :class:`~aiodicomnet.ReceivedInstance` or
            :class:`~aiodicomnet.IncomingInstance` objects, in any order:
            single-frame slices, or enhanced multi-frame instances.
        dtype: the voxels' type; by default the narrowest that holds every
            rescaled value exactly (see :func:`~aiodicomnet.imaging.pixels.output_dtype`).
        spacing_tolerance: relative tolerance on the distance between slices
            (see :func:`~aiodicomnet.imaging.geometry.stack`).

    Raises:
        ImagingError: the subclass naming the problem (NotAnImage, MixedSeries,
            MixedSizes, MixedOrientation, DuplicateSlices, MissingSlices,
            InconsistentSpacing, GantryTilt, PixelDataError, MissingExtra), its
            message naming the instances involved.
    """
    sources = [as_source(item) for item in items]
    if not sources:
        raise NotAnImage("no instances to make a volume of")
    headers = [s.header() for s in sources]
    series_uid = _same(headers, sources, "SeriesInstanceUID")
    frame_of_reference = _same(headers, sources, "FrameOfReferenceUID")
    study_uid = str(headers[0].get("StudyInstanceUID", ""))
    frames = [f for i, h in enumerate(headers) for f in _frames_of(i, h, sources[i].name)]
    first = headers[0]
    default_spacing = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    grid = stack(
        [f.plane for f in frames],
        spacing_tolerance=spacing_tolerance,
        default_spacing=float(default_spacing) if default_spacing else None,
    )
    bits = {(int(h.get("BitsStored", 16)), int(h.get("PixelRepresentation", 0))) for h in headers}
    if dtype is None:
        bits_stored = max(b for b, _ in bits)
        signed = any(r == 1 for _, r in bits)
        out_type = output_dtype(bits_stored, signed, [f.rescale for f in frames])
    else:
        out_type = np.dtype(dtype)

    z_of = {id(frames[i]): z for z, i in enumerate(grid.order)}
    by_source: dict[int, list[_Frame]] = {}
    for f in frames:
        by_source.setdefault(f.source, []).append(f)
    rows, columns = frames[0].plane.rows, frames[0].plane.columns
    voxels = allocate((len(frames), rows, columns), out_type)
    for i, source in enumerate(sources):
        stored = decode_frames(source.dataset(), source.name)
        mine = by_source[i]
        if stored.shape != (len(mine), rows, columns):
            raise NotAnImage(
                f"{source.name}: pixel data of shape {stored.shape}, expected "
                f"{(len(mine), rows, columns)}"
            )
        for f in mine:
            rescale_into(voxels[z_of[id(f)]], stored[f.frame or 0], f.rescale)
        del stored

    slices = []
    for i in grid.order:
        f = frames[i]
        h = headers[f.source]
        slices.append(
            SliceRef(
                str(h.get("SOPClassUID", "")),
                str(h.get("SOPInstanceUID", "")),
                None if f.frame is None else f.frame + 1,
            )
        )
    seen: dict[int, None] = {}
    for i in grid.order:
        seen.setdefault(frames[i].source, None)
    return Volume(
        voxels=voxels,
        spacing=grid.spacing,
        origin=grid.origin,
        direction=grid.direction,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=frame_of_reference,
        slices=tuple(slices),
        headers=tuple(headers[i] for i in seen),
    )


async def load_volume_from(
    items: Iterable[SourceLike], *, dtype: Any = None, spacing_tolerance: float = 0.01
) -> Volume:
    """:func:`volume_from` in a worker thread, so the event loop stays free."""
    listed = list(items)
    return await run_in_thread(
        lambda: volume_from(listed, dtype=dtype, spacing_tolerance=spacing_tolerance),
        name="aiodicomnet-volume",
    )
