"""Storage policies and ReceivedInstance, used from a plain pynetdicom EVT_C_STORE handler.

The SCP here is raw pynetdicom, not our StorageServer: this is how a client's
C-GET uses a Storage (on its own association, in pynetdicom's thread). The
senders are raw pynetdicom SCUs in threads.
"""

from __future__ import annotations

import io
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.dsutils import encode

from aiodicomnet import Node, StorageError
from aiodicomnet._dimse.incoming import handle_store
from aiodicomnet._dimse.patches import CONN_OPEN_HANDLER
from aiodicomnet.storage import (
    CallbackStorage,
    DeliveryRefused,
    DiskStorage,
    IncomingInstance,
    MemoryStorage,
    ReceivedInstance,
    Storage,
)
from tests import test_server as ts
from tests.data import make_dataset

pytestmark = pytest.mark.timeout(60)

SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
]


# -- a raw pynetdicom SCP whose EVT_C_STORE handler calls handle_store ------------------


@dataclass
class RawScp:
    node: Node
    storage: Storage = field(default_factory=MemoryStorage)
    deliver: Any = None
    received: list[ReceivedInstance] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)

    def handler(self, event: evt.Event) -> Dataset:
        self.threads.add(threading.get_ident())

        def deliver(instance: ReceivedInstance) -> None:
            if self.deliver is not None:
                self.deliver(instance)
            self.received.append(instance)

        return handle_store(event, self.storage, deliver)


@pytest.fixture(scope="module")
def raw_scp() -> Iterator[RawScp]:
    ae = AE("RAWSCP")
    ae.add_supported_context(CTImageStorage, SYNTAXES)
    scp = RawScp(Node("RAWSCP", "127.0.0.1", 1))
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, scp.handler), CONN_OPEN_HANDLER],
    )
    assert server is not None
    scp.node = Node("RAWSCP", "127.0.0.1", server.server_address[1])
    yield scp
    ae.shutdown()


@pytest.fixture
def scp(raw_scp: RawScp) -> RawScp:
    raw_scp.storage = MemoryStorage()
    raw_scp.deliver = None
    raw_scp.received.clear()
    return raw_scp


async def send(scp: RawScp, *datasets: Dataset, syntax: str = ExplicitVRLittleEndian) -> list[int]:
    return await anyio.to_thread.run_sync(
        lambda: ts.send(scp.node, datasets, transfer_syntaxes=[syntax])
    )


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def small(**kw: Any) -> Dataset:
    return make_dataset(rows=8, columns=8, **kw)


# -- MemoryStorage and ReceivedInstance --------------------------------------------------


@pytest.mark.parametrize("syntax", SYNTAXES)
async def test_memory_keeps_encoded_bytes(scp: RawScp, syntax: str, tmp_path: Path) -> None:
    ds = small(patient_id="P1")
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    assert await send(scp, ds, syntax=syntax) == [0]
    [inst] = scp.received
    assert inst.transfer_syntax_uid == syntax
    assert (inst.sop_class_uid, inst.sop_instance_uid) == (CTImageStorage, ds.SOPInstanceUID)
    assert (inst.patient_id, inst.study_instance_uid) == ("P1", ds.StudyInstanceUID)
    assert inst.calling_ae == "SENDER" and inst.called_ae == "RAWSCP"
    assert inst.remote_ae == "SENDER" and inst.peer[0] == "127.0.0.1"
    assert inst.path is None and inst.size == len(inst.encoded)
    if syntax != DeflatedExplicitVRLittleEndian:
        # byte for byte what pynetdicom put on the wire
        ts_uid = inst.transfer_syntax_uid
        assert inst.encoded == encode(ds, ts_uid.is_implicit_VR, ts_uid.is_little_endian)
    decoded = await inst.load_dataset()
    assert decoded.PixelData == ds.PixelData  # still encoded (RLE stays RLE)
    assert decoded.file_meta.TransferSyntaxUID == syntax
    assert inst.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert inst.file_meta.SourceApplicationEntityTitle == "SENDER"
    # Part 10 round trips
    assert dcmread(io.BytesIO(inst.read())).SOPInstanceUID == ds.SOPInstanceUID
    saved = inst.save(tmp_path / "copy.dcm")
    assert saved.read_bytes() == inst.read()
    if syntax == RLELossless:
        assert (dcmread(saved).pixel_array == ds.pixel_array).all()


