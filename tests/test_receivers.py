"""StorageServer(workers=N): receiver processes on one port, one stream in the server.

Real senders (DCMTK storescu, several at once, and our client), real processes; a
receiver killed with SIGKILL for the crash case.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from pydicom import dcmread

import aiodicomnet as adn
from aiodicomnet.storage import CallbackStorage, DiskStorage, ReceivedInstance
from tests.data import make_series, write_files
from tests.peers.dcmtk import dcmtk_tool
from tests.test_server import eventually

pytestmark = pytest.mark.skipif(os.name != "posix", reason="receiver processes: Unix only")


def receiver_pids(server: adn.StorageServer) -> list[int]:
    return [r.process.pid for r in server._server._receivers]


async def take(server: adn.StorageServer, n: int) -> list[ReceivedInstance]:
    got: list[ReceivedInstance] = []
    with anyio.fail_after(60):
        async for instance in server:
            got.append(instance)
            if len(got) == n:
                break
    return got


@pytest.mark.dcmtk
async def test_concurrent_senders_arrive_once_each_on_the_one_stream(
    tmp_path: Path, no_leaks: Any
) -> None:
    senders = 4
    directories = []
    for i in range(senders):
        directory = tmp_path / f"send{i}"
        write_files(directory, make_series(6, rows=64, columns=64, patient_id=f"W{i}"))
        directories.append(directory)
    sent = {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
        for d in directories
        for p in d.rglob("*.dcm")
    }
    async with adn.StorageServer(
        "WORKERS", storage=DiskStorage(tmp_path / "in"), workers=2
    ) as server:
        pids = receiver_pids(server)
        assert len(pids) == 2

        async def storescu(directory: Path) -> None:
            done = await anyio.to_thread.run_sync(
                lambda: dcmtk_tool(
                    "storescu", "--aetitle", "STORESCU", "--call", "WORKERS",
                    "--scan-directories", server.node.host, str(server.port), directory,
                )
            )  # fmt: skip
            assert done.returncode == 0, done.stderr

        async with anyio.create_task_group() as tg:
            for directory in directories:
                tg.start_soon(storescu, directory)
            got = await take(server, len(sent))
    assert sorted(str(i.sop_instance_uid) for i in got) == sorted(sent)
    for instance in got:
        assert instance.path is not None and instance.path.is_file()
        stored = dcmread(instance.path)
        assert stored.PixelData == dcmread(sent[str(instance.sop_instance_uid)]).PixelData
    assert server.lost_workers == []
    assert not any(psutil.pid_exists(pid) for pid in pids)  # they ended with the server


async def test_nothing_is_acknowledged_before_the_server_delivers_it(no_leaks: Any) -> None:
    """Backpressure across processes: with the stream full, the receiver holds the
    C-STORE response until the application reads."""
    series = make_series(4, rows=32, columns=32)
    async with (
        adn.StorageServer("WORKERS", workers=2, buffer=1) as server,
        adn.Client("SENDER") as client,
    ):
        results: list[adn.StoreResult] = []

        async def send() -> None:
            results.append(await client.store(server.node, series))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await eventually(lambda: server._inlet is not None and server._inlet.pending == 1)
            assert results == []  # the sender waits: three instances are not answered
            got = await take(server, len(series))
    assert results[0].ok
    assert {str(i.sop_instance_uid) for i in got} == {ds.SOPInstanceUID for ds in series}


async def test_a_dead_receiver_is_reported_and_the_others_go_on(no_leaks: Any) -> None:
    series = make_series(5, rows=32, columns=32)
    async with (
        adn.StorageServer("WORKERS", workers=2, stream=False) as server,
        adn.Client("SENDER") as client,
    ):
        pids = receiver_pids(server)
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: server.lost_workers != [], seconds=30)
        assert server.lost_workers == [(0, -signal.SIGKILL)]
        result = await client.store(server.node, series)  # the kernel uses the survivor
        assert result.ok, result.failed
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_workers_need_a_storage_that_can_go_to_another_process() -> None:
    async def keep(instance: ReceivedInstance) -> None:
        pass

    with pytest.raises(ValueError, match="CallbackStorage"):
        adn.StorageServer("WORKERS", storage=CallbackStorage(keep), workers=2)
    with pytest.raises(ValueError, match="workers"):
        adn.StorageServer("WORKERS", workers=0)


async def test_a_server_answering_more_than_c_store_stays_in_one_process(no_leaks: Any) -> None:
    class WithHandlers(adn.StorageServer):
        def _handlers(self) -> list[tuple[Any, Any]]:
            return super()._handlers()  # a subclass answering more, as the Archive does

    with pytest.raises(ValueError, match="one process only"):
        async with WithHandlers("WORKERS", workers=2):
            pass
