"""Benchmark workers: each contender runs in a process of its own.

``python -m benchmarks.workers NAME '{"json": "params"}'``

A worker times only the operation under test (not interpreter start-up or
imports), prints ``READY`` when it serves and is ready to be measured, and
prints its result as one JSON line at the end. The "raw pynetdicom" workers
are written the way a user of pynetdicom typically writes them, from its
documentation: no socket options, no private hooks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

WORKERS: dict[str, Callable[..., dict[str, Any]]] = {}

#: DIMSE timeout of every worker, raw or ours (pynetdicom's default is 30 s,
#: ours 60 s): a lost response costs a run this long before it is redone.
DIMSE_TIMEOUT = 5.0


def worker(name: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    def register(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        WORKERS[name] = fn
        return fn

    return register


def ready() -> None:
    print("READY", flush=True)


def _paths(directory: str) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.is_file())


# ---------------------------------------------------------------------- C-STORE (SCU)


def _maybe_fix(fix: bool) -> None:
    """With ``fix``, use the prototype reactor fix (see benchmarks/reactor_fix.py)."""
    if fix:
        from benchmarks import reactor_fix

        reactor_fix.install()


@worker("store-adn")
def store_adn(
    host: str, port: int, called: str, files: str, fix: bool = False, associations: int = 1
) -> dict[str, Any]:
    import asyncio

    _maybe_fix(fix)
    from aiodicomnet.client import Client
    from aiodicomnet.nodes import Node
    from aiodicomnet.timeouts import Timeouts

    paths = _paths(files)
    node = Node(called, host, port)

    async def main() -> dict[str, Any]:
        async with Client("ADNSCU", timeouts=Timeouts(dimse=DIMSE_TIMEOUT)) as client:
            kwargs = {"associations": associations} if associations != 1 else {}
            t0 = time.perf_counter()
            result = await client.store(node, paths, **kwargs)
            seconds = time.perf_counter() - t0
        ok = sum(1 for o in result.outcomes if o.status == 0)
        return {"seconds": seconds, "sent": len(paths), "ok": ok}

    return asyncio.run(main())


def _nodelay_handlers(nodelay: bool) -> dict[str, Any]:
    """``evt_handlers`` that set TCP_NODELAY on the association's socket, if asked.

    What a pynetdicom user can do without private API: ``EVT_CONN_OPEN``
    gives the association, whose ``dul.socket.socket`` is the TCP socket.
    """
    if not nodelay:
        return {}
    import socket

    from pynetdicom import evt

    def on_open(event: Any) -> None:
        sock = event.assoc.dul.socket.socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    return {"evt_handlers": [(evt.EVT_CONN_OPEN, on_open)]}


@worker("store-raw")
def store_raw(
    host: str,
    port: int,
    called: str,
    files: str,
    max_pdu: int | None = None,
    nodelay: bool = False,
) -> dict[str, Any]:
    """``send_c_store(path)`` for each file on one association, as pynetdicom's docs do."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    paths = [str(p) for p in _paths(files)]
    kwargs: dict[str, Any] = {} if max_pdu is None else {"max_pdu": max_pdu}
    kwargs.update(_nodelay_handlers(nodelay))
    t0 = time.perf_counter()
    ae = AE(ae_title="RAWSCU")
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(host, port, ae_title=called, **kwargs)
    if not assoc.is_established:
        raise RuntimeError("association not established")
    ok = 0
    for path in paths:
        status = assoc.send_c_store(path)
        if status and status.Status == 0:
            ok += 1
    assoc.release()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "sent": len(paths), "ok": ok}


# ---------------------------------------------------------------------- C-ECHO