async def test_move_originator_and_association_id(scp: RawScp) -> None:
    def sender() -> None:
        assoc = ts.associate(scp.node, called="RAWSCP")
        parked = ts.park_reactor(assoc)
        try:
            assoc.send_c_store(small(), originator_aet="MOVER", originator_id=7)
            assoc.send_c_store(small())
        finally:
            parked.unpark()
            assoc.release()
            assoc.join(10)

    await anyio.to_thread.run_sync(sender)
    await anyio.to_thread.run_sync(sender)
    first, second, third, _ = scp.received
    assert (first.move_originator_ae, first.move_originator_message_id) == ("MOVER", 7)
    assert (second.move_originator_ae, second.move_originator_message_id) == (None, None)
    assert first.association_id == second.association_id != third.association_id


async def test_handler_runs_in_pynetdicom_thread(scp: RawScp) -> None:
    assert await send(scp, small()) == [0]
    assert threading.get_ident() not in scp.threads


# -- DiskStorage ----------------------------------------------------------------------------


async def test_disk_writes_part10_file(scp: RawScp, tmp_path: Path) -> None:
    scp.storage = DiskStorage(tmp_path)
    ds = small(patient_id="PAT9")
    assert await send(scp, ds) == [0]
    [inst] = scp.received
    expected = (
        tmp_path / "PAT9" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    )
    assert inst.path == expected and not inst.in_memory
    raw = expected.read_bytes()
    assert raw[128:132] == b"DICM"
    assert raw.endswith(encode(ds, False, True))  # the data set as received
    assert inst.encoded == encode(ds, False, True)
    stored = dcmread(expected)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert stored.PixelData == ds.PixelData
    assert inst.dataset.SOPInstanceUID == ds.SOPInstanceUID
    assert inst.read() == raw


async def test_disk_hostile_values_stay_under_root(scp: RawScp, tmp_path: Path) -> None:
    root = tmp_path / "root"
    scp.storage = DiskStorage(root, "{PatientID}/{StudyDescription}/{AccessionNumber}.dcm")
    ds = small(patient_id="../../etc", accession="")
    ds.StudyDescription = "..\\passwd"
    assert await send(scp, ds) == [0]
    [inst] = scp.received
    patient, study, name = inst.path.relative_to(root).parts
    assert patient.startswith("______etc~") and study.startswith("___passwd~")
    assert name == "UNKNOWN.dcm"
    assert files(tmp_path) == [inst.path]


HASHED = re.compile(r"~[0-9a-f]{24}$")


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ("../../x", "______x"),
        ("..", "__"),
        ("a..b", "a__b"),
        (".hidden", "_hidden"),
        ("a/b\\c", "a_b_c"),
        ("nul\x00ctl\x1f", "nul_ctl_"),
        ("   ", ""),
        ("CON", "_CON"),
        ("a~b", "a_b"),
        ("UNKNOWN", "UNKNOWN"),
        ("x" * 300, "x" * 96),
    ],
)
@pytest.mark.filterwarnings("ignore:The value length")
def test_path_component_cleaned_and_hashed(tmp_path: Path, value: str, cleaned: str) -> None:
    header = Dataset()
    header.PatientID = value
    path = DiskStorage(tmp_path, "{PatientID}/f.dcm").path_for(header)
    component = path.relative_to(tmp_path).parts[0]
    assert HASHED.search(component) and component[: -len("~") - 24] == cleaned


