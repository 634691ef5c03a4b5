"""DICOMweb: WADO-RS and STOW-RS against Orthanc's DICOMweb plugin, side by side.

Retrieve (one series, 512x512 16-bit CT slices, Orthanc storage on tmpfs), each
contender writing the instances as files to tmpfs:

* aiodicomnet: ``client.retrieve(web_node, Query.series(...), storage=DiskStorage)``:
  QIDO-RS for the count, then WADO-RS parsed part by part, each part stored as
  it arrives;
* dicomweb-client, as its documentation writes it:
  ``DICOMwebClient(url).retrieve_series(study, series)`` (the datasets in
  memory), then ``ds.save_as`` for each;
* aiodicomnet's C-MOVE from the same Orthanc into its own StorageServer.

Store: the same files sent with ``client.store(web_node, paths)`` (STOW-RS
batches streamed from disk) and with dicomweb-client's ``store_instances``
(the datasets read with ``dcmread``, one request built in memory).

RSS: the growth of the aiodicomnet worker's resident memory (sampled every
5 ms from just before the retrieve, imports and connection done) while it
retrieves a large series (``rss_slices``; 1 GB in a full run) with WADO-RS to
disk.  The multipart stream is parsed part by part, so it should stay near
the size of a few instances.

Every contender is a fresh process (``python -m benchmarks.dicomweb NAME PARAMS``)
that times only the operation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    HOST,
    Check,
    Contender,
    RssSampler,
    Section,
    Settings,
    Workspace,
    count_files,
    empty_dir,
    environ,
    find_binary,
    free_port,
    interleave,
    log,
    median,
    run_tool,
    worker_env,
)

#: WADO-RS series retrieve: aiodicomnet at least this many times as fast as dicomweb-client.
TARGET_SPEEDUP = 1.5
#: RSS growth retrieving rss_slices (1 GB in a full run), in MiB.
TARGET_RSS_MIB = 100


# -- workers (each run in a process of its own) ------------------------------------------


def worker_retrieve_adn(
    url: str, study: str, series: str, out: str, expect: int, rss: bool = False
) -> dict[str, Any]:
    import os

    import anyio

    import aiodicomnet as adn

    async def main() -> dict[str, Any]:
        node = adn.Node.web(url)
        query = adn.Query.series(StudyInstanceUID=study, SeriesInstanceUID=series)
        received = 0
        growth = 0
        async with adn.Client("ADNBENCH") as client:
            await client.echo(node)  # imports and the connection done before the baseline
            sampler = RssSampler(os.getpid(), interval=0.005) if rss else None
            t0 = time.perf_counter()
            if sampler is not None:
                sampler.__enter__()
            try:
                async with client.retrieve(node, query, storage=adn.DiskStorage(out)) as items:
                    async for _ in items:
                        received += 1
            finally:
                if sampler is not None:
                    sampler.__exit__(None, None, None)
                    growth = sampler.growth
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "received": received, "rss_growth": growth}

    result = anyio.run(main)
    if result["received"] != expect:
        raise RuntimeError(f"received {result['received']} of {expect}")
    return result


def worker_retrieve_dwc(url: str, study: str, series: str, out: str, expect: int) -> dict[str, Any]:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url)
    t0 = time.perf_counter()
    instances = client.retrieve_series(study_instance_uid=study, series_instance_uid=series)
    for ds in instances:
        ds.save_as(Path(out) / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    seconds = time.perf_counter() - t0
    if len(instances) != expect:
        raise RuntimeError(f"received {len(instances)} of {expect}")
    return {"seconds": seconds, "received": len(instances)}


def worker_move_adn(
    host: str, port: int, called: str, scp_port: int, series: str, out: str, expect: int
) -> dict[str, Any]:
    import anyio

    import aiodicomnet as adn

    async def main() -> dict[str, Any]:
        node = adn.Node(called, host, port)
        received = 0
        async with (
            adn.StorageServer("ADNRECV", port=scp_port, storage=adn.DiskStorage(out)) as scp,
            adn.Client("ADNBENCH") as client,
        ):
            t0 = time.perf_counter()
            query = adn.Query.series(SeriesInstanceUID=series)
            async with client.retrieve(node, query, via=scp) as instances:
                async for _ in instances:
                    received += 1
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "received": received}

    result = anyio.run(main)
    if result["received"] != expect:
        raise RuntimeError(f"received {result['received']} of {expect}")
    return result


def worker_store_adn(url: str, files: str) -> dict[str, Any]:
    import anyio

    import aiodicomnet as adn

    async def main() -> dict[str, Any]:
        async with adn.Client("ADNBENCH") as client:
            t0 = time.perf_counter()
            result = await client.store(adn.Node.web(url), Path(files))
            seconds = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"{len(result.failed)} instances not stored")
        return {"seconds": seconds, "stored": len(result)}

    return anyio.run(main)


def worker_store_dwc(url: str, files: str) -> dict[str, Any]:
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    client = DICOMwebClient(url=url)
    t0 = time.perf_counter()
    datasets = [dcmread(path) for path in sorted(Path(files).iterdir())]
    client.store_instances(datasets=datasets)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "stored": len(datasets)}


WORKERS = {
    "retrieve-adn": worker_retrieve_adn,
    "retrieve-dwc": worker_retrieve_dwc,
    "move-adn": worker_move_adn,
    "store-adn": worker_store_adn,
    "store-dwc": worker_store_dwc,
}


def _run_worker(name: str, *, timeout: float = 300, **params: Any) -> dict[str, Any]:
    """Run one worker process; its result is its last line of output (JSON)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.dicomweb", name, json.dumps(params)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=worker_env(),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# -- the benchmark ----------------------------------------------------------------------


