"""A series as a volume: order, geometry and values, against SimpleITK's own reader;
every geometry fault as its typed error; rescale, enhanced multi-frame, every kind of source."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

import aiodicomnet as adn
from aiodicomnet.imaging import Volume, load_volume_from, volume_from
from aiodicomnet.imaging.errors import (
    DuplicateSlices,
    GantryTilt,
    ImagingError,
    InconsistentSpacing,
    MissingSlices,
    MixedOrientation,
    MixedSeries,
    MixedSizes,
    NotAnImage,
    PixelDataError,
)
from aiodicomnet.storage import DiskStorage, IncomingInstance, MemoryStorage
from tests.data import write_files
from tests.test_imaging_data import BONE, phantom_ct, phantom_hu, sitk_series

ROOT = Path(__file__).resolve().parent.parent


def _normal_of(ds: Dataset) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def assert_same_as_sitk(volume: Volume, directory: Path) -> None:
    voxels, spacing, origin, direction = sitk_series(directory)
    assert volume.voxels.shape == voxels.shape
    assert np.array_equal(volume.voxels, voxels)
    image = volume.to_sitk()
    assert np.allclose(image.GetSpacing(), spacing, atol=1e-4)
    assert np.allclose(image.GetOrigin(), origin, atol=1e-4)
    assert np.allclose(image.GetDirection(), direction, atol=1e-5)


# -- order, geometry and values ----------------------------------------------------


def test_files_make_the_volume_simpleitk_reads(tmp_path: Path) -> None:
    series = phantom_ct()
    paths = write_files(tmp_path, series)
    volume = volume_from(paths)
    assert_same_as_sitk(volume, tmp_path)
    # Ordered by position along the normal, not by Instance Number (which runs backwards).
    assert np.array_equal(volume.voxels, phantom_hu(12, 24, 20))
    numbers = {ds.SOPInstanceUID: int(ds.InstanceNumber) for ds in series}
    assert [numbers[s.sop_instance_uid] for s in volume.slices] == list(range(12, 0, -1))
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8), abs=1e-4)
    first = next(ds for ds in series if int(ds.InstanceNumber) == 12)
    assert volume.origin == pytest.approx(tuple(first.ImagePositionPatient))
    assert volume.image_orientation == pytest.approx(tuple(first.ImageOrientationPatient))
    assert np.allclose(volume.direction[0], _normal_of(first))
    assert volume.series_instance_uid == first.SeriesInstanceUID
    assert volume.study_instance_uid == first.StudyInstanceUID
    assert volume.frame_of_reference_uid == first.FrameOfReferenceUID
    assert volume.voxels.dtype == np.int16  # 12 bits stored, intercept -1024
    assert int(volume.voxels[6, 12, 10]) == BONE
    # The last slice's position, from the geometry alone.
    last = next(ds for ds in series if int(ds.InstanceNumber) == 1)
    assert volume.plane_position(11) == pytest.approx(tuple(last.ImagePositionPatient), abs=1e-3)
    assert np.allclose(volume.affine @ [11, 0, 0, 1], [*last.ImagePositionPatient, 1], atol=1e-3)


def _encoded(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _incoming(ds: Dataset) -> IncomingInstance:
    return IncomingInstance(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        encoded=_encoded(ds),
    )


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _deflated(ds: Dataset) -> IncomingInstance:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = compressor.compress(_encoded(ds)) + compressor.flush()
    return IncomingInstance(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=DeflatedExplicitVRLittleEndian,
        encoded=data,
    )


@pytest.mark.parametrize(
    "kind",
    [
        "dataset",
        "bytes",
        "incoming",
        "deflated",
        "received",
        "received-deflated",
        "received-on-disk",
    ],
)
def test_every_kind_of_source_gives_the_same_volume(kind: str, tmp_path: Path) -> None:
    series = phantom_ct()
    if kind == "dataset":
        items: list[object] = list(series)
    elif kind == "bytes":
        items = [_part10(ds) for ds in series]
    elif kind == "incoming":
        items = [_incoming(ds) for ds in series]
    elif kind == "deflated":
        items = [_deflated(ds) for ds in series]
    elif kind == "received":
        storage = MemoryStorage()
        items = [storage.store(_incoming(ds)) for ds in series]
    elif kind == "received-deflated":
        storage = MemoryStorage()
        items = [storage.store(_deflated(ds)) for ds in series]
    else:
        disk = DiskStorage(tmp_path)
        items = [disk.store(_incoming(ds)) for ds in series]
        assert all(i.path is not None and not i.in_memory for i in items)  # type: ignore[attr-defined]
    volume = volume_from(items)  # type: ignore[arg-type]
    assert np.array_equal(volume.voxels, phantom_hu(12, 24, 20))
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8), abs=1e-4)
    # Headers keep no pixel data; the caller's data sets are left as they were.
    assert all("PixelData" not in h for h in volume.headers)
    assert all("PixelData" in ds for ds in series)


async def test_load_volume_from_runs_in_a_worker_thread(tmp_path: Path) -> None:
    paths = write_files(tmp_path, phantom_ct())
    volume = await load_volume_from(paths)
    assert np.array_equal(volume.voxels, phantom_hu(12, 24, 20))


def test_single_slice_takes_its_thickness_as_spacing() -> None:
    ds = phantom_ct(slices=1)[0]
    volume = volume_from([ds])
    assert volume.shape == (1, 24, 20)
    assert volume.spacing[0] == pytest.approx(2.5)


# -- rescale -----------------------------------------------------------------------


def test_fractional_rescale_gives_floats(tmp_path: Path) -> None:
    series = phantom_ct()
    for ds in series:
        ds.RescaleSlope = 0.5
        ds.RescaleIntercept = -512.25
    paths = write_files(tmp_path, series)
    volume = volume_from(paths)
    assert volume.voxels.dtype == np.float32
    stored = phantom_hu(12, 24, 20).astype(np.float64) + 1024
    assert np.allclose(volume.voxels, stored * 0.5 - 512.25)
    assert_same_as_sitk(volume, tmp_path)


def test_rescale_per_slice_is_applied_per_slice() -> None:
    series = phantom_ct()
    hu = phantom_hu(12, 24, 20)
    normal = _normal_of(series[0])
    order = np.argsort([float(np.dot(ds.ImagePositionPatient, normal)) for ds in series])
    for z, i in enumerate(order):
        ds = series[int(i)]
        ds.RescaleIntercept = -1024 - 10 * z
        ds.PixelData = (hu[z].astype(np.int32) + 1024 + 10 * z).astype(np.uint16).tobytes()
    volume = volume_from(series)
    assert np.array_equal(volume.voxels, hu)


def test_16_bit_signed_with_intercept_widens_to_int32() -> None:
    series = phantom_ct()
    for ds in series:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
    volume = volume_from(series)
    assert volume.voxels.dtype == np.int32
    assert np.array_equal(volume.voxels, phantom_hu(12, 24, 20))


def test_dtype_can_be_chosen() -> None:
    volume = volume_from(phantom_ct(), dtype=np.float64)
    assert volume.voxels.dtype == np.float64
    assert np.array_equal(volume.voxels, phantom_hu(12, 24, 20))


# -- enhanced multi-frame --------------------------------------------------------


def _enhanced(series: list[Dataset]) -> Dataset:
    hd = pytest.importorskip("highdicom")
    from pydicom.uid import generate_uid

    return hd.legacy.LegacyConvertedEnhancedCTImage(
        series, series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1,
    )  # fmt: skip


def test_enhanced_multiframe_ct_gives_the_same_volume(tmp_path: Path) -> None:
    series = phantom_ct()
    enhanced = _enhanced(series)
    assert "PerFrameFunctionalGroupsSequence" in enhanced
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path, enforce_file_format=True)
    volume = volume_from([path])
    legacy = volume_from(series)
    assert np.array_equal(volume.voxels, legacy.voxels)
    assert volume.spacing == pytest.approx(legacy.spacing, abs=1e-4)
    assert volume.origin == pytest.approx(legacy.origin, abs=1e-4)
    assert np.allclose(volume.direction, legacy.direction, atol=1e-5)
    assert {s.frame for s in volume.slices} == set(range(1, 13))
    assert {s.sop_instance_uid for s in volume.slices} == {enhanced.SOPInstanceUID}


def test_enhanced_multiframe_per_frame_rescale() -> None:
    series = phantom_ct()
    hu = phantom_hu(12, 24, 20)
    normal = _normal_of(series[0])
    order = np.argsort([float(np.dot(ds.ImagePositionPatient, normal)) for ds in series])
    for z, i in enumerate(order):
        ds = series[int(i)]
        ds.RescaleIntercept = -1000 - 7 * z
        ds.PixelData = (hu[z].astype(np.int32) + 1000 + 7 * z).astype(np.uint16).tobytes()
    enhanced = _enhanced(series)
    per_frame = enhanced.PerFrameFunctionalGroupsSequence[0]
    assert "PixelValueTransformationSequence" in per_frame  # differs per frame
    volume = volume_from([enhanced])
    assert np.array_equal(volume.voxels, hu)


# -- each fault, its typed error --------------------------------------------------


def _sorted(series: list[Dataset]) -> list[Dataset]:
    normal = _normal_of(series[0])
    return sorted(series, key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))


def test_mixed_orientation() -> None:
    series = phantom_ct()
    series[3].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(MixedOrientation, match="Image Orientation") as info:
        volume_from(series)
    assert series[3].SOPInstanceUID in str(info.value)


def test_duplicate_positions() -> None:
    series = _sorted(phantom_ct())
    series[5].ImagePositionPatient = list(series[4].ImagePositionPatient)
    with pytest.raises(DuplicateSlices) as info:
        volume_from(series)
    assert set(info.value.instances) == {series[4].SOPInstanceUID, series[5].SOPInstanceUID}


def test_missing_slices_are_named() -> None:
    series = _sorted(phantom_ct())
    del series[7:9]
    with pytest.raises(MissingSlices, match="2 slice") as info:
        volume_from(series)
    assert info.value.spacing == pytest.approx(2.5, abs=1e-3)
    assert len(info.value.gaps) == 1 and info.value.gaps[0][2] == 2


def test_inconsistent_spacing() -> None:
    series = _sorted(phantom_ct())
    normal = _normal_of(series[0])
    for ds in series[6:]:
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient) + 1.0 * normal)
    with pytest.raises(InconsistentSpacing) as info:
        volume_from(series)
    assert sorted(set(np.round(info.value.spacings, 3))) == [2.5, 3.5]


def test_gantry_tilt() -> None:
    series = _sorted(phantom_ct())
    col = np.asarray(series[0].ImageOrientationPatient[3:], dtype=float)
    for k, ds in enumerate(series):
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient) + k * 0.5 * col)
    with pytest.raises(GantryTilt) as info:
        volume_from(series)
    assert info.value.angle == pytest.approx(np.degrees(np.arctan2(0.5, 2.5)), abs=0.01)


def test_mixed_sizes() -> None:
    series = phantom_ct()
    small = phantom_ct(rows=16)
    with pytest.raises(MixedSeries):  # another series altogether
        volume_from([*series, small[0]])
    odd = copy.deepcopy(small[0])
    odd.SeriesInstanceUID = series[0].SeriesInstanceUID
    odd.FrameOfReferenceUID = series[0].FrameOfReferenceUID
    with pytest.raises(MixedSizes, match="24x20"):
        volume_from([*series, odd])


def test_mixed_pixel_spacing() -> None:
    series = phantom_ct()
    series[2].PixelSpacing = [0.9, 0.8]
    with pytest.raises(MixedSizes, match="Pixel Spacing"):
        volume_from(series)


def test_missing_geometry_and_pixels() -> None:
    series = phantom_ct()
    del series[1].ImagePositionPatient
    with pytest.raises(NotAnImage, match="Image Position"):
        volume_from(series)
    series = phantom_ct()
    del series[1].PixelData
    with pytest.raises(NotAnImage, match="Pixel Data"):
        volume_from(series)
    with pytest.raises(NotAnImage, match="no instances"):
        volume_from([])


def test_colour_is_not_a_volume() -> None:
    series = phantom_ct(slices=2)
    for ds in series:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = bytes(24 * 20 * 3)
    with pytest.raises(NotAnImage, match="samples per pixel"):
        volume_from(series)


def test_truncated_pixel_data() -> None:
    series = phantom_ct()
    series[4].PixelData = series[4].PixelData[:100]
    with pytest.raises(PixelDataError, match=series[4].SOPInstanceUID):
        volume_from(series)


def test_not_dicom() -> None:
    with pytest.raises(NotAnImage, match="not a readable DICOM"):
        volume_from([b"this is no DICOM file at all" * 10])
    with pytest.raises(TypeError, match="cannot read slices"):
        volume_from([42])  # type: ignore[list-item]


def test_every_imaging_error_is_a_dicom_error() -> None:
    assert issubclass(ImagingError, adn.DicomError)
    assert issubclass(ImagingError, ValueError)
    assert adn.ImagingError is ImagingError


# -- without the extra ---------------------------------------------------------------


def test_import_works_without_numpy_and_names_the_extra() -> None:
    program = textwrap.dedent(
        """
        import sys
        for name in ("numpy", "highdicom", "SimpleITK", "stl"):
            sys.modules[name] = None  # as if not installed
        import anyio
        import aiodicomnet as adn
        import aiodicomnet.imaging as imaging
        try:
            imaging.volume_from
        except adn.imaging.errors.MissingExtra as exc:
            assert "aiodicomnet[imaging]" in str(exc), exc
            assert isinstance(exc, ImportError)
        else:
            raise AssertionError("volume_from without numpy")

        async def main():
            # A closed port: had it gone on the wire, this would be a ConnectError.
            node = adn.Node("NOBODY", "127.0.0.1", 9)
            async with adn.Client("ADNTEST") as client:
                try:
                    await adn.load_volume(client, node, adn.Query.series(PatientID="X"))
                except adn.imaging.errors.MissingExtra as exc:
                    assert "numpy" in str(exc) and "aiodicomnet[imaging]" in str(exc), exc
                else:
                    raise AssertionError("load_volume without numpy")

        anyio.run(main)
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"


