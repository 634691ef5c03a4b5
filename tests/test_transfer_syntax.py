"""Every transfer syntax, both roles, against real peers: the matrix.

One 64x64 image in each of 9 transfer syntaxes (explicit/implicit VR little
endian, explicit big endian, deflate, JPEG baseline, JPEG lossless, JPEG-LS,
RLE, JPEG 2000; made by DCMTK and GDCM, see :mod:`tests.transfer_syntax_files`)
goes through

* the client's C-STORE, to a DCMTK storescp accepting everything (sent as
  held), to one accepting Implicit VR Little Endian only (converted, or
  decompressed), and to Orthanc;
* the Archive answering DCMTK getscu (with the ``-x`` flag that asks for the
  held syntax: getscu proposes it beside the native ones in one context),
  DCMTK movescu (to both storescps) and the client's C-GET;
* the client's C-GET from DCMTK dcmqrscp and Orthanc, which send files as
  they hold them;
* the StorageServer receiving from DCMTK storescu.

Every received file is compared with the sent one: element by element with
the same encoded pixel bytes when the syntax is the same, pixel by pixel when
it was converted. Cells red because of a peer's documented limitation are
xfail (strict) and listed in docs/conformance.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
)
from pynetdicom import AE, evt

from aiodicomnet import Node
from aiodicomnet._dimse import contexts as _cx
from aiodicomnet._dimse.transcode import choose, to_syntax
from aiodicomnet.archive import Archive
from aiodicomnet.client import Client
from aiodicomnet.errors import TranscodeError
from aiodicomnet.query import Query
from aiodicomnet.server import StorageServer
from aiodicomnet.storage import DiskStorage
from aiodicomnet.transfer_syntaxes import NATIVE
from tests.data import make_dataset, uid
from tests.peers.dcmtk import DcmQrScp, StoreScp, dcmtk_tool
from tests.peers.orthanc import OrthancServer
from tests.peers.util import PeerProcess, free_port, wait_for_port
from tests.transfer_syntax_files import (
    SOP_CLASSES,
    SYNTAXES,
    Held,
    check_received,
    make_held_files,
)

pytestmark = [pytest.mark.dcmtk, pytest.mark.filterwarnings("ignore:Invalid value for VR")]

HOST = "127.0.0.1"
NAMES = list(SYNTAXES)
COMPRESSED = {name for name, (ts, _) in SYNTAXES.items() if ts not in NATIVE}

#: getscu's flag asking for each syntax (it proposes it first, with the native ones).
GETSCU_FLAG = {
    "explicit-le": "+xe",
    "implicit-le": "+xi",
    "explicit-be": "+xb",
    "deflate": "+xd",
    "jpeg-baseline": "+xy",
    "jpeg-lossless": "+xs",
    "jpeg-ls": "+xt",
    "rle": "+xr",
    "jpeg2000": "+xv",
}


# -- peers and data (module scope: made once) --------------------------------------------


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Held]:
    return make_held_files(tmp_path_factory.mktemp("ts-files"), "TSX")


@pytest.fixture(scope="module")
def scp_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    """DCMTK storescp accepting every syntax it knows."""
    with StoreScp(tmp_path_factory.mktemp("ts-all"), ae_title="TSALL") as scp:
        yield scp


@pytest.fixture(scope="module")
def scp_implicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    """DCMTK storescp accepting Implicit VR Little Endian only (``+xi``)."""
    workdir = tmp_path_factory.mktemp("ts-implicit")
    with StoreScp(workdir, ae_title="TSIMPL", extra_args=["+xi"]) as scp:
        yield scp


@pytest.fixture(scope="module")
async def archive(
    tmp_path_factory: pytest.TempPathFactory,
    held: dict[str, Held],
    scp_all: StoreScp,
    scp_implicit: StoreScp,
) -> AsyncIterator[Archive]:
    destinations = {"TSALL": (HOST, scp_all.port), "TSIMPL": (HOST, scp_implicit.port)}
    directory = tmp_path_factory.mktemp("ts-archive")
    async with Archive("TSARCHIVE", directory, destinations=destinations) as archive:
        await archive.add([h.path for h in held.values()])
        yield archive


@pytest.fixture(scope="module")
def orthanc_held(orthanc: OrthancServer, held: dict[str, Held]) -> OrthancServer:
    orthanc.upload([h.path for h in held.values()])
    return orthanc


#: dcmqrscp's association profile: Q/R and Verification uncompressed, the matrix's
#: storage SOP classes in every syntax of the matrix (with the SCP role for C-GET).
_QR_MODELS = [f"1.2.840.10008.5.1.4.1.2.{root}.{n}" for root in (1, 2) for n in (1, 2, 3)]
_DCMTK_SYNTAXES = [
    "LocalEndianExplicit",
    "LittleEndianImplicit",
    "OppositeEndianExplicit",
    "DeflatedLittleEndianExplicit",
    "JPEGBaseline",
    "JPEGLossless:Non-hierarchical-1stOrderPrediction",
    "JPEGLSLossless",
    "RLELossless",
    "JPEG2000LosslessOnly",
]


def _dcmqrscp_profile() -> str:
    lines = ["[[TransferSyntaxes]]", "[Uncompressed]"]
    lines += ["TransferSyntax1 = LocalEndianExplicit", "TransferSyntax2 = LittleEndianImplicit"]
    lines += ["[Matrix]"] + [f"TransferSyntax{i} = {ts}" for i, ts in enumerate(_DCMTK_SYNTAXES, 1)]
    lines += ["[[PresentationContexts]]", "[QR]"]
    abstract = [*(f"{uid}\\Uncompressed" for uid in ["1.2.840.10008.1.1", *_QR_MODELS])]
    abstract += [f"{sop}\\Matrix" for sop in sorted(set(SOP_CLASSES.values()))]
    lines += [f"PresentationContext{i} = {a}" for i, a in enumerate(abstract, 1)]
    lines += ["[[SCPSCURoleSelection]]", "[GetRoles]"]
    lines += [f"Role{i} = {sop}\\SCP" for i, sop in enumerate(sorted(set(SOP_CLASSES.values())), 1)]
    lines += ["[[Profiles]]", "[QR]", "PresentationContexts = QR", "SCPSCURoleSelection = GetRoles"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def dcmqrscp_held(
    tmp_path_factory: pytest.TempPathFactory, held: dict[str, Held]
) -> Iterator[DcmQrScp]:
    """DCMTK dcmqrscp holding each file as it is (indexed with dcmqridx)."""
    workdir = tmp_path_factory.mktemp("ts-dcmqrscp")
    profile = workdir / "profile.cfg"
    profile.write_text(_dcmqrscp_profile())
    with DcmQrScp(workdir, extra_args=["-xf", str(profile), "QR", "QR"]) as scp:
        for h in held.values():
            target = scp.directory / h.path.name
            shutil.copyfile(h.path, target)
            dcmtk_tool("dcmqridx", scp.directory, target, check=True)
        yield scp


@pytest.fixture(scope="module")
def pynetdicom_implicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Path]]:
    """pynetdicom's storescp app accepting Implicit VR Little Endian only (``-xi``)."""
    workdir = tmp_path_factory.mktemp("ts-pynetdicom")
    out = workdir / "received"
    out.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "pynetdicom", "storescp", "-xi", "-aet", "PYIMPL"]
    argv += ["-od", str(out), str(port)]
    process = PeerProcess("pynetdicom storescp", argv, log_path=workdir / "storescp.log")
    try:
        wait_for_port(HOST, port, 30, process=process)
        yield Node("PYIMPL", HOST, port), out
    finally:
        process.stop()


