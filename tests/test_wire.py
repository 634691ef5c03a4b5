"""The fast data path (aiodicomnet._dimse.wire): every PDU size, bytes as they are, both roles.

A file whose transfer syntax the peer accepted is sent without being decoded, its
data set bytes framed into PDUs as they are in the file; every receiver below checks
those bytes arrive unchanged, whatever the maximum PDU length it announced (4 KiB,
16 KiB, 256 KiB, no limit), with fragment lengths that do not divide the data set.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset

import aiodicomnet as adn
from aiodicomnet._dimse import association as association_module
from aiodicomnet._dimse import wire
from aiodicomnet.storage import IncomingInstance, MemoryStorage, ReceivedInstance
from tests.data import make_dataset, make_series
from tests.peers.dcmtk import StoreScp, dcmtk_tool

PDU_SIZES = [4096, 16384, 256 * 1024, 0]


class Recording(MemoryStorage):
    """Keeps each received data set's bytes, exactly as they arrived."""

    def __init__(self) -> None:
        self.encoded: dict[str, bytes] = {}

    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        self.encoded[incoming.sop_instance_uid] = bytes(incoming.encoded)
        return super().store(incoming)


def data_set_bytes(path: Path) -> bytes:
    """A Part 10 file's data set, as stored (after the File Meta Information)."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Files whose data sets are not a multiple of any fragment length, plus a big one."""
    directory = tmp_path_factory.mktemp("wire")
    datasets = [make_dataset(rows=r, columns=c) for r, c in [(3, 5), (67, 61), (129, 127)]]
    datasets.append(make_dataset(rows=700, columns=701))  # ~1 MiB: more than one block
    paths = []
    for i, ds in enumerate(datasets):
        path = directory / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.mark.parametrize("max_pdu", PDU_SIZES)
async def test_files_arrive_as_they_are_at_every_pdu_size(
    max_pdu: int, odd_files: list[Path], monkeypatch: pytest.MonkeyPatch, no_leaks: Any
) -> None:
    def never_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a file the peer accepts as it is was decoded")

    monkeypatch.setattr(association_module, "dcmread", never_decode)
    storage = Recording()
    async with (
        adn.StorageServer("WIRESCP", storage=storage, max_pdu=max_pdu, stream=False) as scp,
        adn.Client("WIRESCU") as client,
    ):
        result = await client.store(scp.node, odd_files)
    assert result.ok, result.failed
    for path in odd_files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert storage.encoded[uid] == data_set_bytes(path), path.name


async def test_each_file_meta_is_read_once(
    odd_files: list[Path], monkeypatch: pytest.MonkeyPatch, no_leaks: Any
) -> None:
    """Planning reads a file's File Meta Information; the association sends from what
    planning read (no second read per file)."""
    reads: list[Path] = []
    split = wire.split_dataset

    def counting(path: Path) -> Any:
        reads.append(path)
        return split(path)

    monkeypatch.setattr(wire, "split_dataset", counting)
    async with (
        adn.StorageServer("WIRESCP", stream=False) as scp,
        adn.Client("WIRESCU") as client,
    ):
        result = await client.store(scp.node, odd_files)
    assert result.ok, result.failed
    assert sorted(reads) == sorted(odd_files)


@pytest.mark.parametrize("max_pdu", PDU_SIZES)
async def test_data_sets_in_memory_arrive_whole_at_every_pdu_size(
    max_pdu: int, no_leaks: Any
) -> None:
    series = make_series(3, rows=65, columns=63)
    storage = Recording()
    async with (
        adn.StorageServer("WIRESCP", storage=storage, max_pdu=max_pdu, stream=False) as scp,
        adn.Client("WIRESCU") as client,
    ):
        result = await client.store(scp.node, series)
    assert result.ok, result.failed
    for ds in series:
        received = dcmread(io.BytesIO(storage.encoded[ds.SOPInstanceUID]), force=True)
        assert received.PixelData == ds.PixelData
        assert received.SOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.dcmtk