def test_positions_rounded_to_two_decimals_are_regular(tmp_path: Path) -> None:
    """0.625 mm slices whose positions a scanner wrote with two decimals: the
    distances vary by 0.01 mm (and in-plane by as much), which is no fault."""
    series = phantom_ct(spacing=0.625)
    for ds in series:
        ds.ImagePositionPatient = [round(float(v), 2) for v in ds.ImagePositionPatient]
    paths = write_files(tmp_path, series)
    volume = volume_from(paths)
    assert volume.spacing[0] == pytest.approx(0.625, abs=0.002)
    assert np.array_equal(volume.voxels, phantom_hu(12, 24, 20))
    voxels, spacing, origin, _ = sitk_series(tmp_path)
    assert np.array_equal(volume.voxels, voxels)
    assert volume.to_sitk().GetSpacing() == pytest.approx(spacing, abs=0.002)
    assert volume.to_sitk().GetOrigin() == pytest.approx(origin, abs=1e-4)


def test_a_slight_tilt_is_refused_over_the_whole_stack() -> None:
    """2 degrees of tilt: 0.087 mm per 2.5 mm slice, under the rounding tolerance
    step by step, but 0.96 mm over the stack."""
    series = _sorted(phantom_ct())
    col = np.asarray(series[0].ImageOrientationPatient[3:], dtype=float)
    shift = 2.5 * np.tan(np.radians(2.0))
    for k, ds in enumerate(series):
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient) + k * shift * col)
    with pytest.raises(GantryTilt) as info:
        volume_from(series)
    assert info.value.angle == pytest.approx(2.0, abs=0.01)