@pytest.mark.parametrize("value", ["PAT-1", "__", "Müller^Jürgen", "1.2.840.10008"])
def test_path_component_kept_when_safe(tmp_path: Path, value: str) -> None:
    header = Dataset()
    header.PatientID = value
    assert DiskStorage(tmp_path, "{PatientID}/f.dcm").path_for(header) == tmp_path / value / "f.dcm"
    header.PatientID = ""
    assert DiskStorage(tmp_path, "{PatientID}/f.dcm").path_for(header) == tmp_path / "UNKNOWN/f.dcm"


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_names_are_injective(tmp_path: Path) -> None:
    """Values that used to clean to one name (issue: "…40/739658" and "…40_739658") do not."""
    storage = DiskStorage(tmp_path, "{PatientID}/{SOPInstanceUID}.dcm")
    pairs = [
        ("PatientID", "..", "__"),
        ("PatientID", "a/b", "a_b"),
        ("PatientID", "CON", "_CON"),
        ("PatientID", ["A", "B"], "A_B"),
        ("SOPInstanceUID", "1.2.40/739658", "1.2.40_739658"),
        ("SOPInstanceUID", "1.2.3A", "1.2.3a"),  # differ by case: distinct even on macOS
    ]
    for keyword, first, second in pairs:
        paths = []
        for value in (first, second):
            header = Dataset()
            header.PatientID = "P"
            header.SOPInstanceUID = "1.2.3"
            setattr(header, keyword, value)
            paths.append(storage.path_for(header))
        assert paths[0] != paths[1], (keyword, first, second)
        assert str(paths[0]).lower() != str(paths[1]).lower()


def test_layout_format_spec_and_validation(tmp_path: Path) -> None:
    header = Dataset()
    header.InstanceNumber = 7
    header.SeriesNumber = None
    storage = DiskStorage(tmp_path, "{SeriesNumber}/{InstanceNumber:05d}.dcm")
    assert storage.path_for(header) == tmp_path / "UNKNOWN" / "00007.dcm"
    for bad in ("/abs/{SOPInstanceUID}", "../{SOPInstanceUID}", "{NotAKeyword}", "{PatientID:05d}"):
        with pytest.raises(ValueError):
            DiskStorage(tmp_path, bad)


async def test_disk_failure_leaves_no_file(scp: RawScp, tmp_path: Path) -> None:
    scp.storage = DiskStorage(tmp_path, "{SOPInstanceUID}.dcm")
    blocked = small()
    (tmp_path / f"{blocked.SOPInstanceUID}.dcm").mkdir()  # the final name is taken by a directory
    assert await send(scp, blocked, small()) == [0xA700, 0]
    # only the good instance's file: no temporary file left behind
    assert [p.name for p in files(tmp_path)] == [f"{scp.received[0].sop_instance_uid}.dcm"]


async def test_failed_delivery_discards_the_file(scp: RawScp, tmp_path: Path) -> None:
    scp.storage = DiskStorage(tmp_path, "{SOPInstanceUID}.dcm")

    def refuse(instance: ReceivedInstance) -> None:
        raise DeliveryRefused("nobody is listening")

    scp.deliver = refuse
    assert await send(scp, small()) == [0xA700]
    assert files(tmp_path) == []


# -- CallbackStorage -----------------------------------------------------------------------


async def test_callback_failures_map_to_statuses(scp: RawScp) -> None:
    def callback(instance: ReceivedInstance) -> None:
        if instance.patient_id == "DISKFULL":
            raise OSError(28, "No space left on device")
        if instance.patient_id == "BUG":
            raise ValueError("cannot handle this")

    scp.storage = CallbackStorage(callback)
    statuses = await send(scp, small(patient_id="DISKFULL"), small(patient_id="BUG"), small())
    assert statuses == [0xA700, 0xC001, 0]