@pytest.mark.parametrize("max_pdu", [4096, 16384, 131072])
async def test_dcmtk_storescp_receives_the_files_bit_for_bit(
    max_pdu: int, odd_files: list[Path], tmp_path: Path, no_leaks: Any
) -> None:
    """DCMTK's storescp (``--bit-preserving``: it writes the data set as received)."""
    args = ["--bit-preserving", "--max-pdu", str(max_pdu)]
    with StoreScp(tmp_path, extra_args=args) as scp:
        async with adn.Client("WIRESCU") as client:
            result = await client.store(scp.node, odd_files)
        assert result.ok, result.failed
        received = {
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): data_set_bytes(p)
            for p in scp.received_files()
        }
    for path in odd_files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert received[uid] == data_set_bytes(path), path.name


@pytest.mark.dcmtk
@pytest.mark.parametrize("send_pdu", [4096, 16384])
async def test_storage_server_takes_small_pdus_from_dcmtk(
    send_pdu: int, odd_files: list[Path], no_leaks: Any
) -> None:
    """storescu cutting every message into small PDUs (odd fragment lengths) to our server."""
    storage = Recording()
    async with adn.StorageServer("WIRESCP", storage=storage, stream=False) as scp:
        done = await anyio.to_thread.run_sync(
            lambda: dcmtk_tool(
                "storescu",
                "--aetitle", "STORESCU", "--call", "WIRESCP",
                "--max-send-pdu", str(send_pdu),
                scp.node.host, str(scp.node.port), *odd_files,
            )
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    for path in odd_files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert storage.encoded[uid] == data_set_bytes(path), path.name


def test_read_file_to_send_reads_only_the_meta(odd_files: list[Path]) -> None:
    held = wire.read_file_to_send(odd_files[0])
    meta = dcmread(odd_files[0]).file_meta
    assert held.sop_instance_uid == meta.MediaStorageSOPInstanceUID
    assert held.transfer_syntax == meta.TransferSyntaxUID
    assert odd_files[0].read_bytes()[held.offset :] == data_set_bytes(odd_files[0])


def test_read_file_to_send_refuses_what_is_not_part_10(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not DICOM at all" * 10)
    with pytest.raises(ValueError):
        wire.read_file_to_send(junk)


def odd_deflated_file(directory: Path) -> tuple[Path, bytes]:
    """A Deflated Explicit VR Little Endian file whose deflated data set has odd length
    and no padding (as dcmconv writes about half of them); returns it and the stream."""
    for i in range(64):
        ds = make_dataset(rows=8, columns=8)
        ds.ImageComments = "x" * (2 * i)
        encoded = DicomBytesIO()
        encoded.is_little_endian, encoded.is_implicit_VR = True, False
        write_dataset(encoded, ds)
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        stream = deflater.compress(encoded.getvalue()) + deflater.flush()
        if len(stream) % 2:
            break
    else:  # pragma: no cover - 64 tries always give one
        raise AssertionError("no odd-length deflated stream")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(header, meta, enforce_standard=True)
    path = directory / "odd-deflate.dcm"
    path.write_bytes(header.getvalue() + stream)
    return path, stream


@pytest.mark.dcmtk
@pytest.mark.parametrize("max_pdu", [4096, 131072])
async def test_an_odd_length_deflated_file_is_padded_to_even_length(
    max_pdu: int, tmp_path: Path, no_leaks: Any
) -> None:
    """PS3.5 A.5: the deflated stream is padded with one 00H byte to an even length
    (DCMTK's storescp aborts on an odd PDV fragment: "Odd Fragment Length")."""
    path, stream = odd_deflated_file(tmp_path)
    args = ["--bit-preserving", "--max-pdu", str(max_pdu)]
    with StoreScp(tmp_path / "scp", extra_args=args) as scp:
        async with adn.Client("WIRESCU") as client:
            result = await client.store(scp.node, path)
        assert result.ok, result.failed
        (received,) = scp.received_files()
        assert data_set_bytes(received) == stream + b"\0"
