"""Masks as DICOM Segmentation instances, built by highdicom.

:func:`segmentation` takes a mask aligned with a :class:`Volume` (same
(z, y, x) shape) and returns a pydicom Dataset of the Segmentation IOD that
references the volume's source instances and carries its frame of
reference and plane positions: a PACS and a viewer place it exactly over
the series it was drawn on. The IOD itself is highdicom's, not written here.

The mask may be:

* boolean (z, y, x): one binary segment;
* integer (z, y, x): a label map, 0 for background and 1..n for n segments;
* floating (z, y, x) in [0, 1] with ``fractional=True``: one fractional
  (probability or occupancy) segment;
* a stack (z, y, x, n) of boolean, or floats in [0, 1], for n possibly
  overlapping segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .. import __name__ as _package
from .errors import ImagingError, MismatchedImage
from .volume import Volume

__all__ = ["Segment", "segmentation"]

_SOFTWARE = "aiodicomnet"


def _code(value: str | Code, what: str) -> Code:
    """A coded concept: a Code, or the keyword of one in pydicom's code dictionary."""
    if isinstance(value, Code):
        return value
    for scheme in ("SCT", "DCM"):
        try:
            found: Code = getattr(getattr(codes, scheme), value)
            return found
        except AttributeError:
            continue
    raise MismatchedImage(
        f"unknown {what} {value!r}: give a pydicom Code, or a keyword of "
        "pydicom.sr.codedict.codes.SCT (such as 'Tissue', 'Bone', 'Organ')"
    )


@dataclass(frozen=True)
class Segment:
    """What one segment is: its label, category and type codes, colour and algorithm.

    Args:
        label: Segment Label, shown by viewers.
        category: Segmented Property Category (CID 7150): a pydicom ``Code``
            or a keyword of ``pydicom.sr.codedict.codes.SCT`` ("Tissue",
            "AnatomicalStructure", "MorphologicallyAbnormalStructure", ...).
        type: Segmented Property Type (CID 7151 and others): ``"Bone"``,
            ``"SoftTissue"``, ``"Liver"``, ... or a Code.
        colour: the recommended display colour, RGB 0-255.
        algorithm: the name of the algorithm that made it (then the segment
            is SEMIAUTOMATIC), or None for MANUAL.
        algorithm_family: the family of that algorithm (CID 7162), a
            keyword of ``codes.DCM`` or a Code.
        algorithm_version: its version.
    """

    label: str
    category: str | Code = "Tissue"
    type: str | Code = "Tissue"
    colour: tuple[int, int, int] | None = None
    algorithm: str | None = None
    algorithm_family: str | Code = "HistogramAnalysis"
    algorithm_version: str = "1"

    def description(self, number: int) -> hd.seg.SegmentDescription:
        """highdicom's Segment Description for segment ``number``."""
        algorithm = None
        if self.algorithm:
            algorithm = hd.AlgorithmIdentificationSequence(
                name=self.algorithm,
                family=_code(self.algorithm_family, "algorithm family"),
                version=self.algorithm_version,
            )
        colour = None
        if self.colour is not None:
            if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
                raise MismatchedImage(f"colour {self.colour!r} is not RGB in 0-255")
            colour = hd.color.CIELabColor.from_rgb(*self.colour)
        return hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=self.label,
            segmented_property_category=_code(self.category, "category"),
            segmented_property_type=_code(self.type, "type"),
            algorithm_type="SEMIAUTOMATIC" if algorithm else "MANUAL",
            algorithm_identification=algorithm,
            display_color=colour,
        )


def _frames(mask: np.ndarray, volume: Volume, n: int, fractional: bool) -> np.ndarray:
    """The mask as highdicom wants it: (frames, rows, columns[, segments])."""
    if mask.shape[:3] != volume.shape:
        raise MismatchedImage(
            f"a mask of shape {mask.shape} for a volume of shape {volume.shape} (z, y, x)"
        )
    if fractional:
        if mask.dtype.kind != "f":
            raise MismatchedImage(f"a fractional mask must hold floats, not {mask.dtype}")
        if mask.size and (np.nanmin(mask) < 0 or np.nanmax(mask) > 1 or np.isnan(mask).any()):
            raise MismatchedImage("a fractional mask must hold values in [0, 1]")
        return mask.astype(np.float32, copy=False)
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind in "iu" and mask.ndim == 3:
        values = np.unique(mask)
        if values.size and (values.min() < 0 or values.max() > n):
            raise MismatchedImage(
                f"a label map with values {values.min()}..{values.max()} for {n} segment(s)"
            )
        return mask.astype(np.uint16 if n > 255 else np.uint8, copy=False)
    raise MismatchedImage(
        f"a binary mask must be bool (or an integer label map), not {mask.dtype}; "
        "pass fractional=True for probabilities"
    )


