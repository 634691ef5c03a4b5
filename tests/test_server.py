"""StorageServer against real senders: DCMTK storescu/echoscu and raw pynetdicom SCUs.

pynetdicom senders run in threads of their own (they block); DCMTK tools run
as child processes with TCP_NODELAY=1. Nothing here sleeps to wait for
something: tests wait on events, on the stream, or poll a condition.
"""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import psutil
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from aiodicomnet import Node
from aiodicomnet._dimse.patches import CONN_OPEN_HANDLER
from aiodicomnet.server import STORAGE_TRANSFER_SYNTAXES, StorageServer
from aiodicomnet.storage import (
    CallbackStorage,
    DiskStorage,
    MemoryStorage,
    ReceivedInstance,
)
from tests.data import make_dataset, make_series, write_files
from tests.peers.dcmtk import DCMTK_ENV
from tests.peers.util import find_binary

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
SCP_AET = "ADNSCP"


# -- helpers ---------------------------------------------------------------------------


async def dcmtk(name: str, *args: object) -> subprocess.CompletedProcess[bytes]:
    """Run a DCMTK tool as a child process (Nagle off), without blocking the loop."""
    env = {**os.environ, **DCMTK_ENV}
    return await anyio.run_process(
        [find_binary(name), *map(str, args)], env=env, check=False, stdin=subprocess.DEVNULL
    )


