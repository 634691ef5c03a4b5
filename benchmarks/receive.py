"""Receive throughput and memory: DCMTK storescu sending a CT series to a Storage SCP.

Throughput: storescu (``TCP_NODELAY=1``) sends the series on one association
to, in turn:

* aiodicomnet ``StorageServer`` with ``DiskStorage`` (defaults: max PDU
  256 KiB, one file per instance under PatientID/Study/Series), the
  application consuming the receive stream (``async for instance in scp``);
* raw pynetdicom storage SCP (``AllStoragePresentationContexts``) with
  ``_config.STORE_RECV_CHUNKED_DATASET = True``, each temporary file renamed
  into place (the cheapest way to keep it); with pynetdicom's default max PDU
  (16382) and with 256 KiB as ours;
* DCMTK storescp (``TCP_NODELAY=1``).

Each receiver is started (and ready) before the clock starts; the time is
storescu's, start to exit, so it is measured the same way for all.

Memory: the resident set size of the receiving process is sampled every
10 ms while it receives a larger series (about 1 GB); the growth is the peak
minus the size just before the transfer.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .common import (
    HOST,
    MB,
    Check,
    Contender,
    RssSampler,
    Section,
    Settings,
    Worker,
    Workspace,
    count_files,
    empty_dir,
    find_binary,
    free_port,
    interleave,
    median,
    run_tool,
    start_storescp,
    total_bytes,
)

TARGET = 1.0
#: aiodicomnet's receive throughput against DCMTK storescp's.
DCMTK_TARGET = 0.5
RSS_TARGET = 100 * 2**20
OURS_MAX_PDU = 256 * 1024  # StorageServer's default


def _storescu(port: int, called: str, directory: Path, timeout: float = 600) -> float:
    argv = [
        find_binary("storescu"),
        "--aetitle", "STORESCU", "--call", called,
        HOST, str(port),
        "--scan-directories", str(directory),
    ]  # fmt: skip
    seconds, _ = run_tool(argv, timeout=timeout)
    return seconds


def _receive(
    ws: Workspace,
    kind: str,
    called: str,
    directory: Path,
    out: Path,
    expect: int,
    *,
    sample_rss: bool = False,
    **params: Any,
) -> dict[str, float]:
    """Start a receiving worker, time storescu into it, return MB/s (and RSS growth)."""
    empty_dir(out)
    port = free_port()
    worker = Worker(ws, kind, port=port, out=str(out), expect=expect, **params)
    try:
        worker.wait_ready()
        if sample_rss:
            with RssSampler(worker.pid) as rss:
                seconds = _storescu(port, called, directory)
        else:
            seconds = _storescu(port, called, directory)
        result = worker.result(timeout=120)
    finally:
        worker.stop()
    got = count_files(out)
    empty_dir(out)
    if result["received"] != expect or got != expect:
        raise RuntimeError(f"{kind}: {result['received']} received, {got} files, {expect} sent")
    values = {"seconds": seconds}
    if sample_rss:
        values["rss_growth"] = float(rss.growth)
        values["rss_base"] = float(rss.baseline)
    return values


def run(ws: Workspace, s: Settings) -> Section:
    files = ws.ct_series(s.receive_slices)
    directory = files[0].parent
    size = total_bytes(files)
    section = Section(
        "receive",
        "Receive throughput (DCMTK storescu -> Storage SCP, to tmpfs)",
        f"{len(files)} CT slices ({size / MB:.0f} MB) sent by DCMTK storescu (`TCP_NODELAY=1`) "
        "on one association; each receiver writes one file per instance to tmpfs. "
        "MB/s = bytes of the files / storescu's run time (receiver started beforehand).",
    )
    out = ws.path("receive", "received", clean=True)
    proc, dcmtk_port, dcmtk_dir = start_storescp(ws, "receive-dcmtk", ae_title="DCMRECV")

    def dcmtk() -> dict[str, float]:
        seconds = _storescu(dcmtk_port, "DCMRECV", directory)
        got = count_files(dcmtk_dir)
        empty_dir(dcmtk_dir)
        if got != len(files):
            raise RuntimeError(f"storescp wrote {got} of {len(files)} files")
        return {"mbps": size / MB / seconds}

    def worker(kind: str, called: str, **params: Any) -> dict[str, float]:
        r = _receive(ws, kind, called, directory, out, len(files), **params)
        return {"mbps": size / MB / r["seconds"]}

    adn = "aiodicomnet StorageServer + DiskStorage"
    raw = "raw pynetdicom, chunked (max PDU 16382, default)"
    raw256 = "raw pynetdicom, chunked, max PDU 256 KiB (as aiodicomnet)"
    dcm = "DCMTK storescp (TCP_NODELAY=1)"
    contenders = [
        Contender(adn, lambda: worker("recv-adn", "ADNRECV")),
        Contender(raw, lambda: worker("recv-raw", "RAWRECV")),
        Contender(raw256, lambda: worker("recv-raw", "RAWRECV", max_pdu=OURS_MAX_PDU)),
        Contender(dcm, dcmtk),
    ]
    try:
        results = interleave(section, s.rounds, contenders, retries=2)
    finally:
        proc.stop()
    mbps = {c.name: results[c.name]["mbps"] for c in contenders}
    for c in contenders:
        section.figure(c.name, "MB/s").values = mbps[c.name]

    def ratio_check(other: str, target: float | None, label: str) -> None:
        per_round = [a / b for a, b in zip(mbps[adn], mbps[other], strict=True)]
        value = median(per_round)
        section.checks.append(
            Check(
                f"aiodicomnet / {label}",
                value,
                f">= {target:.2f}" if target is not None else "",
                None if target is None else value >= target,
                rounds=per_round,
            )
        )

    ratio_check(raw, TARGET, "raw pynetdicom, chunked")
    ratio_check(raw256, TARGET, "raw pynetdicom, chunked, max PDU 256 KiB")
    ratio_check(dcm, DCMTK_TARGET, "DCMTK storescp")
    section.notes.append(
        "The raw pynetdicom SCP's temporary directory is on the same tmpfs, so keeping a "
        "file is a rename; pynetdicom writes and flushes each PDU's fragment to it as it "
        "arrives. aiodicomnet keeps each data set in memory until it is complete, then "
        "writes it (File Meta first) to a hidden file and renames it into place."
    )
    return section


#: Several senders at once into ``workers=2`` against ``workers=1``.
PARALLEL_TARGET = 1.6
PARALLEL_SENDERS = 4


def run_parallel(ws: Workspace, s: Settings) -> Section:
    """4 storescu at once into StorageServer(workers=1) and (workers=2)."""
    files = ws.ct_series(s.receive_slices)
    size = total_bytes(files)
    section = Section(
        "receive-parallel",
        "Receive from several senders at once (StorageServer workers=1 vs workers=2)",
        f"{len(files)} CT slices ({size / MB:.0f} MB) split over {PARALLEL_SENDERS} DCMTK "
        "storescu processes (`TCP_NODELAY=1`) started together, one association each, into one "
        "StorageServer + DiskStorage on tmpfs. MB/s = bytes / time until every storescu "
        "exited.",
    )
    parts = []
    for i in range(PARALLEL_SENDERS):
        part = ws.path("receive-parallel", f"part{i}", clean=True)
        for path in files[i::PARALLEL_SENDERS]:
            os.link(path, part / path.name)
        parts.append(part)
    out = ws.path("receive-parallel", "received", clean=True)

    def all_at_once(port: int) -> float:
        with ThreadPoolExecutor(PARALLEL_SENDERS) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda part: _storescu(port, "ADNRECV", part), parts))
            return time.perf_counter() - t0

    def server(workers: int) -> dict[str, float]:
        empty_dir(out)
        port = free_port()
        worker = Worker(ws, "recv-adn", port=port, out=str(out), expect=len(files), workers=workers)
        try:
            worker.wait_ready()
            seconds = all_at_once(port)
            result = worker.result(timeout=120)
        finally:
            worker.stop()
        got = count_files(out)
        empty_dir(out)
        if result["received"] != len(files) or got != len(files):
            raise RuntimeError(f"workers={workers}: {got} files of {len(files)}")
        return {"mbps": size / MB / seconds}

    one, two = "aiodicomnet workers=1", "aiodicomnet workers=2"
    contenders = [Contender(one, lambda: server(1)), Contender(two, lambda: server(2))]
    results = interleave(section, s.rounds, contenders, retries=2)
    mbps = {c.name: results[c.name]["mbps"] for c in contenders}
    for c in contenders:
        section.figure(c.name, "MB/s").values = mbps[c.name]
    per_round = [a / b for a, b in zip(mbps[two], mbps[one], strict=True)]
    section.checks.append(
        Check(
            "workers=2 / workers=1",
            median(per_round),
            f">= {PARALLEL_TARGET:.1f}",
            median(per_round) >= PARALLEL_TARGET,
            rounds=per_round,
        )
    )
    section.notes.append(
        "The server hands connections to its receivers in turn, so the 4 senders land 2+2; "
        "the server process itself only accepts and delivers (about 0.07 s of CPU per "
        "100 MB, measured separately)."
    )
    return section


def run_rss(ws: Workspace, s: Settings) -> Section:
    files = ws.ct_series(s.rss_slices)
    directory = files[0].parent
    size = total_bytes(files)
    section = Section(
        "rss",
        "Receive memory (peak RSS growth while receiving to disk)",
        f"{len(files)} CT slices ({size / MB:.0f} MB) sent by DCMTK storescu on one association; "
        "the receiving process's resident set size is sampled every 10 ms; growth = peak - "
        "size once ready, before the transfer. One run each.",
    )
    out = ws.path("rss", "received", clean=True)
    adn = "aiodicomnet StorageServer + DiskStorage"
    raw = "raw pynetdicom, chunked, max PDU 256 KiB"
    contenders = [
        Contender(
            adn,
            lambda: _receive(
                ws, "recv-adn", "ADNRECV", directory, out, len(files), sample_rss=True
            ),
        ),
        Contender(
            raw,
            lambda: _receive(
                ws,
                "recv-raw",
                "RAWRECV",
                directory,
                out,
                len(files),
                sample_rss=True,
                max_pdu=OURS_MAX_PDU,
            ),
        ),
    ]
    results = interleave(section, 1, contenders, retries=1)
    for c in contenders:
        fig = section.figure(c.name, "MiB")
        fig.values = [v / 2**20 for v in results[c.name]["rss_growth"]]
        fig.extra["base"] = [v / 2**20 for v in results[c.name]["rss_base"]]
        fig.extra["mbps"] = [size / MB / v for v in results[c.name]["seconds"]]
    section.columns = (("base", "RSS before (MiB)", "median"), ("mbps", "MB/s", "median"))
    growth = results[adn]["rss_growth"][0]
    section.checks.append(
        Check(
            "aiodicomnet peak RSS growth",
            growth / 2**20,
            f"< {RSS_TARGET / 2**20:.0f} MiB",
            growth < RSS_TARGET,
            unit="MiB",
            rounds=[growth / 2**20],
        )
    )
    return section
