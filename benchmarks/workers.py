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


#: Built-ins in which a thread waits rather than works (left out of a profile summary).
_WAITS = ("'poll' of", "'select' of", "'acquire' of", "sleep", "'wait' of", "'join' of")


def profiled(fn: Callable[[], dict[str, Any]], top: int = 12) -> dict[str, Any]:
    """``fn()``, with every thread it starts profiled (cProfile); its result gets
    ``"profile"``: the ``top`` functions by own time, summed over all threads, as
    ``[function, seconds, share of the total]`` (waiting left out)."""
    import cProfile
    import pstats

    profilers: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(frame: Any, event: str, arg: Any) -> None:  # each new thread's first event
        profiler = cProfile.Profile()
        with lock:
            profilers.append(profiler)
        profiler.enable()  # replaces this hook in that thread

    main = cProfile.Profile()
    profilers.append(main)
    threading.setprofile(start)
    main.enable()
    try:
        result = fn()
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(*profilers)
    entries = {  # time spent waiting (in epoll, a lock, a sleep) is not work: left out
        key: value
        for key, value in stats.stats.items()  # type: ignore[attr-defined]
        if not any(w in key[2] for w in _WAITS)
    }
    total = sum(tt for (_, _, tt, _, _) in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    result["profile"] = [
        [f"{Path(file).name}:{line}({name})", tt, tt / total]
        for (file, line, name), (_, _, tt, _, _) in rows
    ]
    return result


def _paths(directory: str) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.is_file())


# ---------------------------------------------------------------------- C-STORE (SCU)


@worker("store-adn")
def store_adn(
    host: str, port: int, called: str, files: str, associations: int = 1
) -> dict[str, Any]:
    import asyncio

    from aiodicomnet.client import Client
    from aiodicomnet.nodes import Node
    from aiodicomnet.timeouts import Timeouts

    paths = _paths(files)
    node = Node(called, host, port)

    async def main() -> dict[str, Any]:
        async with Client("ADNSCU", timeouts=Timeouts(dimse=DIMSE_TIMEOUT)) as client:
            kwargs: dict[str, Any] = {"associations": associations} if associations != 1 else {}
            t0 = time.perf_counter()
            result = await client.store(node, paths, **kwargs)
        # Until the release, as for the other contenders (a pooled association
        # is released when the client closes).
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
) -> dict[str, Any]:
    """``await Association.echo()`` on one open association, timed on the event loop.

    A response that never comes (the association is then aborted) is counted
    in ``lost`` and not timed; a new association is opened (untimed) and the
    run goes on until ``n`` echoes are timed or 5 are lost.
    """
    import asyncio

    from aiodicomnet._dimse.association import Association
    from aiodicomnet._dimse.contexts import verification_contexts
    from aiodicomnet.errors import DicomError
    from aiodicomnet.nodes import Node
    from aiodicomnet.timeouts import Timeouts

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


@worker("echo-client")
def echo_client(
    host: str, port: int, called: str, n: int, warmup: int = 5, dimse_timeout: float = 1.0
) -> dict[str, Any]:
    """``await client.echo(node)`` through the public API: each call takes the pooled
    association and gives it back (the pool, the per-node limit and the owner-thread
    hop all included), timed on the event loop."""
    import asyncio

    import aiodicomnet as adn

    async def main() -> dict[str, Any]:
        node = adn.Node(called, host, port)
        samples: list[float] = []
        lost = 0
        timeouts = adn.Timeouts(dimse=dimse_timeout)
        async with adn.Client("ADNSCU", timeouts=timeouts) as client:
            for _ in range(warmup):
                await client.echo(node)
            while len(samples) < n and lost < 5:
                t0 = time.perf_counter()
                try:
                    await client.echo(node)
                except adn.DicomError as exc:
                    lost += 1
                    print(f"lost response: {exc!r}", file=sys.stderr, flush=True)
                    continue
                samples.append(time.perf_counter() - t0)
        return {"samples": samples, "lost": lost}

    return asyncio.run(main())