def received_by(scp: StoreScp, h: Held) -> Path:
    found = [p for p in scp.received_files() if h.sop_instance_uid in p.name]
    assert len(found) == 1, f"{h.name}: {len(found)} files received by {scp.ae_title}"
    return found[0]


def clear_instance(scp: StoreScp, h: Held) -> None:
    for p in scp.received_files():
        if h.sop_instance_uid in p.name:
            p.unlink()


async def tool(name: str, *args: object) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: dcmtk_tool(name, *map(str, args)))


def image_query(h: Held) -> Query:
    """The one instance (Orthanc also holds a copy in the series, stored by the client)."""
    return Query.image(
        StudyInstanceUID=h.study_instance_uid,
        SeriesInstanceUID=h.series_instance_uid,
        SOPInstanceUID=h.sop_instance_uid,
    )


def series_query(h: Held) -> Query:
    return Query.series(
        StudyInstanceUID=h.study_instance_uid, SeriesInstanceUID=h.series_instance_uid
    )


# -- the client's C-STORE ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_client_store_sends_as_held(
    name: str, held: dict[str, Held], scp_all: StoreScp
) -> None:
    """(dcmconv writes deflated data sets of odd length about half the time: sent
    padded to even length, PS3.5 A.5; tests/test_wire.py checks that every time.)"""
    h = held[name]
    clear_instance(scp_all, h)
    async with Client("TSCLIENT") as client:
        result = await client.store(scp_all.node, h.path)
    assert result.ok, result.outcomes
    check_received(received_by(scp_all, h), h)


