"""The whole round trip on real peers: a series on Orthanc becomes a volume in memory
(equal to SimpleITK's reading of the same files); its thresholded mask goes back as a
DICOM SEG and its surface as an Encapsulated STL; both are found on Orthanc, come
back byte-identical, pass dciodvfy, read back in highdicom, and DCMTK's storescp
takes them too. Then each way the one-call scenario can fail.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset

import aiodicomnet as adn
from aiodicomnet.imaging import Segment, Volume, encapsulated_stl, segmentation
from aiodicomnet.imaging.errors import AmbiguousSeries, SeriesNotFound
from aiodicomnet.query import Query
from aiodicomnet.storage import IncomingInstance, MemoryStorage, ReceivedInstance
from tests.data import write_files
from tests.peers.dcmtk import StoreScp
from tests.peers.orthanc import OrthancServer
from tests.test_imaging_data import (
    BONE,
    dciodvfy_errors,
    phantom_ct,
    sitk_series,
)

pytestmark = pytest.mark.orthanc

PATIENT = "IMGROUNDTRIP"
DESCRIPTION = "PHANTOM AXIAL"


def voxel_surface(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boundary of ``mask`` as triangles: two per voxel face between in and out,
    vertices at voxel corners, in (z, y, x) voxel indices."""
    padded = np.pad(mask, 1)
    corners: list[np.ndarray] = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for step in (-1, 1):
            outside = ~np.roll(padded, -step, axis=axis)
            faces = np.argwhere((padded & outside)[1:-1, 1:-1, 1:-1]).astype(np.float64)
            if not len(faces):
                continue
            centre = faces.copy()
            centre[:, axis] += 0.5 * step
            quad = np.repeat(centre[:, None, :], 4, axis=1)
            for k, (du, dv) in enumerate(((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))):
                quad[:, k, others[0]] += du
                quad[:, k, others[1]] += dv
            corners.append(quad[:, [0, 1, 2]])
            corners.append(quad[:, [0, 2, 3]])
    triangles = np.concatenate(corners)
    vertices, faces = np.unique(triangles.reshape(-1, 3), axis=0, return_inverse=True)
    return vertices, faces.reshape(-1, 3)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Dataset], Path]:
    """The phantom series and its files (which SimpleITK reads too)."""
    series = phantom_ct(patient_id=PATIENT, series_description=DESCRIPTION)
    directory = tmp_path_factory.mktemp("phantom")
    write_files(directory, series)
    return series, directory


@pytest.fixture
def on_orthanc(
    orthanc: OrthancServer, phantom: tuple[list[Dataset], Path]
) -> Iterator[OrthancServer]:
    """Orthanc holding the phantom and, in the same study, a second series; emptied
    of this patient afterwards, so other tests see the server as they left it."""
    series, directory = phantom
    other = phantom_ct(
        slices=3,
        patient_id=PATIENT,
        series_description="SCOUT",
        study_uid=series[0].StudyInstanceUID,
    )
    orthanc.upload(sorted(directory.iterdir()))
    orthanc.upload(other)
    yield orthanc
    for patient in orthanc.rest(
        "POST", "/tools/find", {"Level": "Patient", "Query": {"PatientID": PATIENT}}
    ):
        orthanc.rest("DELETE", f"/patients/{patient}")


def series_query(**keys: Any) -> Query:
    return Query.series(PatientID=PATIENT, StudyDate="20240115", **keys)