def segmentation(
    volume: Volume,
    mask: Any,
    segments: Segment | str | Sequence[Segment | str],
    *,
    fractional: bool = False,
    series_number: int = 9000,
    series_description: str | None = None,
    instance_number: int = 1,
    content_label: str = "SEGMENTATION",
    manufacturer: str = "aiodicomnet",
    model: str = "aiodicomnet",
    omit_empty_frames: bool = False,
) -> Dataset:
    """A DICOM Segmentation of ``volume`` from ``mask`` (see the module for the shapes).

    Args:
        volume: the volume the mask was drawn on (its ``headers`` are the
            referenced source images).
        mask: boolean, label map, fractional, or (z, y, x, n) stack.
        segments: one :class:`Segment` (or a label) per segment, in the
            order of the mask's labels or of its last axis.
        fractional: the mask holds probabilities in [0, 1].
        series_number, series_description, instance_number: of the new series.
        content_label: Content Label (a DICOM CS: upper case, no spaces).
        manufacturer, model: of the equipment that made it.
        omit_empty_frames: leave out frames with nothing segmented (smaller;
            keep them for readers that expect one frame per source slice).

    Returns:
        the Segmentation data set (with ``file_meta``), ready for
        :meth:`~aiodicomnet.Client.store` or ``save_as``.

    Raises:
        MismatchedImage: a mask whose shape, type or values do not fit the
            volume and the segments; or a segment highdicom refuses.
    """
    listed = [segments] if isinstance(segments, (Segment, str)) else list(segments)
    specs = [Segment(s) if isinstance(s, str) else s for s in listed]
    if not specs:
        raise MismatchedImage("no segment described")
    array = np.asarray(mask)
    n = len(specs)
    if array.ndim == 4:
        if array.shape[3] != n:
            raise MismatchedImage(f"a mask with {array.shape[3]} segments for {n} description(s)")
    elif array.ndim != 3:
        raise MismatchedImage(f"a mask must be (z, y, x) or (z, y, x, n), not {array.shape}")
    elif n > 1 and (array.dtype == bool or fractional):
        raise MismatchedImage(
            f"{n} segments need a label map or a (z, y, x, {n}) stack, not one {array.dtype} mask"
        )
    frames = _frames(array, volume, n, fractional)
    dz, dy, dx = volume.spacing
    thickness = volume.headers[0].get("SliceThickness")
    try:
        seg = hd.seg.Segmentation(
            source_images=list(volume.headers),
            pixel_array=frames,
            segmentation_type="FRACTIONAL" if fractional else "BINARY",
            segment_descriptions=[spec.description(i + 1) for i, spec in enumerate(specs)],
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer=manufacturer,
            manufacturer_model_name=model,
            software_versions=_package + " " + _version(),
            device_serial_number="0",
            content_label=content_label,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            pixel_measures=hd.PixelMeasuresSequence(
                pixel_spacing=(dy, dx),
                slice_thickness=float(thickness) if thickness else dz,
                spacing_between_slices=dz,
            ),
            plane_orientation=hd.PlaneOrientationSequence("PATIENT", volume.image_orientation),
            plane_positions=[
                hd.PlanePositionSequence("PATIENT", volume.plane_position(z))
                for z in range(volume.shape[0])
            ],
            omit_empty_frames=omit_empty_frames,
        )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ImagingError):
            raise
        raise MismatchedImage(f"highdicom refused the segmentation: {exc}") from exc
    if series_description:
        seg.SeriesDescription = series_description
    return seg


def _version() -> str:
    from .. import __version__

    return __version__
