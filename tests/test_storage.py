"""Storage policies and ReceivedInstance, used from a plain pynetdicom EVT_C_STORE handler.

The SCP here is raw pynetdicom, not our StorageServer: this is how a client's
C-GET uses a Storage (on its own association, in pynetdicom's thread). The
senders are raw pynetdicom SCUs in threads.
"""

from __future__ import annotations

import io
import threading
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
from aiodicomnet._dimse.patches import CONN_OPEN_HANDLER
from aiodicomnet.storage import (
    CallbackStorage,
    DeliveryRefused,
    DiskStorage,
    MemoryStorage,
    ReceivedInstance,
    Storage,
    handle_store,
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
    assert inst.path == root / "______etc" / "___passwd" / "UNKNOWN.dcm"
    assert files(tmp_path) == [inst.path]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../x", "______x"),
        ("..", "__"),
        ("a..b", "a__b"),
        (".hidden", "_hidden"),
        ("a/b\\c", "a_b_c"),
        ("nul\x00ctl\x1f", "nul_ctl_"),
        ("", "UNKNOWN"),
        ("   ", "UNKNOWN"),
        ("CON", "_CON"),
        ("Müller^Jürgen", "Müller^Jürgen"),
        ("x" * 300, "x" * 128),
    ],
)
@pytest.mark.filterwarnings("ignore:The value length")
def test_path_component_neutralised(tmp_path: Path, value: str, expected: str) -> None:
    header = Dataset()
    header.PatientID = value
    path = DiskStorage(tmp_path, "{PatientID}/f.dcm").path_for(header)
    assert path == tmp_path / expected / "f.dcm"


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
    scp.storage = storage.bind(anyio.lowlevel.current_token())
    assert await send(scp, small()) == [0]
    assert seen == [threading.get_ident()]


def test_errors_are_storage_errors() -> None:
    assert issubclass(DeliveryRefused, StorageError)