def data_set_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file written by pydicom (after its File Meta)."""
    from pydicom import dcmread

    meta_length = int(
        dcmread(path, stop_before_pixels=True).file_meta.FileMetaInformationGroupLength
    )
    return path.read_bytes()[132 + 12 + meta_length :]


async def test_done_when(
    on_orthanc: OrthancServer,
    phantom: tuple[list[Dataset], Path],
    storescp: StoreScp,
    tmp_path: Path,
    no_leaks: Any,
) -> None:
    node = on_orthanc.node
    hd = pytest.importorskip("highdicom")
    async with adn.Client("ADNTEST") as client:
        # 1. Query by patient, exam date and series description; the image, in memory.
        volume = await adn.load_volume(client, node, series_query(SeriesDescription=DESCRIPTION))
        voxels, spacing, origin, direction = sitk_series(phantom[1])
        assert np.array_equal(volume.voxels, voxels)
        image = volume.to_sitk()
        assert np.allclose(image.GetSpacing(), spacing, atol=1e-4)
        assert np.allclose(image.GetOrigin(), origin, atol=1e-4)
        assert np.allclose(image.GetDirection(), direction, atol=1e-5)
        assert int(volume.voxels[6, 12, 10]) == BONE

        # 2. Threshold; the mask as SEG, its surface as Encapsulated STL.
        mask = volume.voxels > 300
        seg = segmentation(
            volume,
            mask,
            Segment("bone", type="Bone", colour=(241, 214, 145), algorithm="threshold 300 HU"),
            series_description="bone mask",
        )
        vertices, faces = voxel_surface(mask)
        surface = encapsulated_stl(
            volume, vertices, faces, coordinates="voxel", series_description="bone surface"
        )
        files = {
            "SEG": tmp_path / "seg.dcm",
            "M3D": tmp_path / "stl.dcm",
        }
        seg.save_as(files["SEG"], enforce_file_format=True)
        surface.save_as(files["M3D"], enforce_file_format=True)
        for path in files.values():
            assert dciodvfy_errors(path) == [], path

        stored = await client.store(node, list(files.values()))
        assert stored.ok, stored.failed

        # 3. Both found on Orthanc, in the source study.
        found = await client.find(
            node,
            Query.series(PatientID=PATIENT, StudyInstanceUID=volume.study_instance_uid).returning(
                "Modality", "SeriesDescription"
            ),
        )
        by_modality = {str(ds.Modality): ds for ds in found}
        assert {"CT", "SEG", "M3D"} <= set(by_modality)
        assert by_modality["SEG"].SeriesDescription == "bone mask"
        assert by_modality["M3D"].SeriesDescription == "bone surface"

        # 4. Retrieved back, byte for byte what was sent.
        for modality, path in files.items():
            uid = str(by_modality[modality].SeriesInstanceUID)
            back = await client.retrieve(
                node,
                Query.series(StudyInstanceUID=volume.study_instance_uid, SeriesInstanceUID=uid),
                via="get",
            )
            assert len(back) == 1
            assert back[0].encoded == data_set_bytes(path), modality
            copy = tmp_path / f"back-{modality}.dcm"
            back[0].save(copy)
            assert dciodvfy_errors(copy) == []
            if modality == "SEG":
                read = hd.seg.segread(io.BytesIO(back[0].read()))
                assert read.get_segment_description(1).segment_label == "bone"
                assert int(read.get_volume().array.sum()) == int(mask.sum())

        # 5. DCMTK's storescp takes both too.
        to_dcmtk = await client.store(storescp.node, list(files.values()))
        assert to_dcmtk.ok, to_dcmtk.failed
    received = {p.name for p in storescp.received_files()}
    assert any(seg.SOPInstanceUID in name for name in received)
    assert any(surface.SOPInstanceUID in name for name in received)


async def test_load_volume_by_move_into_memory(
    on_orthanc: OrthancServer,
    phantom: tuple[list[Dataset], Path],
    move_destination: adn.Node,
    no_leaks: Any,
) -> None:
    storage = MemoryStorage()
    async with (
        adn.StorageServer(
            move_destination.ae_title, port=move_destination.port, storage=storage
        ) as scp,
        adn.Client("ADNTEST") as client,
    ):
        volume = await adn.load_volume(
            client, on_orthanc.node, series_query(SeriesDescription="PHANTOM*"), via=scp
        )
    assert np.array_equal(volume.voxels, sitk_series(phantom[1])[0])
    assert isinstance(volume, Volume)


async def test_load_volume_by_series_uid(
    on_orthanc: OrthancServer, phantom: tuple[list[Dataset], Path], no_leaks: Any
) -> None:
    uid = phantom[0][0].SeriesInstanceUID
    async with adn.Client("ADNTEST") as client:
        volume = await adn.load_volume(client, on_orthanc.node, uid)
    assert volume.series_instance_uid == uid
    assert volume.shape == (12, 24, 20)


async def test_no_series_and_several_series(on_orthanc: OrthancServer, no_leaks: Any) -> None:
    async with adn.Client("ADNTEST") as client:
        with pytest.raises(SeriesNotFound, match="no series"):
            await adn.load_volume(client, on_orthanc.node, series_query(SeriesDescription="NONE"))
        with pytest.raises(AmbiguousSeries, match="2 series") as info:
            await adn.load_volume(client, on_orthanc.node, series_query())
        assert "SCOUT" in str(info.value) and DESCRIPTION in str(info.value)
        assert len(info.value.series) == 2
        with pytest.raises(adn.QueryError, match="SERIES-level"):
            await adn.load_volume(client, on_orthanc.node, Query.study(PatientID=PATIENT))


class RefusingStorage(MemoryStorage):
    """Memory storage that cannot keep one instance (as a full disk would refuse it)."""

    def __init__(self, refused: str) -> None:
        self.refused = refused

    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        if incoming.sop_instance_uid == self.refused:
            raise adn.StorageError("no space left for this instance")
        return super().store(incoming)


async def test_an_instance_that_cannot_be_kept(
    on_orthanc: OrthancServer,
    phantom: tuple[list[Dataset], Path],
    move_destination: adn.Node,
    no_leaks: Any,
) -> None:
    """A sub-operation of the C-MOVE fails (our Storage SCP cannot keep the
    instance): Orthanc stops the move with a failure status, and no volume is built
    from what is left."""
    refused = phantom[0][3].SOPInstanceUID
    async with (
        adn.StorageServer(
            move_destination.ae_title, port=move_destination.port, storage=RefusingStorage(refused)
        ) as scp,
        adn.Client("ADNTEST") as client,
    ):
        with pytest.raises(adn.StatusError) as info:
            await adn.load_volume(
                client, on_orthanc.node, series_query(SeriesDescription=DESCRIPTION), via=scp
            )
    assert info.value.service == "C-MOVE"
    assert info.value.category == "Failure"


async def test_store_segmentation_and_surface_in_one_call(
    on_orthanc: OrthancServer, no_leaks: Any
) -> None:
    from aiodicomnet.imaging import store_segmentation, store_surface

    node = on_orthanc.node
    async with adn.Client("ADNTEST") as client:
        volume = await adn.load_volume(client, node, series_query(SeriesDescription=DESCRIPTION))
        mask = volume.voxels > 300
        seg, seg_result = await store_segmentation(client, node, volume, mask, "bone")
        vertices, faces = voxel_surface(mask)
        stl, stl_result = await store_surface(
            client, node, volume, vertices, faces, coordinates="voxel"
        )
        assert seg_result.ok and stl_result.ok
        found = await client.find(
            node,
            Query.image(
                StudyInstanceUID=volume.study_instance_uid,
                SOPInstanceUID=[seg.SOPInstanceUID, stl.SOPInstanceUID],
            ).returning("SOPClassUID"),
        )
    assert {str(ds.SOPClassUID) for ds in found} == {
        "1.2.840.10008.5.1.4.1.1.66.4",
        "1.2.840.10008.5.1.4.1.1.104.3",
    }


def test_itk_example_against_orthanc(on_orthanc: OrthancServer) -> None:
    """examples/itk_volume.py: query by patient, date and description; geometry printed."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "itk_volume.py"),
            f"{on_orthanc.ae_title}@{on_orthanc.host}:{on_orthanc.dicom_port}",
            "--patient-id",
            PATIENT,
            "--study-date",
            "20240115",
            "--series-description",
            DESCRIPTION,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(12, 24, 20) (z, y, x) int16" in proc.stdout
    assert "spacing     (2.5, 0.7, 0.8) mm" in proc.stdout
    assert "SimpleITK   size (20, 24, 12)" in proc.stdout


def test_itk_example_demo() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "examples" / "itk_volume.py"), "--demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(40, 64, 64) (z, y, x)" in proc.stdout


async def test_cancelled_while_retrieving(on_orthanc: OrthancServer, no_leaks: Any) -> None:
    """Cancelled at the first C-GET response: nothing is left behind, and the same
    client loads the series right after."""
    import anyio

    query = series_query(SeriesDescription=DESCRIPTION)
    async with adn.Client("ADNTEST") as client:
        with anyio.CancelScope() as scope:
            await adn.load_volume(
                client, on_orthanc.node, query, on_progress=lambda _: scope.cancel()
            )
        assert scope.cancelled_caught
        volume = await adn.load_volume(client, on_orthanc.node, query)
    assert volume.shape == (12, 24, 20)