def _have_dicomweb_client() -> bool:
    try:
        import dicomweb_client  # noqa: F401
    except ImportError:
        return False
    return True


def run(ws: Workspace, s: Settings) -> Section:
    find_binary("Orthanc")
    from pydicom import dcmread

    from tests.peers.orthanc import DICOMWEB_PLUGIN, OrthancServer

    if not DICOMWEB_PLUGIN.exists():
        raise RuntimeError(f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN})")
    slices = 200 if not s.quick else 100
    files = ws.ct_series(slices)
    first = dcmread(files[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    size_mib = sum(p.stat().st_size for p in files) / 2**20
    section = Section(
        "dicomweb",
        "DICOMweb (WADO-RS and STOW-RS against Orthanc)",
        f"A series of {len(files)} CT slices (512x512 16-bit, {size_mib:.0f} MiB) in Orthanc 1.10 "
        "with its DICOMweb plugin (`TCP_NODELAY=1`, storage on tmpfs, no compression). "
        "Retrieve: seconds from the first request to the last file written (tmpfs). "
        "Store: seconds to send the files and read every outcome.",
    )
    have_dwc = _have_dicomweb_client()
    if not have_dwc:
        section.notes.append("dicomweb-client is not installed: only aiodicomnet measured")
    scp_port = free_port()
    orthanc = OrthancServer(
        ws.path("dicomweb", "orthanc", clean=True),
        dicomweb=True,
        modalities={"adn": ("ADNRECV", HOST, scp_port)},
        config={"StorageCompression": False},
    )
    out = ws.path("dicomweb", "received", clean=True)
    try:
        with environ(TCP_NODELAY="1"):
            orthanc.start()
        url = f"{orthanc.http_url}/dicom-web"
        argv = [
            find_binary("storescu"), "--aetitle", "LOADER", "--call", orthanc.ae_title,
            HOST, str(orthanc.dicom_port), "--scan-directories", str(files[0].parent),
        ]  # fmt: skip
        run_tool(argv, timeout=300)
        log(f"Orthanc on port {orthanc.http_port} holds {orthanc.instances_count()} instances")

        def retrieve(name: str) -> Any:
            def measure() -> dict[str, float]:
                empty_dir(out)
                r = _run_worker(
                    name, url=url, study=study, series=series, out=str(out), expect=len(files)
                )
                if count_files(out) != len(files):
                    raise RuntimeError(f"{count_files(out)} files written of {len(files)}")
                return {"seconds": r["seconds"]}

            return measure

        def move() -> dict[str, float]:
            empty_dir(out)
            r = _run_worker(
                "move-adn",
                host=HOST,
                port=orthanc.dicom_port,
                called=orthanc.ae_title,
                scp_port=scp_port,
                series=series,
                out=str(out),
                expect=len(files),
            )
            return {"seconds": r["seconds"]}

        adn = "aiodicomnet client.retrieve(WebNode) (WADO-RS)"
        dwc = "dicomweb-client retrieve_series() + save_as"
        cmove = "aiodicomnet client.retrieve(Node, via=StorageServer) (C-MOVE)"
        contenders = [Contender(adn, retrieve("retrieve-adn")), Contender(cmove, move)]
        if have_dwc:
            contenders.append(Contender(dwc, retrieve("retrieve-dwc")))
        results = interleave(section, s.retrieve_rounds, contenders, retries=1)
        for c in contenders:
            section.figure(c.name, "s").values = results[c.name]["seconds"]
        if have_dwc:
            per_round = [
                b / a for a, b in zip(results[adn]["seconds"], results[dwc]["seconds"], strict=True)
            ]
            value = median(per_round)
            section.checks.append(
                Check(
                    "WADO-RS retrieve: dicomweb-client time / aiodicomnet time",
                    value,
                    f">= {TARGET_SPEEDUP:.2f}",
                    value >= TARGET_SPEEDUP,
                    rounds=per_round,
                )
            )
        per_round = [
            a / b for a, b in zip(results[adn]["seconds"], results[cmove]["seconds"], strict=True)
        ]
        section.checks.append(
            Check("WADO-RS time / C-MOVE time", median(per_round), "", None, rounds=per_round)
        )

        # STOW-RS: each round stores the series again (Orthanc keeps one copy).
        def store(name: str) -> Any:
            def measure() -> dict[str, float]:
                r = _run_worker(name, url=url, files=str(files[0].parent))
                return {"seconds": r["seconds"]}

            return measure

        sadn = "aiodicomnet client.store(WebNode) (STOW-RS)"
        sdwc = "dicomweb-client store_instances(dcmread(...))"
        stores = [Contender(sadn, store("store-adn"))]
        if have_dwc:
            stores.append(Contender(sdwc, store("store-dwc")))
        stored = interleave(section, max(2, s.retrieve_rounds // 2), stores, retries=1)
        for c in stores:
            section.figure(c.name, "s").values = stored[c.name]["seconds"]
        if have_dwc:
            per_round = [
                b / a for a, b in zip(stored[sadn]["seconds"], stored[sdwc]["seconds"], strict=True)
            ]
            section.checks.append(
                Check(
                    "STOW-RS: dicomweb-client time / aiodicomnet time",
                    median(per_round),
                    "",
                    None,
                    rounds=per_round,
                )
            )
        _rss(ws, s, section, orthanc, url)
    finally:
        orthanc.stop()
    return section


def _rss(ws: Workspace, s: Settings, section: Section, orthanc: Any, url: str) -> None:
    """RSS growth of the aiodicomnet worker retrieving a large series with WADO-RS."""
    from pydicom import dcmread

    files = ws.ct_series(s.rss_slices)
    first = dcmread(files[0], stop_before_pixels=True)
    total = sum(p.stat().st_size for p in files)
    argv = [
        find_binary("storescu"), "--aetitle", "LOADER", "--call", orthanc.ae_title,
        HOST, str(orthanc.dicom_port), "--scan-directories", str(files[0].parent),
    ]  # fmt: skip
    run_tool(argv, timeout=600)
    out = ws.path("dicomweb", "rss", clean=True)
    result = _run_worker(
        "retrieve-adn",
        timeout=600,
        rss=True,
        url=url,
        study=str(first.StudyInstanceUID),
        series=str(first.SeriesInstanceUID),
        out=str(out),
        expect=len(files),
    )
    empty_dir(out)
    mib = result["rss_growth"] / 2**20
    section.checks.append(
        Check(
            f"RSS growth retrieving {total / 2**30:.2f} GiB with WADO-RS (MiB)",
            mib,
            f"< {TARGET_RSS_MIB}",
            mib < TARGET_RSS_MIB,
            unit="MiB",
        )
    )


def main(argv: list[str]) -> int:
    name, params = argv[1], json.loads(argv[2])
    result = WORKERS[name](**params)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