async def test_async_callback_needs_binding_and_runs_on_loop(scp: RawScp) -> None:
    seen: list[int] = []

    async def callback(instance: ReceivedInstance) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(threading.get_ident())

    storage = CallbackStorage(callback)
    scp.storage = storage
    assert await send(scp, small()) == [0xC001]  # unbound: no loop to run on
    scp.storage = storage.bind()
    assert await send(scp, small()) == [0]
    assert seen == [threading.get_ident()]


def test_errors_are_storage_errors() -> None:
    assert issubclass(DeliveryRefused, StorageError)


# -- never overwrite an acknowledged instance ------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_non_conformant_uids_get_files_of_their_own(scp: RawScp, tmp_path: Path) -> None:
    """Two UIDs that once cleaned to one file name: both stored, each in its own file."""
    scp.storage = DiskStorage(tmp_path)
    sent = [small(study_uid="1.2.3", series_uid="1.2.3.4") for _ in range(4)]
    uids = ["1.2.826.0.1.3680043.40/739658", "1.2.826.0.1.3680043.40_739658", "1.2..3", "1.2__3"]
    for ds, sop_uid in zip(sent, uids, strict=True):
        ds.SOPInstanceUID = sop_uid
    assert await send(scp, *sent) == [0, 0, 0, 0]
    paths = [inst.path for inst in scp.received]
    assert len(set(paths)) == 4
    for inst, ds in zip(scp.received, sent, strict=True):
        assert inst.path is not None
        assert dcmread(inst.path).SOPInstanceUID == ds.SOPInstanceUID
    assert len(files(tmp_path)) == 4


async def test_a_layout_collision_is_refused_not_overwritten(scp: RawScp, tmp_path: Path) -> None:
    scp.storage = DiskStorage(tmp_path, "{PatientID}.dcm")
    first, other = small(patient_id="SAME"), small(patient_id="SAME")
    assert await send(scp, first, other, first) == [0, 0xA700, 0]  # the first may come again
    assert [p.name for p in files(tmp_path)] == ["SAME.dcm"]
    assert dcmread(tmp_path / "SAME.dcm").SOPInstanceUID == first.SOPInstanceUID


# -- a data set that cannot be read back is never acknowledged ------------------------


def _part10(tmp_path: Path, ds: Dataset, data: bytes, name: str) -> Path:
    """A Part 10 file: ``ds``'s File Meta, then ``data`` as its data set, byte for byte."""
    from pydicom.filewriter import write_file_meta_info

    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, ds.file_meta)
    path = tmp_path / name
    path.write_bytes(buffer.getvalue() + data)
    return path


async def send_files(scp: RawScp, *paths: Path, syntax: str = ExplicitVRLittleEndian) -> list[int]:
    """Send Part 10 files byte for byte (pynetdicom's chunked send does not decode them)."""
    from pynetdicom import _config

    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return await send(scp, *paths, syntax=syntax)  # type: ignore[arg-type]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


async def test_data_set_cut_inside_pixel_data_is_refused(scp: RawScp, tmp_path: Path) -> None:
    """Pixel Data says 8192 bytes, 2192 arrive: 0xC000, nothing stored (it was 0x0000)."""
    scp.storage = DiskStorage(tmp_path / "root")
    ds = make_dataset(rows=64, columns=64)  # 64 * 64 * 2 = 8192 bytes of pixels
    data = encode(ds, False, True)
    assert data is not None and data.endswith(ds.PixelData)
    cut = _part10(tmp_path, ds, data[: len(data) - 6000], "cut.dcm")
    whole = _part10(tmp_path, ds, data, "whole.dcm")
    assert await send_files(scp, cut, whole) == [0xC000, 0]
    assert files(tmp_path / "root") == [scp.received[0].path]


# -- deflate bomb ----------------------------------------------------------------------