@pytest.mark.parametrize("name", NAMES)
async def test_client_store_converts_for_an_implicit_only_peer(
    name: str, held: dict[str, Held], scp_implicit: StoreScp
) -> None:
    """Big endian re-encoded, compressed decompressed: the peer takes nothing else."""
    h = held[name]
    clear_instance(scp_implicit, h)
    async with Client("TSCLIENT") as client:
        result = await client.store(scp_implicit.node, h.path)
    assert result.ok, result.outcomes
    check_received(received_by(scp_implicit, h), h, syntax=ImplicitVRLittleEndian)


@pytest.mark.parametrize("name", NAMES)
async def test_client_store_converts_for_pynetdicom_storescp_implicit_only(
    name: str, held: dict[str, Held], pynetdicom_implicit: tuple[Node, Path]
) -> None:
    h = held[name]
    node, out = pynetdicom_implicit
    async with Client("TSCLIENT") as client:
        result = await client.store(node, h.path)
    assert result.ok, result.outcomes
    found = await anyio.to_thread.run_sync(lambda: list(out.glob(f"*{h.sop_instance_uid}*")))
    assert len(found) == 1
    check_received(found[0], h, syntax=ImplicitVRLittleEndian)


@pytest.mark.orthanc
@pytest.mark.parametrize("name", NAMES)
async def test_client_store_to_orthanc(
    name: str, held: dict[str, Held], orthanc: OrthancServer, tmp_path: Path
) -> None:
    """A copy with its own UIDs (the original is uploaded for the C-GET tests)."""
    h = held[name]
    ds = dcmread(h.path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid()
    path = tmp_path / "copy.dcm"
    ds.save_as(path)
    copy = Held(**{**h.__dict__, "path": path, "sop_instance_uid": str(ds.SOPInstanceUID)})
    async with Client("TSCLIENT") as client:
        result = await client.store(orthanc.node, path)
    assert result.ok, result.outcomes
    stored = await anyio.to_thread.run_sync(orthanc.instance, copy.sop_instance_uid)
    got = stored.file_meta.TransferSyntaxUID
    check_received(stored, copy, syntax=got if got in NATIVE else None)


async def test_client_store_refuses_what_it_would_have_to_compress(
    held: dict[str, Held], tmp_path: Path, no_leaks: Any
) -> None:
    """A peer accepting only JPEG Lossless (a fault: in-process pynetdicom).

    The native file fails alone, saying why; the JPEG one is stored as held.
    """
    # The JPEG file as the native file's SOP class: one context for both, JPEG only.
    sop = SOP_CLASSES["explicit-le"]
    ds = dcmread(held["jpeg-lossless"].path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop
    jpeg = Held(**{**held["jpeg-lossless"].__dict__, "path": tmp_path / "jpeg-ct.dcm"})
    ds.save_as(jpeg.path)
    received: list[Any] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0

    ae = AE("TSJPEG")
    ae.add_supported_context(sop, [JPEGLosslessSV1])
    server = ae.start_server((HOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        node = Node("TSJPEG", HOST, server.server_address[1])
        async with Client("TSCLIENT") as client:
            result = await client.store(node, [held["explicit-le"].path, jpeg.path])
    finally:
        await anyio.to_thread.run_sync(server.shutdown)
    by_uid = {o.sop_instance_uid: o for o in result.outcomes}
    refused = by_uid[held["explicit-le"].sop_instance_uid]
    assert refused.status is None
    assert "compressing is not done" in (refused.error or "")
    assert by_uid[jpeg.sop_instance_uid].status == 0
    assert len(received) == 1
    check_received(received[0], jpeg)


# -- the Archive as C-GET and C-MOVE SCP ---------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_getscu_gets_the_held_syntax_from_the_archive(
    name: str, held: dict[str, Held], archive: Archive, tmp_path: Path
) -> None:
    """getscu proposes the held syntax beside the native ones in one context."""
    h = held[name]
    result = await tool(
        "getscu", "-S", "-aec", archive.ae_title, GETSCU_FLAG[name], "-od", tmp_path,
        "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={h.study_instance_uid}",
        "-k", f"SeriesInstanceUID={h.series_instance_uid}",
        HOST, archive.port,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    files = await anyio.to_thread.run_sync(lambda: [p for p in tmp_path.iterdir() if p.is_file()])
    assert len(files) == 1, result.stderr
    check_received(files[0], h)


@pytest.mark.parametrize("reopened", [False, True], ids=["as-added", "reopened"])
async def test_archive_holding_native_data_accepts_native_beside_jpeg(
    held: dict[str, Held], tmp_path: Path, reopened: bool
) -> None:
    """getscu +xs proposes JPEG Lossless and the native syntaxes in one context.

    Compressed first is the Storage SCP's default, but the Archive holds the
    class uncompressed (counted as instances are added, or read from the
    index when reopened): accepting JPEG would fail the sub-operation, as
    nothing is compressed; a native syntax is accepted and the file goes.
    """
    h = held["explicit-le"]
    await anyio.to_thread.run_sync((tmp_path / "got").mkdir)

    async def getscu(archive: Archive) -> subprocess.CompletedProcess[str]:
        return await tool(
            "getscu", "-S", "-aec", archive.ae_title, "+xs", "-od", tmp_path / "got",
            "-k", "QueryRetrieveLevel=SERIES",
            "-k", f"StudyInstanceUID={h.study_instance_uid}",
            "-k", f"SeriesInstanceUID={h.series_instance_uid}",
            HOST, archive.port,
        )  # fmt: skip

    async with Archive("TSNATIVE", tmp_path / "archive") as archive:
        await archive.add([h.path])
        if not reopened:
            result = await getscu(archive)
    if reopened:
        async with Archive("TSNATIVE", tmp_path / "archive") as archive:
            result = await getscu(archive)
    assert result.returncode == 0, result.stdout + result.stderr
    files = await anyio.to_thread.run_sync(lambda: list((tmp_path / "got").iterdir()))
    assert len(files) == 1, result.stderr
    check_received(files[0], h)


@pytest.mark.parametrize("name", NAMES)
async def test_movescu_moves_the_held_syntax_out_of_the_archive(
    name: str, held: dict[str, Held], archive: Archive, scp_all: StoreScp
) -> None:
    h = held[name]
    clear_instance(scp_all, h)
    result = await tool(
        "movescu", "-S", "-aec", archive.ae_title, "-aem", "TSALL",
        "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={h.study_instance_uid}",
        "-k", f"SeriesInstanceUID={h.series_instance_uid}",
        HOST, archive.port,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    check_received(received_by(scp_all, h), h)


@pytest.mark.parametrize("name", NAMES)
async def test_move_out_of_the_archive_converts_for_an_implicit_only_peer(
    name: str, held: dict[str, Held], archive: Archive, scp_implicit: StoreScp
) -> None:
    h = held[name]
    clear_instance(scp_implicit, h)
    result = await tool(
        "movescu", "-S", "-aec", archive.ae_title, "-aem", "TSIMPL",
        "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={h.study_instance_uid}",
        "-k", f"SeriesInstanceUID={h.series_instance_uid}",
        HOST, archive.port,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed" not in result.stderr or "Failed SOP" not in result.stderr
    check_received(received_by(scp_implicit, h), h, syntax=ImplicitVRLittleEndian)


@pytest.mark.parametrize("name", NAMES)
async def test_client_get_from_the_archive(
    name: str, held: dict[str, Held], archive: Archive
) -> None:
    h = held[name]
    async with Client("TSCLIENT") as client:
        got = await client.get(archive.node, series_query(h))
    assert len(got) == 1
    check_received(_as_dataset(got[0]), h)


# -- the client's C-GET from SCPs that send as they hold -----------------------------------


#: dcmqrscp answers a C-GET on the first accepted context of the SOP class, whatever
#: its transfer syntax, and converts only between uncompressed syntaxes.
DCMQRSCP_FIRST_CONTEXT = pytest.mark.xfail(
    strict=True,
    reason="dcmqrscp sends C-GET sub-operations on the first accepted context of the SOP "
    "class (the native one) and cannot decompress: compressed files fail (0xA702)",
)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=DCMQRSCP_FIRST_CONTEXT) if n in COMPRESSED else n for n in NAMES],
)
async def test_client_get_from_dcmqrscp(
    name: str, held: dict[str, Held], dcmqrscp_held: DcmQrScp
) -> None:
    h = held[name]
    async with Client("TSCLIENT") as client:
        got = await client.get(dcmqrscp_held.node, image_query(h))
    assert len(got) == 1
    check_received(_as_dataset(got[0]), h)


@pytest.mark.parametrize("name", NAMES)
async def test_client_retrieve_moves_out_of_the_archive_into_a_storage_server(
    name: str, held: dict[str, Held], archive: Archive
) -> None:
    """C-MOVE to our own Storage SCP: what it accepted decides (big endian converted)."""
    h = held[name]
    async with StorageServer("TSMOVED") as server, Client("TSCLIENT") as client:
        archive.add_destination("TSMOVED", server.node)
        got = await client.retrieve(archive.node, image_query(h), via=server)
    assert len(got) == 1
    check_received(_as_dataset(got[0]), h)


@pytest.mark.orthanc
@pytest.mark.parametrize("name", NAMES)
async def test_client_get_from_orthanc(
    name: str, held: dict[str, Held], orthanc_held: OrthancServer
) -> None:
    h = held[name]
    async with Client("TSCLIENT") as client:
        got = await client.get(orthanc_held.node, image_query(h))
    assert len(got) == 1
    check_received(_as_dataset(got[0]), h)


@pytest.mark.orthanc
@pytest.mark.parametrize("name", NAMES)
async def test_client_retrieve_from_orthanc_into_a_storage_server(
    name: str, held: dict[str, Held], orthanc_held: OrthancServer
) -> None:
    """Orthanc's C-MOVE sub-operations into our Storage SCP: each as Orthanc holds it."""
    h = held[name]
    async with StorageServer("TSFROMORTHANC") as server, Client("TSCLIENT") as client:
        await anyio.to_thread.run_sync(
            orthanc_held.add_modality, "tsfromorthanc", "TSFROMORTHANC", HOST, server.port
        )
        got = await client.retrieve(orthanc_held.node, image_query(h), via=server)
    assert len(got) == 1
    check_received(_as_dataset(got[0]), h)


# -- the StorageServer receiving ------------------------------------------------------------


@pytest.fixture(scope="module")
async def receiver(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[StorageServer, Path]]:
    root = tmp_path_factory.mktemp("ts-received")
    async with StorageServer("TSRECV", storage=DiskStorage(root), stream=False) as server:
        yield server, root


@pytest.mark.parametrize("name", NAMES)
async def test_storage_server_receives_from_storescu(
    name: str, held: dict[str, Held], receiver: tuple[StorageServer, Path]
) -> None:
    h = held[name]
    server, root = receiver
    flag = "-" + GETSCU_FLAG[name][1:]  # storescu proposes what its -x flag names
    result = await tool("storescu", "-aec", "TSRECV", flag, HOST, server.port, h.path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = list(root.rglob(f"*{h.sop_instance_uid}*"))
    assert len(found) == 1
    check_received(found[0], h)


# -- the pieces ---------------------------------------------------------------------------


def test_choose_prefers_the_held_syntax_then_native() -> None:
    assert choose([ImplicitVRLittleEndian, JPEGLosslessSV1], JPEGLosslessSV1) == JPEGLosslessSV1
    assert choose([ImplicitVRLittleEndian], "1.2.840.10008.1.2.2") == ImplicitVRLittleEndian
    assert choose([ImplicitVRLittleEndian, ExplicitVRLittleEndian], JPEGLosslessSV1) == (
        ExplicitVRLittleEndian
    )
    assert choose([JPEGLosslessSV1], ExplicitVRLittleEndian) is None


def test_to_syntax_refuses_to_compress(held: dict[str, Held]) -> None:
    with pytest.raises(TranscodeError, match="compressing"):
        to_syntax(held["explicit-le"].path, JPEGLosslessSV1)


def test_to_syntax_without_decoders_names_the_extra(
    held: dict[str, Held], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user without the codecs extra sees (the decoder reports no plugin)."""
    from pydicom.pixels.decoders.base import get_decoder

    decoder = get_decoder(JPEGLosslessSV1)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    with pytest.raises(TranscodeError, match=r"aiodicomnet\[codecs\]"):
        to_syntax(held["jpeg-lossless"].path, ExplicitVRLittleEndian)


def test_to_syntax_swaps_words_at_every_depth(tmp_path: Path) -> None:
    """Big endian made by DCMTK, back to little endian here: OW and OF values, nested too."""
    ds = dcmread(make_dataset_file(tmp_path / "le.dcm"))
    icon = Dataset()
    icon.Rows = icon.Columns = 4
    icon.BitsAllocated = icon.BitsStored = 16
    icon.HighBit = 15
    icon.PixelRepresentation = 0
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.PixelData = bytes(range(32))
    ds.IconImageSequence = [icon]
    ds.add_new(0x00660016, "OF", bytes(range(100, 116)))  # Point Coordinates Data
    ds.save_as(tmp_path / "le.dcm", enforce_file_format=True)
    dcmtk_tool("dcmconv", "+tb", tmp_path / "le.dcm", tmp_path / "be.dcm", check=True)
    back = to_syntax(tmp_path / "be.dcm", ExplicitVRLittleEndian)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.PixelData == ds.PixelData
    assert back.IconImageSequence[0].PixelData == bytes(range(32))
    assert back[0x00660016].value == bytes(range(100, 116))
    assert back.Rows == ds.Rows and back.RescaleIntercept == ds.RescaleIntercept


@pytest.mark.parametrize("name", ["explicit-le", "implicit-le", "deflate", "jpeg-ls", "rle"])
def test_to_syntax_big_endian_is_read_right_by_dcmtk(
    name: str, held: dict[str, Held], tmp_path: Path
) -> None:
    """Our big endian, turned back into little endian by DCMTK, has the original pixels."""
    ds = to_syntax(held[name].path, ExplicitVRBigEndian)
    ds.save_as(tmp_path / "be.dcm", enforce_file_format=True)
    dcmtk_tool("dcmconv", "+te", tmp_path / "be.dcm", tmp_path / "le.dcm", check=True)
    back = dcmread(tmp_path / "le.dcm")
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(back.pixel_array, held[name].pixels)


def make_dataset_file(path: Path) -> Path:
    make_dataset(rows=8, columns=8).save_as(path, enforce_file_format=True)
    return path


def test_get_contexts_give_each_compressed_syntax_a_context_within_128() -> None:
    contexts, _roles = _cx.get_contexts(
        "1.2.840.10008.5.1.4.1.2.2.3", ["1.2.840.10008.5.1.4.1.1.2"]
    )
    ct = [cx for cx in contexts if cx.abstract_syntax == "1.2.840.10008.5.1.4.1.1.2"]
    singles = {cx.transfer_syntax[0] for cx in ct if len(cx.transfer_syntax) == 1}
    assert set(_cx.GET_COMPRESSED) <= singles
    many, _ = _cx.get_contexts("1.2.840.10008.5.1.4.1.2.2.3", _cx.DEFAULT_GET_SOP_CLASSES)
    assert len(many) <= _cx.MAX_CONTEXTS
    offered = {(str(cx.abstract_syntax), str(ts)) for cx in many for ts in cx.transfer_syntax}
    for sop in _cx.DEFAULT_GET_SOP_CLASSES:
        for ts in (*_cx.GET_COMPRESSED, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            assert (sop, ts) in offered


def test_store_contexts_keep_each_fallback_with_its_compressed_context() -> None:
    """100 classes sent compressed need 200 contexts: two associations, fallbacks beside."""
    pairs = [(f"1.2.3.{i}", JPEGLosslessSV1) for i in range(100)]
    pairs += [("1.2.3.0", ExplicitVRLittleEndian)]
    groups = _cx.store_context_groups(pairs)
    assert len(groups) == 2
    sent = [pair for _, keys in groups for pair in keys]
    assert sorted(sent) == sorted(pairs)  # each pair in exactly one association
    for contexts, keys in groups:
        assert len(contexts) <= _cx.MAX_CONTEXTS
        offered = {
            (str(cx.abstract_syntax), str(ts)) for cx in contexts for ts in cx.transfer_syntax
        }
        for sop, _ in keys:
            assert (sop, ExplicitVRLittleEndian) in offered, sop


def test_accept_order_puts_the_held_syntax_first() -> None:
    default = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1]
    assert _cx.accept_order({JPEGLosslessSV1: 3}, default)[0] == JPEGLosslessSV1
    assert _cx.accept_order({JPEGLosslessSV1: 3, ExplicitVRLittleEndian: 1}, default)[:3] == [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEGLosslessSV1,
    ]
    assert _cx.accept_order({}, default) == default


def _as_dataset(instance: Any) -> Any:
    ds = instance.dataset
    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = instance.file_meta
    return ds