@worker("echo-adn")
def echo_adn(
    host: str,
    port: int,
    called: str,
    n: int,
    warmup: int = 5,
    dimse_timeout: float = 1.0,
    fix: bool = False,
) -> dict[str, Any]:
    """``await Association.echo()`` on one open association, timed on the event loop.

    A response that never comes (the association is then aborted) is counted
    in ``lost`` and not timed; a new association is opened (untimed) and the
    run goes on until ``n`` echoes are timed or 5 are lost.
    """
    import asyncio

    from aiodicomnet.association import Association
    from aiodicomnet.contexts import verification_contexts
    from aiodicomnet.errors import DicomError
    from aiodicomnet.nodes import Node
    from aiodicomnet.timeouts import Timeouts

    _maybe_fix(fix)
    lost = 0

    async def open_() -> Association:
        nonlocal lost
        for _ in range(5):
            assoc = Association(
                "ADNSCU",
                Node(called, host, port),
                verification_contexts(),
                timeouts=Timeouts(dimse=dimse_timeout),
            )
            await assoc.open()
            try:
                for _ in range(warmup):
                    await assoc.echo()
                return assoc
            except DicomError as exc:
                lost += 1
                print(f"lost response (warm-up): {exc!r}", file=sys.stderr, flush=True)
                await assoc.abort()
        raise RuntimeError("could not warm up an association")

    async def main() -> dict[str, Any]:
        nonlocal lost
        samples: list[float] = []
        assoc = await open_()
        try:
            while len(samples) < n and lost < 5:
                t0 = time.perf_counter()
                try:
                    await assoc.echo()
                except DicomError as exc:
                    lost += 1
                    print(f"lost response: {exc!r}", file=sys.stderr, flush=True)
                    await assoc.abort()
                    assoc = await open_()
                    continue
                samples.append(time.perf_counter() - t0)
        finally:
            await assoc.release()
        return {"samples": samples, "lost": lost}

    return asyncio.run(main())