def _deflate_bomb(ds: Dataset, pixel_bytes: int) -> bytes:
    """``ds`` with ``pixel_bytes`` of zero pixels, deflated, built without holding them.

    After a full flush zlib starts afresh, so one deflated MiB of zeros can be repeated.
    """
    head = encode(ds, False, True)
    assert head is not None
    head += b"\xe0\x7f\x10\x00OW\x00\x00" + pixel_bytes.to_bytes(4, "little")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [deflater.compress(head), deflater.flush(zlib.Z_FULL_FLUSH)]
    mib = b"\0" * (1 << 20)
    block = deflater.compress(mib) + deflater.flush(zlib.Z_FULL_FLUSH)
    assert deflater.compress(mib) + deflater.flush(zlib.Z_FULL_FLUSH) == block
    out += [block] * (pixel_bytes // len(mib))
    out.append(deflater.flush())
    return b"".join(out)


def _peak_rss_since_reset() -> int:
    """Peak RSS (bytes) since the last reset of the kernel's high-water mark."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")  # pragma: no cover


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux peak RSS")
async def test_deflate_bomb_is_refused_in_bounded_memory(scp: RawScp, tmp_path: Path) -> None:
    """~1 MiB deflated claiming 1 GiB of pixels: 0xA700 with < 64 MiB of extra RSS, quickly."""
    import psutil

    scp.storage = DiskStorage(tmp_path / "root")
    ds = make_dataset(rows=8, columns=8)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = _part10(tmp_path, ds, _deflate_bomb(ds, 1 << 30), "bomb.dcm")
    assert bomb.stat().st_size < 2 << 20
    baseline = psutil.Process().memory_info().rss
    with open("/proc/self/clear_refs", "w") as f:  # noqa: ASYNC230 - procfs, no disk
        f.write("5")  # reset the peak RSS (VmHWM)
    started = anyio.current_time()
    statuses = await send_files(scp, bomb, syntax=DeflatedExplicitVRLittleEndian)
    elapsed = anyio.current_time() - started
    assert statuses == [0xA700]
    assert _peak_rss_since_reset() - baseline < 64 << 20
    assert elapsed < 10
    assert files(tmp_path / "root") == []


async def test_deflated_data_set_within_the_limit_is_stored(scp: RawScp, tmp_path: Path) -> None:
    scp.storage = DiskStorage(tmp_path)
    ds = make_dataset(rows=8, columns=8)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ok = _part10(tmp_path, ds, _deflate_bomb(ds, 8 << 20), "fine.dcm")  # 8 MiB of zeros
    assert await send_files(scp, ok, syntax=DeflatedExplicitVRLittleEndian) == [0]
    [inst] = scp.received
    assert len(inst.dataset.PixelData) == 8 << 20


# -- the extension point ---------------------------------------------------------------


class RecordingStorage(Storage):
    """A user's storage: it sees the library's IncomingInstance, nothing of pynetdicom."""

    def __init__(self) -> None:
        self.seen: list[IncomingInstance] = []

    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        self.seen.append(incoming)
        return incoming.received()


async def test_storage_subclass_receives_an_incoming_instance(scp: RawScp) -> None:
    storage = RecordingStorage()
    scp.storage = storage
    ds = small(patient_id="EXT")
    assert await send(scp, ds) == [0]
    [incoming] = storage.seen
    assert type(incoming) is IncomingInstance
    assert incoming.sop_instance_uid == ds.SOPInstanceUID
    assert incoming.sop_class_uid == CTImageStorage
    assert (incoming.calling_ae, incoming.called_ae, incoming.remote_ae) == (
        "SENDER",
        "RAWSCP",
        "SENDER",
    )
    assert incoming.peer[0] == "127.0.0.1" and incoming.association_id > 0
    assert incoming.message_id is not None and incoming.move_originator_ae is None
    assert incoming.open().read() == incoming.encoded == encode(ds, False, True)
    assert incoming.header("PatientID").PatientID == "EXT"
    assert "PixelData" not in incoming.header()
    assert incoming.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert dcmread(io.BytesIO(incoming.read())).PixelData == ds.PixelData
    [received] = scp.received
    assert received.patient_id == "EXT" and received.encoded == incoming.encoded