@worker("idle-cpu")
def idle_cpu(host: str, port: int, called: str, n: int = 0, seconds: float = 2.0) -> dict[str, Any]:
    """CPU time of this process (fraction of one core) over ``seconds`` with one open,
    idle pooled association, minus the same measured before it was opened."""
    import asyncio

    import aiodicomnet as adn

    async def cpu_over(seconds: float) -> float:
        c0 = time.process_time()
        await asyncio.sleep(seconds)
        return (time.process_time() - c0) / seconds

    async def main() -> dict[str, Any]:
        node = adn.Node(called, host, port)
        pool = adn.PoolConfig(idle_timeout=seconds * 10)
        async with adn.Client("ADNSCU", pool=pool) as client:
            baseline = await cpu_over(seconds)
            await client.echo(node)
            assert client.idle_associations(node) == 1
            idle = await cpu_over(seconds)
            assert client.idle_associations(node) == 1
        return {"samples": [max(0.0, idle - baseline)], "lost": 0}

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
def recv_adn(
    port: int, out: str, expect: int, timeout: float = 300, workers: int = 1
) -> dict[str, Any]:
    """StorageServer + DiskStorage (defaults; ``workers`` receiver processes),
    consuming the receive stream."""
    import anyio

    from aiodicomnet.server import StorageServer
    from aiodicomnet.storage import DiskStorage

    async def main() -> dict[str, Any]:
        count = 0
        size = 0
        first = last = 0.0
        storage = DiskStorage(out)
        async with StorageServer("ADNRECV", port=port, storage=storage, workers=workers) as scp:
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
        if server is not None:
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
    profile: bool = False,
) -> dict[str, Any]:
    """A C-MOVE of one series into our own StorageServer (DiskStorage); with
    ``profile``, where its CPU time went (see :func:`profiled`)."""
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

    if profile:
        return profiled(lambda: anyio.run(main))
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
        if server is not None:
            server.shutdown()
    if final is None or final.get("Status") != 0:
        raise RuntimeError(f"C-MOVE ended with {final}")
    return {"seconds": seconds, "received": received[0]}


# ---------------------------------------------------------------------- Archive (Q/R SCP)


@worker("archive-serve")
def archive_serve(
    port: int, directory: str, files: str, ae_title: str = "ARCHIVE"
) -> dict[str, Any]:
    """An embedded ``Archive`` holding the files under ``files``; serves until stopped."""
    import anyio

    from aiodicomnet.archive import Archive

    async def main() -> dict[str, Any]:
        async with Archive(ae_title, directory, port=port) as archive:
            imported = await archive.add(Path(files))
            print(f"archive holds {len(imported)} instances", file=sys.stderr, flush=True)
            ready()
            await anyio.sleep_forever()
        return {}

    return anyio.run(main)


# ---------------------------------------------------------------------- pooling


def _find_identifier(keys: dict[str, str]) -> Any:
    """A STUDY-level C-FIND identifier: ``keys`` (keyword -> value, "" to return)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@worker("pool-adn")
def pool_adn(
    host: str,
    port: int,
    called: str,
    n: int,
    keys: dict[str, str],
    expect: int,
    pool: bool,
    dimse_timeout: float = DIMSE_TIMEOUT,
) -> dict[str, Any]:
    """``n`` x ``await client.echo(node)``, then ``n`` x ``await client.find(node, q)``.

    Each phase uses a new ``Client`` (``pool=PoolConfig()`` or ``PoolConfig(reuse=False)``, no
    reuse), so each starts with no association; timed from the first call to
    the end of the ``async with Client`` block (idle associations released).
    """
    import asyncio

    from aiodicomnet import PoolConfig
    from aiodicomnet.client import Client
    from aiodicomnet.nodes import Node
    from aiodicomnet.timeouts import Timeouts

    node = Node(called, host, port)
    identifier = _find_identifier(keys)

    def client() -> Client:
        return Client(
            "ADNSCU",
            timeouts=Timeouts(dimse=dimse_timeout),
            pool=PoolConfig() if pool else PoolConfig(reuse=False),
        )

    async def main() -> dict[str, Any]:
        t0 = time.perf_counter()
        async with client() as c:
            for _ in range(n):
                await c.echo(node)
        echo = time.perf_counter() - t0
        t0 = time.perf_counter()
        async with client() as c:
            for _ in range(n):
                found = await c.find(node, identifier)
                if len(found) != expect:
                    raise RuntimeError(f"C-FIND found {len(found)}, expected {expect}")
        find = time.perf_counter() - t0
        return {"echo": echo / n, "find": find / n, "lost": 0}

    return asyncio.run(main())


@worker("pool-raw")
def pool_raw(
    host: str,
    port: int,
    called: str,
    n: int,
    keys: dict[str, str],
    expect: int,
    reuse: bool = False,
    dimse_timeout: float = DIMSE_TIMEOUT,
) -> dict[str, Any]:
    """Raw pynetdicom: ``AE.associate`` / ``send_c_echo`` (``send_c_find``) / ``release``
    for each operation, as its examples do; with ``reuse``, one association for all.

    A response lost to pynetdicom's reactor race (the association is then
    aborted after the DIMSE timeout) is counted in ``lost``, its time left
    out, and the operation done again.
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
        Verification,
    )

    identifier = _find_identifier(keys)
    ae = AE(ae_title="RAWSCU")
    ae.dimse_timeout = dimse_timeout
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    lost = 0
    shared: list[Any] = []

    def associate() -> Any:
        if reuse and shared and shared[0].is_established:
            return shared[0]
        assoc = ae.associate(host, port, ae_title=called)
        if not assoc.is_established:
            raise RuntimeError("association not established")
        if reuse:
            shared[:] = [assoc]
        return assoc

    def done(assoc: Any) -> None:
        if not reuse:
            assoc.release()

    def echo() -> bool:
        assoc = associate()
        status = assoc.send_c_echo()
        if not status or "Status" not in status:
            return False
        if status.Status != 0:
            raise RuntimeError(f"C-ECHO failed: {status}")
        done(assoc)
        return True

    def find() -> bool:
        assoc = associate()
        matches = 0
        final = None
        for status, found in assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            if not status or "Status" not in status:
                return False
            if status.Status in (0xFF00, 0xFF01):
                matches += 1 if found is not None else 0
            else:
                final = status.Status
        if final != 0 or matches != expect:
            raise RuntimeError(f"C-FIND ended with {final}, {matches} of {expect} matches")
        done(assoc)
        return True

    def phase(op: Callable[[], bool]) -> float:
        nonlocal lost
        seconds = 0.0
        timed = 0
        while timed < n:
            t0 = time.perf_counter()
            ok = op()
            elapsed = time.perf_counter() - t0
            if not ok:
                lost += 1
                print("lost response", file=sys.stderr, flush=True)
                if lost > 10:
                    raise RuntimeError("too many lost responses")
                continue
            seconds += elapsed
            timed += 1
        if reuse and shared:
            t0 = time.perf_counter()
            shared.pop().release()
            seconds += time.perf_counter() - t0
        return seconds / n

    return {"echo": phase(echo), "find": phase(find), "lost": lost}


