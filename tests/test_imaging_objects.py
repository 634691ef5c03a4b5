"""Images back into DICOM: masks as Segmentation (highdicom), meshes as Encapsulated STL.

Every object is checked by dciodvfy (dicom3tools) against its IOD and read
back by a third party: highdicom for SEG (voxels and geometry), numpy-stl for
the STL inside the Encapsulated STL (vertices in patient coordinates).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from aiodicomnet.imaging import Segment, Volume, encapsulated_stl, segmentation, volume_from
from aiodicomnet.imaging.errors import MismatchedImage
from tests.test_imaging_data import dciodvfy_errors, phantom_ct

hd = pytest.importorskip("highdicom")
stl = pytest.importorskip("stl")


@pytest.fixture(scope="module")
def volume() -> Volume:
    return volume_from(phantom_ct())


def saved(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def read_seg_volume(path: Path, volume: Volume, **kwargs: object) -> np.ndarray:
    """highdicom's reading of a SEG as an array in ``volume``'s (z, y, x) order."""
    seg = hd.seg.segread(path)
    read = seg.get_volume(**kwargs)
    array = read.array
    if np.allclose(read.affine, volume.affine, atol=1e-4):
        return np.asarray(array)
    flipped = volume.affine @ np.diag([-1.0, 1, 1, 1])
    flipped[:3, 3] = volume.position((volume.shape[0] - 1, 0, 0))
    assert np.allclose(read.affine, flipped, atol=1e-4), (read.affine, volume.affine)
    return np.asarray(array[::-1])


def lower_half(volume: Volume) -> np.ndarray:
    """Bone in the lower half of the slices only: a mask that is not symmetric in z."""
    mask = volume.voxels > 500
    mask[volume.shape[0] // 2 :] = False
    return mask


def test_binary_segmentation_is_valid_and_reads_back(volume: Volume, tmp_path: Path) -> None:
    mask = lower_half(volume)
    seg = segmentation(
        volume,
        mask,
        Segment(
            "bone", category="Tissue", type="Bone", colour=(241, 214, 145), algorithm="threshold"
        ),
        series_description="bone mask",
    )
    path = saved(seg, tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == []
    read = hd.seg.segread(path)
    assert read.SegmentationType == "BINARY"
    assert read.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert read.StudyInstanceUID == volume.study_instance_uid
    assert read.PatientID == volume.headers[0].PatientID
    description = read.get_segment_description(1)
    assert description.segment_label == "bone"
    assert description.segmented_property_type == codes.SCT.Bone
    assert description.algorithm_type.value == "SEMIAUTOMATIC"
    colour = hd.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue)
    assert colour.to_rgb() == pytest.approx((241, 214, 145), abs=1)
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in read.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {s.sop_instance_uid for s in volume.slices}
    assert read.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.series_instance_uid
    assert np.array_equal(read_seg_volume(path, volume)[..., 0], mask)


def test_label_map_gives_several_segments(volume: Volume, tmp_path: Path) -> None:
    labels = (volume.voxels > -500).astype(np.uint8) + lower_half(volume)
    seg = segmentation(
        volume,
        labels,
        [Segment("body", type="SoftTissue", colour=(200, 120, 100)), Segment("bone", type="Bone")],
    )
    path = saved(seg, tmp_path / "labels.dcm")
    assert dciodvfy_errors(path) == []
    read = hd.seg.segread(path)
    assert list(read.get_segment_numbers()) == [1, 2]
    assert read.get_segment_description(2).segment_label == "bone"
    assert np.array_equal(read_seg_volume(path, volume, combine_segments=True), labels)


def test_stacked_overlapping_segments(volume: Volume, tmp_path: Path) -> None:
    body = volume.voxels > -500
    bone = lower_half(volume)
    seg = segmentation(volume, np.stack([body, bone], axis=-1), ["body", "bone"])
    path = saved(seg, tmp_path / "stack.dcm")
    assert dciodvfy_errors(path) == []
    read = read_seg_volume(path, volume)
    assert np.array_equal(read[..., 0], body) and np.array_equal(read[..., 1], bone)


def test_fractional_segmentation(volume: Volume, tmp_path: Path) -> None:
    probability = np.clip((volume.voxels.astype(np.float32) + 1000) / 2000, 0, 1)
    probability[: volume.shape[0] // 3] = 0
    seg = segmentation(volume, probability, Segment("density"), fractional=True)
    path = saved(seg, tmp_path / "fractional.dcm")
    assert dciodvfy_errors(path) == []
    read = hd.seg.segread(path)
    assert read.SegmentationType == "FRACTIONAL"
    assert np.abs(read_seg_volume(path, volume)[..., 0] - probability).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize(
    ("mask", "segments", "kwargs", "match"),
    [
        (np.zeros((3, 24, 20), bool), "x", {}, "shape"),
        (np.zeros((12, 24, 20), np.float32), "x", {}, "bool"),
        (np.full((12, 24, 20), 3, np.uint8), ["a", "b"], {}, "label map"),
        (np.full((12, 24, 20), 1.5, np.float32), "x", {"fractional": True}, r"\[0, 1\]"),
        (np.zeros((12, 24, 20), bool), ["a", "b"], {}, "2 segments"),
        (np.zeros((12, 24, 20, 3), bool), ["a", "b"], {}, "3 segments"),
        (np.zeros((12, 24, 20), bool), Segment("x", type="NoSuchTissueAnywhere"), {}, "unknown"),
        (np.zeros((12, 24, 20), bool), Segment("x", colour=(300, 0, 0)), {}, "RGB"),
    ],
)
def test_masks_that_do_not_fit(
    volume: Volume, mask: np.ndarray, segments: object, kwargs: dict[str, bool], match: str
) -> None:
    with pytest.raises(MismatchedImage, match=match):
        segmentation(volume, mask, segments, **kwargs)  # type: ignore[arg-type]


# -- Encapsulated STL ------------------------------------------------------------------

TETRAHEDRON = (
    np.array([[2.0, 4.0, 3.0], [2.0, 4.0, 12.0], [2.0, 16.0, 3.0], [9.0, 4.0, 3.0]]),
    np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]),
)


def stl_of(ds: Dataset) -> object:
    data = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
    return stl.mesh.Mesh.from_file("surface.stl", fh=io.BytesIO(data))


def test_encapsulated_stl_in_voxel_coordinates(volume: Volume, tmp_path: Path) -> None:
    vertices, faces = TETRAHEDRON
    ds = encapsulated_stl(volume, vertices, faces, coordinates="voxel", series_description="bone")
    path = saved(ds, tmp_path / "stl.dcm")
    assert dciodvfy_errors(path) == []
    read = dcmread(path)
    assert read.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.3"
    assert read.Modality == "M3D"
    assert read.MIMETypeOfEncapsulatedDocument == "model/stl"
    assert read.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert read.StudyInstanceUID == volume.study_instance_uid
    assert read.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    assert {i.ReferencedSOPInstanceUID for i in read.SourceInstanceSequence} == {
        s.sop_instance_uid for s in volume.slices
    }
    mesh = stl_of(read)
    expected = volume.position(vertices)[faces]
    assert np.allclose(mesh.vectors, expected, atol=1e-4)  # type: ignore[attr-defined]


def test_encapsulated_stl_from_an_ascii_stl_file(volume: Volume, tmp_path: Path) -> None:
    vertices, faces = TETRAHEDRON
    mesh = stl.mesh.Mesh(np.zeros(len(faces), dtype=stl.mesh.Mesh.dtype))
    mesh.vectors[:] = volume.position(vertices)[faces]
    source = tmp_path / "surface.stl"
    mesh.save(str(source), mode=stl.Mode.ASCII)
    assert source.read_bytes().startswith(b"solid")
    ds = encapsulated_stl(volume, stl=source)
    path = saved(ds, tmp_path / "stl.dcm")
    assert dciodvfy_errors(path) == []
    assert np.allclose(stl_of(dcmread(path)).vectors, mesh.vectors, atol=1e-4)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("vertices", "faces", "match"),
    [
        (np.zeros((4, 2)), TETRAHEDRON[1], r"\(n, 3\)"),
        (TETRAHEDRON[0], np.array([[0, 1, 7]]), "indices"),
        (TETRAHEDRON[0], np.zeros((0, 3), int), "without triangles"),
        (np.full((4, 3), np.nan), TETRAHEDRON[1], "non-finite"),
        (TETRAHEDRON[0], np.zeros((2, 3)), "integer"),
    ],
)
def test_meshes_that_do_not_fit(
    volume: Volume, vertices: np.ndarray, faces: np.ndarray, match: str
) -> None:
    with pytest.raises(MismatchedImage, match=match):
        encapsulated_stl(volume, vertices, faces)


def test_stl_input_is_one_or_the_other(volume: Volume, tmp_path: Path) -> None:
    with pytest.raises(MismatchedImage, match="either"):
        encapsulated_stl(volume)
    with pytest.raises(MismatchedImage, match=r"readable STL|without triangles"):
        encapsulated_stl(volume, stl=b"no STL here")


def test_objects_from_an_enhanced_multiframe_volume(tmp_path: Path) -> None:
    """A volume from one enhanced CT instance: SEG and STL reference that instance."""
    from pydicom.uid import generate_uid

    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        phantom_ct(), series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1,
    )  # fmt: skip
    volume = volume_from([enhanced])
    mask = lower_half(volume)
    seg = saved(segmentation(volume, mask, "bone"), tmp_path / "seg.dcm")
    assert dciodvfy_errors(seg) == []
    assert np.array_equal(read_seg_volume(seg, volume)[..., 0], mask)
    vertices, faces = TETRAHEDRON
    surface = encapsulated_stl(volume, vertices, faces, coordinates="voxel")
    path = saved(surface, tmp_path / "stl.dcm")
    assert dciodvfy_errors(path) == []
    assert [i.ReferencedSOPInstanceUID for i in surface.SourceInstanceSequence] == [
        enhanced.SOPInstanceUID
    ]
