"""Generated image series for the imaging tests: a CT phantom with real geometry.

:func:`phantom_ct` makes a CT series of a ball of bone (1000 HU) inside a
cylinder of soft tissue (40 HU) in air (-1000 HU), on an oblique plane
(so that the slice normal is no axis), at a spacing that is not 1 mm, with
Instance Numbers that run against the positions and slices handed out in
shuffled order: a reader that sorts by anything but the position along
the normal gets it wrong. Stored values are HU + 1024 in 12 bits, with
Rescale Intercept -1024, as CT scanners write them.

The tests in this module check the phantom itself, so that the other tests
can rely on what it holds.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from aiodicomnet.samples import make_dataset, uid

PATIENT_ID = "IMGPHANTOM"
AIR, TISSUE, BONE = -1000, 40, 1000

#: Row and column direction cosines: an axial plane turned 10 degrees about z.
_A = math.radians(10.0)
ORIENTATION = (math.cos(_A), math.sin(_A), 0.0, -math.sin(_A), math.cos(_A), 0.0)


def phantom_hu(slices: int, rows: int, columns: int) -> np.ndarray:
    """The phantom in HU, (z, y, x): air, a cylinder of tissue, a ball of bone."""
    z, y, x = np.meshgrid(
        (np.arange(slices) - (slices - 1) / 2) / max(slices / 2, 1),
        (np.arange(rows) - (rows - 1) / 2) / (rows / 2),
        (np.arange(columns) - (columns - 1) / 2) / (columns / 2),
        indexing="ij",
    )
    hu = np.full((slices, rows, columns), AIR, dtype=np.int16)
    hu[x**2 + y**2 <= 0.8**2] = TISSUE
    hu[x**2 + y**2 + z**2 <= 0.55**2] = BONE
    return hu


def phantom_ct(
    slices: int = 12,
    rows: int = 24,
    columns: int = 20,
    *,
    spacing: float = 2.5,
    pixel_spacing: tuple[float, float] = (0.7, 0.8),
    origin: Sequence[float] = (-12.0, -30.0, 40.0),
    patient_id: str = PATIENT_ID,
    series_description: str = "PHANTOM AXIAL",
    study_uid: str | None = None,
    series_uid: str | None = None,
    bits_stored: int = 12,
    seed: int = 7,
) -> list[Dataset]:
    """The phantom as a shuffled CT series (see the module docstring)."""
    hu = phantom_hu(slices, rows, columns)
    study_uid = study_uid or uid()
    series_uid = series_uid or uid()
    frame_of_reference = uid()
    row = np.asarray(ORIENTATION[:3])
    col = np.asarray(ORIENTATION[3:])
    normal = np.cross(row, col)
    out = []
    for k in range(slices):
        ds = make_dataset(
            patient_id=patient_id,
            patient_name="Phantom^Imaging",
            study_uid=study_uid,
            series_uid=series_uid,
            series_description=series_description,
            study_description="IMAGING PHANTOM",
            instance_number=slices - k,  # against the positions, on purpose
            rows=rows,
            columns=columns,
        )
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [round(v, 6) for v in ORIENTATION]
        ds.ImagePositionPatient = [
            round(float(v), 4) for v in np.asarray(origin) + k * spacing * normal
        ]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = spacing
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.KVP = 120
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype(np.uint16).tobytes()
        out.append(ds)
    random.Random(seed).shuffle(out)
    return out


def sitk_series(
    directory: Path,
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """SimpleITK's own series reader on ``directory``: voxels (z, y, x), spacing, origin,
    direction (ITK's (x, y, z) order)."""
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
    image = reader.Execute()
    return (
        sitk.GetArrayFromImage(image),
        image.GetSpacing(),
        image.GetOrigin(),
        image.GetDirection(),
    )


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for ``path`` (an empty list: valid for its IOD)."""
    binary = shutil.which("dciodvfy")
    if binary is None:
        from tests.peers.util import missing

        missing("dciodvfy (Debian dicom3tools) is not installed")
    proc = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_phantom_holds_air_tissue_and_bone() -> None:
    hu = phantom_hu(12, 24, 20)
    assert set(np.unique(hu).tolist()) == {AIR, TISSUE, BONE}
    assert hu[6, 12, 10] == BONE and hu[0, 0, 0] == AIR and hu[0, 12, 10] == TISSUE


def test_phantom_series_is_shuffled_against_instance_numbers() -> None:
    series = phantom_ct()
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    along = [float(np.dot(ds.ImagePositionPatient, normal)) for ds in series]
    numbers = [int(ds.InstanceNumber) for ds in series]
    assert along != sorted(along)
    by_position = [n for _, n in sorted(zip(along, numbers, strict=True))]
    assert by_position == sorted(numbers, reverse=True)
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