# ---------------------------------------------------------------------- browse


@worker("browse-adn")
def browse_adn(
    host: str, port: int, called: str, how: str, pool: bool, max_per_node: int = 4
) -> dict[str, Any]:
    """``client.browse(node, Query.study())`` or the same tree walked one C-FIND at a time.

    ``how`` is ``"browse"`` or ``"walk"``. The result is a digest of the tree
    (patients, studies, series and the counts), to check that both agree.
    """
    import asyncio
    import hashlib

    from aiodicomnet import PoolConfig
    from aiodicomnet.browse import (
        _STUDY_KEYS,
        BrowseTree,
        PatientEntry,
        SeriesEntry,
        StudyEntry,
        _int,
        browse,
    )
    from aiodicomnet.client import Client
    from aiodicomnet.nodes import Node
    from aiodicomnet.query import Query
    from aiodicomnet.timeouts import Timeouts

    node = Node(called, host, port)
    query = Query.study()

    async def walk(client: Client) -> BrowseTree:
        """What browse() computes, one C-FIND after the other."""
        tree = BrowseTree()
        by_patient: dict[str, PatientEntry] = {}
        for ds in await client.find(node, query.returning(*_STUDY_KEYS)):
            pid = str(ds.get("PatientID", ""))
            entry = by_patient.get(pid)
            if entry is None:
                entry = by_patient[pid] = PatientEntry(pid, str(ds.get("PatientName", "")))
                tree.patients.append(entry)
            entry.studies.append(StudyEntry(ds))
        for study in tree.studies():
            found = await client.find(node, Query.series(StudyInstanceUID=study.uid))
            study.series = [
                SeriesEntry(ds, _int(ds, "NumberOfSeriesRelatedInstances")) for ds in found
            ]
            for series in study.series:
                if series.instances is None:
                    images = await client.find(
                        node,
                        Query.image(
                            StudyInstanceUID=study.uid,
                            SeriesInstanceUID=series.uid,
                            defaults=False,
                        ).returning("SOPInstanceUID"),
                    )
                    series.instances = len(images)
        return tree

    def digest(tree: BrowseTree) -> tuple[str, int, int, int]:
        rows = sorted(
            (
                p.patient_id,
                p.patient_name,
                s.uid,
                s.series_count,
                s.instance_count,
                sorted((e.uid, e.instances) for e in s.series),
            )
            for p in tree.patients
            for s in p.studies
        )
        text = json.dumps(rows)
        studies = len(rows)
        series = sum(len(r[5]) for r in rows)
        instances = sum(r[4] or 0 for r in rows)
        return hashlib.sha256(text.encode()).hexdigest(), studies, series, instances

    finds = 0

    class CountingClient(Client):
        def find(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal finds
            finds += 1
            return super().find(*args, **kwargs)

    async def main() -> dict[str, Any]:
        config = PoolConfig(reuse=pool, max_per_node=max_per_node)
        t0 = time.perf_counter()
        timeouts = Timeouts(dimse=DIMSE_TIMEOUT)
        async with CountingClient("ADNSCU", timeouts=timeouts, pool=config) as c:
            tree = await (browse(c, node, query) if how == "browse" else walk(c))
        seconds = time.perf_counter() - t0
        sha, studies, series, instances = digest(tree)
        return {
            "seconds": seconds,
            "digest": sha,
            "studies": studies,
            "series": series,
            "instances": instances,
            "finds": finds,
        }

    return asyncio.run(main())


def main(argv: list[str]) -> int:
    name, params = argv[1], json.loads(argv[2]) if len(argv) > 2 else {}
    result = WORKERS[name](**params)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