async def storescu(node: Node, *paths: Path, calling: str = "STORESCU") -> None:
    result = await dcmtk(
        "storescu", "-aet", calling, "-aec", node.ae_title, node.host, node.port, "+sd", *paths
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def scu(
    calling: str = "SENDER",
    sop_classes: Sequence[str] = (CTImageStorage,),
    transfer_syntaxes: Sequence[str] = (ExplicitVRLittleEndian,),
) -> AE:
    ae = AE(calling)
    for sop in sop_classes:
        for syntax in transfer_syntaxes:  # one context per syntax: the SCP cannot pick another
            ae.add_requested_context(sop, [syntax])
    ae.add_requested_context(Verification)
    return ae


def associate(
    node: Node, *, calling: str = "SENDER", called: str | None = None, tune: bool = True, **kw: Any
) -> Any:
    """A raw pynetdicom association (blocking; call from a thread)."""
    ae = scu(calling, **kw)
    return ae.associate(
        node.host,
        node.port,
        ae_title=called or node.ae_title,
        evt_handlers=[CONN_OPEN_HANDLER] if tune else [],
    )


class _Parked(threading.Event):
    """A reactor checkpoint that ignores ``set()`` until :meth:`unpark`."""

    parked = True

    def set(self) -> None:
        if not self.parked:
            super().set()

    def unpark(self) -> None:
        self.parked = False
        super().set()


def _blocked_on(thread: threading.Thread, event: threading.Event) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_locals.get("self") is event:
            return True
        frame = frame.f_back
    return False


def park_reactor(assoc: Any) -> _Parked:
    """Keep a pynetdicom requestor's reactor thread parked while we send.

    Between our requests that thread polls the DIMSE queue and may take a fast
    response meant for ``send_c_store`` ("Received unexpected C-STORE service
    message", then a DIMSE timeout; pynetdicom issue #875). Parked, it cannot.
    """
    parked = _Parked()
    assoc._reactor_checkpoint = parked
    deadline = time.monotonic() + 10
    while not _blocked_on(assoc, parked):
        if time.monotonic() > deadline:
            raise RuntimeError("pynetdicom's reactor did not park")
        time.sleep(0.0005)
    return parked


def send(
    node: Node,
    items: Iterable[Dataset | str | Path],
    statuses: list[int] | None = None,
    *,
    calling: str = "SENDER",
    transfer_syntaxes: Sequence[str] = (ExplicitVRLittleEndian,),
) -> list[int]:
    """Send each item with raw pynetdicom on one association; return the statuses."""
    statuses = [] if statuses is None else statuses
    assoc = associate(
        node,
        calling=calling,
        sop_classes=(CTImageStorage, MRImageStorage),
        transfer_syntaxes=transfer_syntaxes,
    )
    assert assoc.is_established
    parked = park_reactor(assoc)
    try:
        for item in items:
            rsp = assoc.send_c_store(item)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
    finally:
        parked.unpark()
        assoc.release()
        assoc.join(10)
    return statuses


class SenderThread(threading.Thread):
    """``send`` in a thread we own and join (no pooled worker threads)."""

    def __init__(self, node: Node, items: Sequence[Dataset | str | Path], **kw: Any) -> None:
        super().__init__(name="test-sender", daemon=True)
        self.node, self.items, self.kw = node, items, kw
        self.statuses: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            send(self.node, self.items, self.statuses, **self.kw)
        except BaseException as exc:
            self.error = exc


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` until it holds (the thing awaited has no event of its own)."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - a thread's state, not an event
            await anyio.sleep(0.002)


async def join(thread: threading.Thread) -> None:
    await anyio.to_thread.run_sync(thread.join, 30)
    assert not thread.is_alive()


async def receive(server: StorageServer, n: int, seconds: float = 30) -> list[ReceivedInstance]:
    received = []
    with anyio.fail_after(seconds):
        async for instance in server:
            received.append(instance)
            if len(received) == n:
                break
    return received


@pytest.fixture(scope="module")
def series_300(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Dataset], Path]:
    """300 instances of one 64x64 series, and the directory they are written in."""
    datasets = make_series(300, rows=64, columns=64)
    directory = tmp_path_factory.mktemp("series300")
    write_files(directory, datasets)
    return datasets, directory


# -- DCMTK storescu / echoscu -----------------------------------------------------------


async def test_storescu_series_to_disk(
    series_300: tuple[list[Dataset], Path], tmp_path: Path
) -> None:
    datasets, directory = series_300
    root = tmp_path / "archive"
    storage = DiskStorage(root)  # default layout Patient/Study/Series/SOP.dcm
    async with (
        StorageServer(SCP_AET, storage=storage, buffer=32) as scp,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(storescu, scp.node, directory)
        received = await receive(scp, len(datasets))

    assert {i.sop_instance_uid for i in received} == {ds.SOPInstanceUID for ds in datasets}
    assert len({i.association_id for i in received}) == 1
    by_uid = {i.sop_instance_uid: i for i in received}
    for ds in datasets:
        inst = by_uid[ds.SOPInstanceUID]
        expected = (
            root / ds.PatientID / ds.StudyInstanceUID / ds.SeriesInstanceUID
            / f"{ds.SOPInstanceUID}.dcm"
        )  # fmt: skip
        assert inst.path == expected
        assert inst.calling_ae == "STORESCU" and inst.called_ae == SCP_AET
        assert inst.series_instance_uid == ds.SeriesInstanceUID
        stored = dcmread(expected)
        assert stored.PixelData == ds.PixelData
        assert stored.file_meta.TransferSyntaxUID == inst.transfer_syntax_uid
        assert stored.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # every file under root is a final file; no temporary leftovers
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == len(datasets)
    assert all(p.suffix == ".dcm" and not p.name.startswith(".") for p in files)


async def test_storescu_to_memory(series_300: tuple[list[Dataset], Path]) -> None:
    datasets, directory = series_300
    async with StorageServer(SCP_AET) as scp, anyio.create_task_group() as tg:
        assert isinstance(scp.storage, MemoryStorage)
        tg.start_soon(storescu, scp.node, directory)
        received = await receive(scp, len(datasets))
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for inst in received[:20]:
        assert inst.path is None and inst.in_memory
        source = by_uid[inst.sop_instance_uid]
        ds = await inst.load_dataset()
        assert ds.PixelData == source.PixelData
        assert ds.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
        assert dcmread(io.BytesIO(inst.read())).PatientID == source.PatientID
        assert inst.size == len(inst.encoded)


async def test_echoscu() -> None:
    async with StorageServer(SCP_AET, stream=False) as scp:
        ok = await dcmtk("echoscu", "-aec", SCP_AET, HOST, scp.port)
        wrong = await dcmtk("echoscu", "-aec", "NOTME", HOST, scp.port)
    assert ok.returncode == 0, ok.stderr
    assert wrong.returncode != 0  # called AE title checked


def _subset(directory: Path, target: Path, n: int) -> Path:
    target.mkdir()
    for path in sorted(directory.iterdir())[:n]:
        (target / path.name).symlink_to(path)
    return target


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file())


async def test_callback_sync(series_300: tuple[list[Dataset], Path], tmp_path: Path) -> None:
    subset = _subset(series_300[1], tmp_path / "subset", 5)
    seen: list[tuple[str, int]] = []

    def on_instance(instance: ReceivedInstance) -> None:
        seen.append((instance.sop_instance_uid, threading.get_ident()))

    loop_thread = threading.get_ident()
    async with StorageServer(SCP_AET, storage=CallbackStorage(on_instance)) as scp:
        assert scp.stream is False  # the callback consumes; nothing is queued
        await storescu(scp.node, subset)
        with pytest.raises(RuntimeError):
            await scp.__anext__()
    assert len(seen) == 5
    assert all(ident != loop_thread for _, ident in seen)  # ran in the SCP thread


async def test_callback_async(series_300: tuple[list[Dataset], Path], tmp_path: Path) -> None:
    subset = _subset(series_300[1], tmp_path / "subset", 5)
    seen: list[tuple[str, int]] = []

    async def on_instance(instance: ReceivedInstance) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append((instance.sop_instance_uid, threading.get_ident()))

    loop_thread = threading.get_ident()
    async with StorageServer(SCP_AET, storage=CallbackStorage(on_instance)) as scp:
        await storescu(scp.node, subset)
    assert len(seen) == 5
    assert all(ident == loop_thread for _, ident in seen)  # ran on the event loop


# -- faults from a raw pynetdicom sender ------------------------------------------------


def _split_file(path: Path) -> tuple[bytes, bytes]:
    """(preamble + file meta, data set) of a Part 10 file."""
    import pydicom.filereader as fr

    with open(path, "rb") as f:
        fr.read_preamble(f, False)
        fr._read_file_meta_info(f)
        offset = f.tell()
    raw = path.read_bytes()
    return raw[:offset], raw[offset:]


async def test_malformed_dataset_then_next_store_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Send files byte for byte (pynetdicom's chunked send does not decode them).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    good = make_dataset(rows=8, columns=8)
    [good_path] = write_files(tmp_path / "good", [good])
    head, body = _split_file(good_path)

    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(head + b"garbage bytes that are not a DICOM data set at all!")

    # File meta (and so the C-STORE request) names the instance; the data set lacks it.
    no_uid = make_dataset(rows=8, columns=8)
    [no_uid_path] = write_files(tmp_path / "nouid", [no_uid])
    del no_uid.SOPInstanceUID
    no_uid_file = tmp_path / "nouid.dcm"
    no_uid_file.write_bytes(_split_file(no_uid_path)[0] + _encode(no_uid))

    # File meta says CT Image Storage, the data set says MR.
    wrong_class = make_dataset(rows=8, columns=8)
    [wrong_path] = write_files(tmp_path / "wrong", [wrong_class])
    wrong_class.SOPClassUID = MRImageStorage
    wrong_file = tmp_path / "wrong.dcm"
    wrong_file.write_bytes(_split_file(wrong_path)[0] + _encode(wrong_class))

    root = tmp_path / "root"
    async with StorageServer(SCP_AET, storage=DiskStorage(root, "{SOPInstanceUID}.dcm")) as scp:
        sender = SenderThread(scp.node, [garbage, no_uid_file, wrong_file, good_path])
        sender.start()
        [received] = await receive(scp, 1)
        await join(sender)
    assert sender.error is None, sender.error
    assert sender.statuses == [0xC000, 0xC000, 0xA900, 0x0000]
    assert received.sop_instance_uid == good.SOPInstanceUID
    assert _names(root) == [f"{good.SOPInstanceUID}.dcm"]
    assert received.path is not None and received.path.read_bytes() != b""
    assert received.encoded == body


def _encode(ds: Dataset) -> bytes:
    """The data set encoded in Explicit VR Little Endian (no file meta)."""
    from pynetdicom.dsutils import encode

    data = encode(ds, False, True)
    assert data is not None
    return data


def _mount_tmpfs(directory: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
    )
    return result.returncode == 0


async def test_disk_full_refused_and_server_keeps_serving(tmp_path: Path) -> None:
    root = tmp_path / "small"
    if not _mount_tmpfs(root, "1m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        small_1 = make_dataset(rows=16, columns=16, instance_number=1)
        large = make_dataset(rows=1024, columns=768, instance_number=2)  # 1.5 MiB
        small_2 = make_dataset(rows=16, columns=16, instance_number=3)
        storage = DiskStorage(root, "{SeriesInstanceUID}/{SOPInstanceUID}.dcm")
        async with StorageServer(SCP_AET, storage=storage) as scp:
            sender = SenderThread(scp.node, [small_1, large, small_2])
            sender.start()
            received = await receive(scp, 2)
            await join(sender)
        assert sender.error is None, sender.error
        assert sender.statuses == [0x0000, 0xA700, 0x0000]
        assert [i.sop_instance_uid for i in received] == [
            small_1.SOPInstanceUID,
            small_2.SOPInstanceUID,
        ]
        # no partial file under a final name, no temporary file left behind
        assert _names(root) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in (small_1, small_2))
    finally:
        await anyio.run_process(["umount", str(root)], check=False)


async def test_unwritable_root_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("I am a file")
    async with StorageServer(SCP_AET, storage=DiskStorage(not_a_dir)) as scp:
        statuses = await anyio.to_thread.run_sync(send, scp.node, [make_dataset(rows=4, columns=4)])
    assert statuses == [0xA700]


class HookedServer(StorageServer):
    """Counts ``_on_stored`` calls; can be told to fail them."""

    def __init__(self, *args: Any, fail: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.stored = 0
        self.fail = fail
        self.discarded: list[str] = []

    def _on_stored(self, instance: ReceivedInstance) -> None:
        self.stored += 1
        if self.fail:
            raise KeyError("index is broken")

    def _on_discarded(self, instance: ReceivedInstance) -> None:
        self.discarded.append(instance.sop_instance_uid)


async def test_on_stored_failure_refuses_and_removes_file(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path, "{SOPInstanceUID}.dcm")
    async with HookedServer(SCP_AET, storage=storage, fail=True) as scp:
        statuses = await anyio.to_thread.run_sync(send, scp.node, [make_dataset(rows=4, columns=4)])
    assert statuses == [0xC001]
    assert scp.stored == 1
    assert _names(tmp_path) == []


# -- backpressure -----------------------------------------------------------------------


async def test_backpressure_blocks_sender_until_consumer_reads() -> None:
    buffer, extra = 4, 5
    datasets = make_series(buffer + extra, rows=8, columns=8)
    async with HookedServer(SCP_AET, buffer=buffer) as scp:
        sender = SenderThread(scp.node, datasets)
        sender.start()
        inlet, box = scp._inlet, scp._box
        assert inlet is not None and box is not None
        # The stream fills, then the handler of the next instance waits.
        await eventually(lambda: inlet.pending == buffer and box.waiting == 1)
        # Exactly `buffer` acknowledged; the next one is stored but not answered.
        assert sender.statuses == [0] * buffer
        assert scp.stored == buffer + 1
        # Read one: the waiting instance is queued and acknowledged, the next one waits.
        first = await anext(scp)
        await eventually(lambda: scp.stored == buffer + 2 and box.waiting == 1)
        assert sender.statuses == [0] * (buffer + 1)
        rest = await receive(scp, buffer + extra - 1)
        await join(sender)
    assert sender.error is None
    assert sender.statuses == [0] * (buffer + extra)
    assert [i.sop_instance_uid for i in [first, *rest]] == [ds.SOPInstanceUID for ds in datasets]


async def test_unread_stream_is_reported_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """Nobody reads a streaming server: after ``stall_warning`` s the log says why senders wait."""
    datasets = make_series(3, rows=8, columns=8)
    async with StorageServer(SCP_AET, buffer=1, stall_warning=0.2) as scp:
        sender = SenderThread(scp.node, datasets)
        sender.start()
        await eventually(lambda: "nobody has read from it" in caplog.text)
        assert sender.statuses == [0]  # one queued and acknowledged, the next held back
        rest = await receive(scp, len(datasets))
        await join(sender)
    assert sender.statuses == [0] * len(datasets)
    assert len(rest) == len(datasets)
    record = next(r for r in caplog.records if "nobody has read" in r.getMessage())
    assert record.levelname == "WARNING" and "stream=False" in record.getMessage()


async def test_directory_is_shorthand_for_disk_storage(tmp_path: Path) -> None:
    ds = make_dataset(rows=4, columns=4)
    async with StorageServer(SCP_AET, directory=tmp_path) as scp:
        assert isinstance(scp.storage, DiskStorage)
        statuses = await anyio.to_thread.run_sync(send, scp.node, [ds])
        [instance] = await receive(scp, 1)
    assert statuses == [0]
    assert instance.path is not None and instance.path.is_relative_to(tmp_path)
    assert dcmread(instance.path).SOPInstanceUID == ds.SOPInstanceUID
    with pytest.raises(TypeError, match="not both"):
        StorageServer(SCP_AET, directory=tmp_path, storage=DiskStorage(tmp_path))


# -- at the door ------------------------------------------------------------------------


def _rejection(assoc: Any) -> tuple[int, int, int]:
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    return (rj.result, rj.result_source, rj.diagnostic)


async def test_calling_ae_allowlist() -> None:
    async with StorageServer(SCP_AET, allowed_calling_aets=["FRIEND"], stream=False) as scp:
        stranger = await anyio.to_thread.run_sync(lambda: associate(scp.node, calling="STRANGER"))
        friend = await anyio.to_thread.run_sync(lambda: associate(scp.node, calling="FRIEND"))
        assert friend.is_established
        await anyio.to_thread.run_sync(friend.release)
    # permanent, service-user, calling-AE-title-not-recognized
    assert _rejection(stranger) == (1, 1, 3)


async def test_called_ae_checked_by_default_and_optional() -> None:
    async with StorageServer(SCP_AET, stream=False) as scp:
        wrong = await anyio.to_thread.run_sync(lambda: associate(scp.node, called="SOMEONE"))
    assert _rejection(wrong) == (1, 1, 7)  # called-AE-title-not-recognized
    async with StorageServer(SCP_AET, check_called_aet=False, stream=False) as scp:
        anyone = await anyio.to_thread.run_sync(lambda: associate(scp.node, called="SOMEONE"))
        assert anyone.is_established
        parked = await anyio.to_thread.run_sync(park_reactor, anyone)
        rsp = await anyio.to_thread.run_sync(anyone.send_c_echo)
        parked.unpark()
        await anyio.to_thread.run_sync(anyone.release)
    assert rsp.Status == 0


async def test_max_associations() -> None:
    async with StorageServer(SCP_AET, max_associations=2, stream=False) as scp:
        first = await anyio.to_thread.run_sync(lambda: associate(scp.node))
        second = await anyio.to_thread.run_sync(lambda: associate(scp.node))
        third = await anyio.to_thread.run_sync(lambda: associate(scp.node))
        assert first.is_established and second.is_established
        # transient, presentation provider, local-limit-exceeded
        assert _rejection(third) == (2, 3, 2)
        await anyio.to_thread.run_sync(first.release)
        await anyio.to_thread.run_sync(first.join, 10)
        await eventually(lambda: len(scp._associations()) == 1)
        fourth = await anyio.to_thread.run_sync(lambda: associate(scp.node))
        assert fourth.is_established  # a slot came free
        for assoc in (second, fourth):
            await anyio.to_thread.run_sync(assoc.release)


def test_use_from_another_event_loop_fails_fast() -> None:
    errors: list[str] = []

    async def main() -> None:
        async with StorageServer(SCP_AET) as scp:

            def on_another_loop() -> None:
                async def use() -> None:
                    for attempt in (scp.__anext__, lambda: _subscribe_async(scp)):
                        with pytest.raises(RuntimeError, match="another event loop") as info:
                            await attempt()
                        errors.append(str(info.value))

                anyio.run(use)

            await anyio.to_thread.run_sync(on_another_loop)

    anyio.run(main)
    assert len(errors) == 2


async def _subscribe_async(server: StorageServer) -> Any:
    return server.subscribe(lambda i: True)


def test_contexts_cover_storage_and_are_per_server() -> None:
    first = StorageServer("FIRST")._contexts()
    by_uid = {cx.abstract_syntax: cx for cx in first}
    assert len(first) > 128  # an acceptor is not bound by the requestor's limit
    assert Verification in by_uid
    assert list(by_uid[CTImageStorage].transfer_syntax) == list(STORAGE_TRANSFER_SYNTAXES)
    assert (
        RLELossless in STORAGE_TRANSFER_SYNTAXES and JPEG2000Lossless in STORAGE_TRANSFER_SYNTAXES
    )
    # a subclass may change its contexts without touching another server's
    by_uid[CTImageStorage].scu_role = True
    by_uid[CTImageStorage].add_transfer_syntax("1.2.3.4")
    second = {cx.abstract_syntax: cx for cx in StorageServer("SECOND")._contexts()}
    assert second[CTImageStorage].scu_role is None
    assert "1.2.3.4" not in second[CTImageStorage].transfer_syntax


async def test_port_zero_node_and_port_in_use() -> None:
    async with StorageServer(SCP_AET, stream=False) as scp:
        assert scp.port > 0
        assert scp.node == Node(SCP_AET, HOST, scp.port)
        with pytest.raises(OSError):
            async with StorageServer("OTHER", port=scp.port, stream=False):
                pass
    with pytest.raises(RuntimeError):
        _ = scp.port


# -- subscriptions and stream=False -----------------------------------------------------


async def test_subscription_takes_matching_instances() -> None:
    wanted = make_series(6, rows=8, columns=8)
    others = make_series(4, rows=8, columns=8)
    interleaved = [wanted[0], others[0], wanted[1], others[1], *wanted[2:], *others[2:]]
    series = wanted[0].SeriesInstanceUID
    async with StorageServer(SCP_AET, buffer=16) as scp:
        with scp.subscribe(lambda i: i.series_instance_uid == series, buffer=16) as sub:
            statuses = await anyio.to_thread.run_sync(send, scp.node, interleaved)
            # Queued before each response: all are there the moment the sender is done.
            assert sub.pending == len(wanted)
            got = [await anext(sub) for _ in wanted]
        main = await receive(scp, len(others))
        # After unsubscribing, matching instances go to the main stream.
        late = make_dataset(series_uid=series, rows=8, columns=8)
        await anyio.to_thread.run_sync(send, scp.node, [late])
        [after] = await receive(scp, 1)
    assert statuses == [0] * len(interleaved)
    assert [i.sop_instance_uid for i in got] == [ds.SOPInstanceUID for ds in wanted]
    assert [i.sop_instance_uid for i in main] == [ds.SOPInstanceUID for ds in others]
    assert after.sop_instance_uid == late.SOPInstanceUID


async def test_subscription_with_deliver_callable() -> None:
    datasets = make_series(3, rows=8, columns=8)
    delivered: list[tuple[str, int]] = []
    statuses_seen: list[int] = []

    def deliver(instance: ReceivedInstance) -> None:
        delivered.append((instance.sop_instance_uid, threading.get_ident()))

    def refuse(instance: ReceivedInstance) -> None:
        raise RuntimeError("the receiving side is gone")

    async with StorageServer(SCP_AET) as scp:
        with scp.subscribe(lambda i: True, deliver=deliver) as sub:
            assert sub.pending == 0
            with pytest.raises(TypeError):
                aiter(sub)
            statuses_seen += await anyio.to_thread.run_sync(send, scp.node, datasets[:2])
            # delivered before each response, in the association thread
            assert [uid for uid, _ in delivered] == [ds.SOPInstanceUID for ds in datasets[:2]]
            assert threading.get_ident() not in {ident for _, ident in delivered}
        # a deliver that raises closes its subscription; the instance goes to the main stream
        refusing = scp.subscribe(lambda i: True, deliver=refuse)
        statuses_seen += await anyio.to_thread.run_sync(send, scp.node, datasets[2:])
        [fallback] = await receive(scp, 1)
        assert refusing.closed
        refusing.close()
    assert statuses_seen == [0, 0, 0]
    assert fallback.sop_instance_uid == datasets[2].SOPInstanceUID


async def test_stream_false_stores_without_queueing(tmp_path: Path) -> None:
    datasets = make_series(40, rows=8, columns=8)  # far more than the buffer
    storage = DiskStorage(tmp_path, "{SOPInstanceUID}.dcm")
    async with HookedServer(SCP_AET, storage=storage, stream=False, buffer=2) as scp:
        series = datasets[0].SeriesInstanceUID
        statuses = await anyio.to_thread.run_sync(send, scp.node, datasets)
        with pytest.raises(RuntimeError):
            await scp.__anext__()
        # a subscription still gets what it matches
        extra = make_dataset(series_uid=series, rows=8, columns=8)
        with scp.subscribe(lambda i: i.sop_instance_uid == extra.SOPInstanceUID) as sub:
            await anyio.to_thread.run_sync(send, scp.node, [extra])
            assert sub.pending == 1
            claimed = await anext(sub)
    assert statuses == [0] * len(datasets)
    assert claimed.sop_instance_uid == extra.SOPInstanceUID
    assert len(_names(tmp_path)) == len(datasets) + 1


# -- shutdown -----------------------------------------------------------------------------


def _connections(port: int) -> list[Any]:
    return [
        c
        for c in psutil.Process().net_connections(kind="inet")
        if (c.laddr and c.laddr.port == port) or (c.raddr and c.raddr.port == port)
    ]


async def test_shutdown_aborts_idle_association_after_grace_and_leaks_nothing() -> None:
    threads_before = set(threading.enumerate())
    fds_before = psutil.Process().num_fds()
    token = anyio.lowlevel.current_token()
    established = anyio.Event()
    ended = anyio.Event()
    outcome: dict[str, Any] = {}
    grace = 0.5

    def idle_sender(node: Node) -> None:
        assoc = associate(node, tune=False)  # plain pynetdicom, as a third party would be
        outcome["established"] = assoc.is_established
        anyio.from_thread.run_sync(established.set, token=token)
        assoc.join()  # until the server aborts it
        outcome["aborted"] = assoc.is_aborted
        anyio.from_thread.run_sync(ended.set, token=token)

    async with StorageServer(SCP_AET, grace=grace) as scp:
        port = scp.port
        thread = threading.Thread(target=idle_sender, args=(scp.node,), name="idle-sender")
        thread.start()
        with anyio.fail_after(10):
            await established.wait()
        assert _connections(port)
        started = time.monotonic()
    elapsed = time.monotonic() - started
    with anyio.fail_after(10):
        await ended.wait()
    thread.join(10)

    assert outcome == {"established": True, "aborted": True}
    assert grace <= elapsed < grace + 3
    assert [t for t in threading.enumerate() if t not in threads_before] == []
    assert [c for c in _connections(port) if c.status != psutil.CONN_TIME_WAIT] == []
    assert psutil.Process().num_fds() <= fds_before
    # the port is free again
    async with StorageServer(SCP_AET, port=port, stream=False) as again:
        assert again.port == port


async def test_shutdown_refuses_backpressured_sender_and_removes_its_file(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    datasets = make_series(6, rows=8, columns=8)
    storage = DiskStorage(tmp_path, "{SOPInstanceUID}.dcm")
    async with HookedServer(SCP_AET, storage=storage, buffer=2, grace=10) as scp:
        sender = SenderThread(scp.node, datasets)
        sender.start()
        box = scp._box
        assert box is not None
        await eventually(lambda: box.waiting == 1)
        started = time.monotonic()
    elapsed = time.monotonic() - started
    await join(sender)
    assert sender.error is None
    # Two queued (acknowledged), the blocked one and the rest refused; well before grace.
    assert sender.statuses == [0, 0, 0xA700, 0xA700, 0xA700, 0xA700]
    assert elapsed < 5
    assert _names(tmp_path) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in datasets[:2])
    assert len(scp.discarded) == 4
    new = [t for t in threading.enumerate() if t not in threads_before]
    assert [t for t in new if not t.name.startswith("AnyIO worker thread")] == []


# -- the event loop stays free -----------------------------------------------------------


async def test_event_loop_stays_responsive(series_300: tuple[list[Dataset], Path]) -> None:
    """A 10 ms ticker on the loop is never more than 50 ms late during a receive."""
    datasets, directory = series_300
    lags: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.monotonic()
            await anyio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async with StorageServer(SCP_AET, buffer=8) as scp, anyio.create_task_group() as tg:
        # Spawning storescu (fork of this process) is the test's own stall: measure
        # from the first instance received to the last.
        tg.start_soon(storescu, scp.node, directory)
        await receive(scp, 1)
        # The test session's heap is not this test's business: collect it and
        # freeze it, so a collection during the receive scans only new objects.
        gc.collect()
        gc.freeze()
        try:
            tg.start_soon(ticker)
            await receive(scp, len(datasets) - 1)
        finally:
            gc.unfreeze()
        done.set()
    assert len(lags) > 10
    assert max(lags) < 0.05, f"loop stalled {max(lags) * 1000:.0f} ms"


async def test_a_stopped_server_leaves_no_stream_to_the_collector(no_leaks: Any) -> None:
    """Both ends of the receive stream are closed when the server stops (anyio warns,
    at collection, about a memory stream nobody closed)."""

    async def run_one() -> None:
        async with StorageServer("NOLEAK") as scp:
            assert scp.port

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        await run_one()
        gc.collect()  # the server and its streams are unreferenced now
    unclosed = [w for w in caught if "MemoryObject" in str(w.message)]
    assert unclosed == []