@worker("echo-raw")
def echo_raw(
    host: str,
    port: int,
    called: str,
    n: int,
    warmup: int = 5,
    nodelay: bool = False,
    dimse_timeout: float = 1.0,
) -> dict[str, Any]:
    """``send_c_echo()`` in a plain loop on one association (lost responses as above)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="RAWSCU")
    ae.dimse_timeout = dimse_timeout
    ae.add_requested_context(Verification)

    lost = 0

    def open_() -> Any:
        nonlocal lost
        for _ in range(5):
            assoc = ae.associate(host, port, ae_title=called, **_nodelay_handlers(nodelay))
            if not assoc.is_established:
                raise RuntimeError("association not established")
            for _ in range(warmup):
                assoc.send_c_echo()
            if assoc.is_established:
                return assoc
            lost += 1
            print("lost response (warm-up)", file=sys.stderr, flush=True)
        raise RuntimeError("could not warm up an association")

    samples: list[float] = []
    assoc = open_()
    try:
        while len(samples) < n and lost < 5:
            t0 = time.perf_counter()
            status = assoc.send_c_echo()
            elapsed = time.perf_counter() - t0
            if not status or "Status" not in status:
                lost += 1  # pynetdicom aborted the association after the DIMSE timeout
                print("lost response", file=sys.stderr, flush=True)
                assoc = open_()
                continue
            if status.Status != 0:
                raise RuntimeError(f"C-ECHO failed: {status}")
            samples.append(elapsed)
    finally:
        if assoc.is_established:
            assoc.release()
    return {"samples": samples, "lost": lost}


# ---------------------------------------------------------------------- C-STORE (SCP)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


@worker("recv-adn")
def recv_adn(port: int, out: str, expect: int, timeout: float = 300) -> dict[str, Any]:
    """StorageServer + DiskStorage (defaults), consuming the receive stream."""
    import anyio

    from aiodicomnet.server import StorageServer
    from aiodicomnet.storage import DiskStorage

    async def main() -> dict[str, Any]:
        count = 0
        size = 0
        first = last = 0.0
        async with StorageServer("ADNRECV", port=port, storage=DiskStorage(out)) as scp:
            ready()
            with anyio.fail_after(timeout):
                async for instance in scp:
                    if count == 0:
                        first = time.perf_counter()
                    count += 1
                    size += instance.size
                    if count >= expect:
                        last = time.perf_counter()
                        break
        return {"received": count, "bytes": size, "seconds": last - first}

    return anyio.run(main)


@worker("recv-raw")
def recv_raw(
    port: int, out: str, expect: int, max_pdu: int | None = None, timeout: float = 300
) -> dict[str, Any]:
    """pynetdicom storage SCP with chunked receive; each temporary file moved into place.

    pynetdicom writes the chunked data set (with File Meta) to a temporary
    file, deleted after the handler returns; the cheapest way to keep it is
    to rename it, so the temporary directory is put on the same file system.
    """
    import tempfile

    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

    _config.STORE_RECV_CHUNKED_DATASET = True
    outdir = Path(out)
    tempfile.tempdir = str(outdir.parent / "tmp")
    os.makedirs(tempfile.tempdir, exist_ok=True)
    lock = threading.Lock()
    done = threading.Event()
    state = {"count": 0, "first": 0.0, "last": 0.0}

    def on_store(event: Any) -> int:
        sop_uid = event.request.AffectedSOPInstanceUID
        os.replace(event.dataset_path, outdir / f"{sop_uid}.dcm")
        with lock:
            if state["count"] == 0:
                state["first"] = time.perf_counter()
            state["count"] += 1
            if state["count"] >= expect:
                state["last"] = time.perf_counter()
                done.set()
        return 0x0000

    ae = AE(ae_title="RAWRECV")
    ae.supported_contexts = AllStoragePresentationContexts
    if max_pdu is not None:
        ae.maximum_pdu_size = max_pdu
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    ready()
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"received {state['count']} of {expect}")
        deadline = time.monotonic() + 30
        while ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)  # let the sender release before shutting down
    finally:
        server.shutdown()
    return {
        "received": state["count"],
        "seconds": state["last"] - state["first"],
    }


# ---------------------------------------------------------------------- C-MOVE


@worker("retrieve-adn")
def retrieve_adn(
    host: str,
    port: int,
    called: str,
    scp_port: int,
    scp_ae: str,
    study: str,
    series: str,
    expect: int,
    out: str,
) -> dict[str, Any]:
    """A C-MOVE of one series into our own StorageServer (DiskStorage)."""
    import anyio

    from aiodicomnet.client import Client
    from aiodicomnet.nodes import Node
    from aiodicomnet.query import Query
    from aiodicomnet.server import StorageServer
    from aiodicomnet.storage import DiskStorage
    from aiodicomnet.timeouts import Timeouts

    node = Node(called, host, port)
    query = Query.series(StudyInstanceUID=study, SeriesInstanceUID=series, defaults=False)

    async def main() -> dict[str, Any]:
        received = 0
        mode = ""
        async with (
            StorageServer(scp_ae, port=scp_port, storage=DiskStorage(out)) as scp,
            Client("ADNSCU", timeouts=Timeouts(dimse=DIMSE_TIMEOUT)) as client,
        ):
            with anyio.fail_after(120):
                t0 = time.perf_counter()
                if hasattr(client, "retrieve"):
                    mode = "client.retrieve(via=server)"
                    async for _instance in client.retrieve(node, query, via=scp):
                        received += 1
                else:
                    mode = "client.move + server stream"
                    final: list[Any] = []

                    async def move() -> None:
                        final.append(await client.move(node, query, scp_ae))

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(move)
                        async for _instance in scp:
                            received += 1
                            if received >= expect:
                                break
                    if final and final[0].completed != expect:
                        raise RuntimeError(f"C-MOVE completed {final[0]}")
                seconds = time.perf_counter() - t0
        return {"seconds": seconds, "received": received, "mode": mode}

    return anyio.run(main)


@worker("retrieve-raw")
def retrieve_raw(
    host: str,
    port: int,
    called: str,
    scp_port: int,
    scp_ae: str,
    study: str,
    series: str,
    expect: int,
    out: str,
    max_pdu: int | None = None,
) -> dict[str, Any]:
    """``send_c_move()`` to our own AE, whose storage SCP runs in the same process.

    As pynetdicom's documentation shows a C-MOVE to oneself: one AE, its
    server started with ``block=False``; chunked receive, each temporary
    file renamed into place as in ``recv-raw``.
    """
    import tempfile

    from pydicom.dataset import Dataset
    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelMove,
    )

    _config.STORE_RECV_CHUNKED_DATASET = True
    outdir = Path(out)
    tempfile.tempdir = str(outdir.parent / "tmp")
    os.makedirs(tempfile.tempdir, exist_ok=True)
    lock = threading.Lock()
    received = [0]

    def on_store(event: Any) -> int:
        sop_uid = event.request.AffectedSOPInstanceUID
        os.replace(event.dataset_path, outdir / f"{sop_uid}.dcm")
        with lock:
            received[0] += 1
        return 0x0000

    ae = AE(ae_title=scp_ae)
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    if max_pdu is not None:
        ae.maximum_pdu_size = max_pdu
    server = ae.start_server(
        ("127.0.0.1", scp_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study
        query.SeriesInstanceUID = series
        t0 = time.perf_counter()
        assoc = ae.associate(host, port, ae_title=called)
        if not assoc.is_established:
            raise RuntimeError("association not established")
        final = None
        for status, _identifier in assoc.send_c_move(
            query, scp_ae, StudyRootQueryRetrieveInformationModelMove
        ):
            final = status
        assoc.release()
        seconds = time.perf_counter() - t0
    finally:
        server.shutdown()
    if final is None or final.get("Status") != 0:
        raise RuntimeError(f"C-MOVE ended with {final}")
    return {"seconds": seconds, "received": received[0]}


def main(argv: list[str]) -> int:
    name, params = argv[1], json.loads(argv[2]) if len(argv) > 2 else {}
    result = WORKERS[name](**params)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
