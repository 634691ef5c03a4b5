"""What can go wrong between instances and images, one class per problem.

Every class derives from :class:`aiodicomnet.errors.ImagingError` (itself a
:class:`~aiodicomnet.errors.DicomError` and a :class:`ValueError`), so
``except ImagingError`` catches them all::

    ImagingError
    +-- NotAnImage              no pixel data, no geometry, or colour/other samples
    +-- MixedSeries             instances of several series or frames of reference
    +-- MixedSizes              slices with different Rows/Columns or Pixel Spacing
    +-- MixedOrientation        slices with different Image Orientation (Patient)
    +-- DuplicateSlices         two slices at one position along the normal
    +-- MissingSlices           a gap that is a whole number of slice spacings
    +-- InconsistentSpacing     spacing along the normal that varies otherwise
    +-- GantryTilt              slices shifted in-plane from one to the next
    +-- PixelDataError          pixel data that cannot be decoded
    +-- MismatchedImage         a mask or mesh that does not fit its volume
    +-- SeriesNotFound          no series on the node matches (also a LookupError)
    +-- AmbiguousSeries         several series match where one was meant
    +-- MissingExtra            a package of an optional extra is not installed
                                (also an ImportError)

Each message names the instances and positions involved, so that the error
alone says which file to look at.
"""

from __future__ import annotations

from ..errors import ImagingError

__all__ = [
    "AmbiguousSeries",
    "DuplicateSlices",
    "GantryTilt",
    "ImagingError",
    "InconsistentSpacing",
    "MismatchedImage",
    "MissingExtra",
    "MissingSlices",
    "MixedOrientation",
    "MixedSeries",
    "MixedSizes",
    "NotAnImage",
    "PixelDataError",
    "SeriesNotFound",
]


class NotAnImage(ImagingError):
    """An instance without what a slice needs: pixel data, Image Position and
    Orientation (Patient), Pixel Spacing, or one sample per pixel."""


class MixedSeries(ImagingError):
    """The instances belong to more than one series or frame of reference."""


class MixedSizes(ImagingError):
    """Slices differ in Rows/Columns or in Pixel Spacing."""


class MixedOrientation(ImagingError):
    """Slices differ in Image Orientation (Patient)."""


class DuplicateSlices(ImagingError):
    """Two or more slices lie at the same position along the slice normal
    (for example several temporal positions or echoes in one series).

    Attributes:
        position: the position along the normal, in mm.
        instances: SOP Instance UIDs (with frame numbers for multi-frame) found there.
    """

    def __init__(self, message: str, *, position: float, instances: tuple[str, ...]) -> None:
        super().__init__(message)
        self.position = position
        self.instances = instances


class MissingSlices(ImagingError):
    """The slices are evenly spaced but for gaps of whole spacings: some did not arrive.

    Attributes:
        spacing: the regular spacing, in mm.
        gaps: ``(after, before, missing)`` for each gap: the positions along
            the normal (mm) of the slices on either side, and how many are missing.
    """

    def __init__(
        self, message: str, *, spacing: float, gaps: tuple[tuple[float, float, int], ...]
    ) -> None:
        super().__init__(message)
        self.spacing = spacing
        self.gaps = gaps


class InconsistentSpacing(ImagingError):
    """The distance between neighbouring slices varies (and not by whole spacings).

    Attributes:
        spacings: the distances between neighbouring slices, in mm, in slice order.
    """

    def __init__(self, message: str, *, spacings: tuple[float, ...]) -> None:
        super().__init__(message)
        self.spacings = spacings


class GantryTilt(ImagingError):
    """Each slice is shifted in its own plane from the one before: an acquisition
    with gantry tilt, whose voxel grid is sheared, not rectangular.

    Attributes:
        angle: the tilt, in degrees, between the slice normal and the line
            through the slice positions.
    """

    def __init__(self, message: str, *, angle: float) -> None:
        super().__init__(message)
        self.angle = angle


class PixelDataError(ImagingError):
    """Pixel data that cannot be decoded (corrupt, or a layout not supported)."""


class MismatchedImage(ImagingError):
    """A mask or mesh that does not fit the volume it is meant for (shape, values, segments)."""


class MissingExtra(ImagingError, ImportError):
    """A package needed here is not installed; the message names the extra to install.

    Attributes:
        extra: the aiodicomnet extra that provides it (``"imaging"``).
        packages: the missing packages (importable names or pip names).
    """

    def __init__(self, purpose: str, packages: tuple[str, ...], extra: str = "imaging") -> None:
        self.extra = extra
        self.packages = packages
        super().__init__(
            f"{purpose} needs {', '.join(packages)}: install it with "
            f"`pip install 'aiodicomnet[{extra}]'`"
        )


class SeriesNotFound(ImagingError, LookupError):
    """No series on the node matches the query (or it has no instances)."""


class AmbiguousSeries(ImagingError):
    """The query matches more than one series; narrow it (the message lists them).

    Attributes:
        series: the identifiers of the matching series, as the node returned them.
    """

    def __init__(self, message: str, *, series: tuple[object, ...]) -> None:
        super().__init__(message)
        self.series = series
