"""Triangle meshes as DICOM: the Encapsulated STL IOD (PS3.3 A.85), in the volume's frame.

:func:`encapsulated_stl` takes a mesh (vertices and faces, a numpy-stl
``Mesh``, or an STL file) made from a :class:`Volume` and returns an
Encapsulated STL instance: a new series (Modality M3D) in the volume's
study, in its frame of reference (vertices in patient LPS millimetres, the
Measurement Units Code Sequence says so), listing the volume's instances as
its sources. numpy-stl reads and writes the STL; highdicom has no builder
for this IOD, so the modules are filled here, and dciodvfy checks the
result in the tests.
"""

from __future__ import annotations

import datetime
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EncapsulatedSTLStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from ._extra import require
from .errors import MismatchedImage
from .volume import Volume

__all__ = ["encapsulated_stl", "stl_bytes"]

#: Copied from the volume's first instance: Patient, General Study (and charset).
_FROM_SOURCE = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
#: Type 2 attributes: present, empty when the source has none.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def stl_bytes(vertices: Any, faces: Any) -> bytes:
    """A binary STL of the triangles ``vertices[faces]`` (normals computed by numpy-stl).

    Raises:
        MismatchedImage: not (n, 3) vertices and (m, 3) faces, indices out of
            range, non-finite coordinates, or no triangle.
    """
    stl = require("stl", "writing STL", package="numpy-stl")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MismatchedImage(f"vertices must be (n, 3), not {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise MismatchedImage(f"faces must be (m, 3) integer indices, not {f.shape} {f.dtype}")
    if f.shape[0] == 0:
        raise MismatchedImage("a mesh without triangles")
    if f.min() < 0 or f.max() >= len(v):
        raise MismatchedImage(f"face indices {f.min()}..{f.max()} for {len(v)} vertices")
    if not np.isfinite(v).all():
        raise MismatchedImage("vertices with non-finite coordinates")
    mesh = stl.mesh.Mesh(np.zeros(f.shape[0], dtype=stl.mesh.Mesh.dtype))
    mesh.vectors[:] = v[f]
    mesh.update_normals()
    buffer = io.BytesIO()
    mesh.save("surface.stl", fh=buffer, mode=stl.Mode.BINARY, update_normals=False)
    return buffer.getvalue()


def _read_stl(source: str | os.PathLike[str] | bytes | Any) -> bytes:
    """A numpy-stl Mesh, an STL file or its bytes (ASCII or binary) as binary STL."""
    stl = require("stl", "reading STL", package="numpy-stl")
    if isinstance(source, stl.mesh.Mesh):
        mesh = source
    else:
        try:
            if isinstance(source, bytes):
                mesh = stl.mesh.Mesh.from_file("surface.stl", fh=io.BytesIO(source))
            else:
                mesh = stl.mesh.Mesh.from_file(str(Path(source)))
        except (ValueError, AssertionError, RuntimeError, TypeError) as exc:
            raise MismatchedImage(f"not a readable STL ({exc})") from exc
    if len(mesh.vectors) == 0:
        raise MismatchedImage("a mesh without triangles")
    buffer = io.BytesIO()
    mesh.save("surface.stl", fh=buffer, mode=stl.Mode.BINARY, update_normals=False)
    return buffer.getvalue()


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def encapsulated_stl(
    volume: Volume,
    vertices: Any = None,
    faces: Any = None,
    *,
    stl: str | os.PathLike[str] | bytes | Any = None,
    coordinates: str = "patient",
    title: str = "Surface",
    series_number: int = 9001,
    series_description: str | None = None,
    instance_number: int = 1,
    manufacturer: str = "aiodicomnet",
    model: str = "aiodicomnet",
) -> Dataset:
    """An Encapsulated STL instance of a surface made from ``volume``.

    Give either ``vertices`` and ``faces`` (``(n, 3)`` floats, ``(m, 3)``
    vertex indices), or ``stl`` (a path, STL bytes, or a numpy-stl ``Mesh``).

    Args:
        volume: the source volume: its study, frame of reference and instances.
        coordinates: ``"patient"``: vertices are LPS millimetres already;
            ``"voxel"``: vertices are (z, y, x) voxel indices of ``volume``
            (as marching cubes on ``volume.voxels`` gives them), converted
            here with :meth:`Volume.position`. An STL file must be in
            patient coordinates.
        title: Document Title.
        series_number, series_description, instance_number: of the new series.
        manufacturer, model: of the equipment that made it.

    Returns:
        the data set (with ``file_meta``), ready to store or save.

    Raises:
        MismatchedImage: a bad mesh, both or neither of the two inputs, or a
            volume without a frame of reference.
        MissingExtra: numpy-stl is not installed.
    """
    if (stl is None) == (vertices is None or faces is None):
        raise MismatchedImage("give either vertices and faces, or stl")
    if coordinates not in ("patient", "voxel"):
        raise MismatchedImage(f"coordinates must be 'patient' or 'voxel', not {coordinates!r}")
    if not volume.frame_of_reference_uid:
        raise MismatchedImage("the volume has no Frame of Reference UID to place the surface in")
    if stl is not None:
        if coordinates != "patient":
            raise MismatchedImage("an STL file must be in patient coordinates")
        document = _read_stl(stl)
    else:
        points = np.asarray(vertices, dtype=np.float64)
        if coordinates == "voxel":
            if points.ndim != 2 or points.shape[1:] != (3,):
                raise MismatchedImage(f"vertices must be (n, 3), not {points.shape}")
            points = volume.position(points)
        document = stl_bytes(points, faces)

    source = volume.headers[0]
    now = datetime.datetime.now()
    ds = Dataset()
    for keyword in _FROM_SOURCE:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)  # type: ignore[union-attr]
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    ds.SOPClassUID = EncapsulatedSTLStorage
    ds.SOPInstanceUID = generate_uid()
    # Encapsulated Document Series
    ds.Modality = "M3D"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    if series_description:
        ds.SeriesDescription = series_description
    # Frame of Reference
    ds.FrameOfReferenceUID = volume.frame_of_reference_uid
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    # General and Enhanced General Equipment
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "aiodicomnet " + _version()
    # Encapsulated Document
    ds.InstanceNumber = instance_number
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = Sequence()
    ds.MIMETypeOfEncapsulatedDocument = "model/stl"
    ds.SourceInstanceSequence = Sequence(
        _reference(h) for h in volume.headers if h.get("SOPInstanceUID")
    )
    ds.EncapsulatedDocumentLength = len(document)
    ds.EncapsulatedDocument = document + (b"\x00" if len(document) % 2 else b"")
    # Common Instance Reference: the source instances, all in this study
    series_item = Dataset()
    series_item.SeriesInstanceUID = volume.series_instance_uid
    series_item.ReferencedInstanceSequence = Sequence(
        _reference(h) for h in volume.headers if h.get("SOPInstanceUID")
    )
    ds.ReferencedSeriesSequence = Sequence([series_item])
    # Manufacturing 3D Model
    ds.MeasurementUnitsCodeSequence = Sequence([_code("mm", "UCUM", "millimeter")])
    # SOP Common
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.set_original_encoding(False, True)
    return ds


def _reference(header: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return item


def _version() -> str:
    from .. import __version__

    return __version__
