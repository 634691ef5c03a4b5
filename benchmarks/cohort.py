"""Cohort pipelines: the de-identifier comparison, and the scaling curve on Dask.

::

    .venv/bin/python -m benchmarks.cohort deid    # dicognito vs deid (needs `pip install deid`)
    .venv/bin/python -m benchmarks.cohort scale   # 1, 2, 4 Dask workers vs in-process
    .venv/bin/python -m benchmarks.cohort scale --studies 24 --instances 10 --rounds 2

``deid``: the same 20-instance CT series with the identifying attributes of the
PS3.15 Basic profile filled in (tests/test_deid.py's ``DIRTY``), de-identified
from Part 10 files by dicognito (as :class:`~aiodicomnet.research.deid.Deidentifier`
uses it, without this package's additions) and by deid with its default recipe.
Counts the original values left anywhere in the result, checks that the object
is still DICOM (SOP Instance UID present), consistency inside the study and across
two runs, and times each per instance (file read included, as deid reads files).

``scale``: two Orthanc servers (``TCP_NODELAY=1``) share ``--studies`` studies of
``--instances`` 512x512 CT slices; the same cohort is pulled in process
(``run_cohort``, 2 studies at once per node) and on a LocalCluster of 1, 2 and 4
worker processes (one thread each, 4 leases per node), round by round in a
rotating order, each into a fresh output directory. Reports seconds (median over
rounds, cluster start-up and the workers' first imports excluded), the speed-up
over one worker, and CPU seconds spent by the Orthanc servers and by the workers
(psutil), which says where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEY = "benchmark-key"


# -- deid ----------------------------------------------------------------------------


def compare_deidentifiers() -> str:
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from aiodicomnet.samples import make_series
    from tests.test_deid import DIRTY, dirty, text_values

    series = [
        dirty(ds)
        for ds in make_series(20, patient_id="MRN123456", patient_name="Doe^Jane", accession="A9")
    ]
    ref = Dataset()
    ref.ReferencedSOPClassUID = series[0].SOPClassUID
    ref.ReferencedSOPInstanceUID = series[0].SOPInstanceUID
    series[1].ReferencedImageSequence = Sequence([ref])
    keywords = [
        *DIRTY,
        *("PatientID", "PatientName", "AccessionNumber", "StudyDate", "PatientBirthDate"),
        *("StudyInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"),
    ]
    workdir = Path(tempfile.mkdtemp(prefix="adn-deid-"))
    files = []
    for i, ds in enumerate(series):
        path = workdir / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)

    def with_dicognito() -> list[Any]:
        from dicognito.anonymizer import Anonymizer

        anonymizer = Anonymizer(seed=KEY)
        out = []
        for path in files:
            ds = dcmread(path)
            anonymizer.anonymize(ds)
            out.append(ds)
        return out

    def with_deid() -> list[Any]:
        import logging

        from deid.dicom import replace_identifiers
        from deid.logger import bot

        bot.level = 0
        logging.getLogger("deid").setLevel(logging.ERROR)
        return list(replace_identifiers([str(p) for p in files], save=False))

    lines = [
        f"| library | original values left (of {len(keywords)}) | SOP Instance UID kept "
        "| one Study UID in the study | reference consistent | same pseudonyms next run "
        "| ms per instance |",
        "|---|---|---|---|---|---|---|",
    ]

    def with_ours() -> list[Any]:
        from aiodicomnet.research.deid import Deidentifier

        deidentifier = Deidentifier(KEY)
        return [deidentifier.deidentify(dcmread(path)) for path in files]

    contenders: list[tuple[str, Callable[[], list[Any]]]] = [
        ("dicognito", with_dicognito),
        ("aiodicomnet Deidentifier (dicognito + the additions)", with_ours),
    ]
    try:
        import deid  # noqa: F401

        contenders.append(("deid (default recipe)", with_deid))
    except ImportError:
        lines.append("| deid | not installed (`pip install deid`) | | | | | |")
    for name, fn in contenders:
        fn()  # warm up imports
        started = time.perf_counter()
        out = fn()
        per_instance = (time.perf_counter() - started) / len(files) * 1000
        again = fn()
        left = text_values(out[0])
        survivors = [k for k in keywords if str(series[0].get(k)) in left]
        refs = out[1].get("ReferencedImageSequence")
        new_uid = out[0].get("SOPInstanceUID")
        consistent_ref = bool(refs) and new_uid is not None
        consistent_ref = consistent_ref and refs[0].get("ReferencedSOPInstanceUID") == new_uid
        one_study = "StudyInstanceUID" in out[0]
        one_study = one_study and len({d.get("StudyInstanceUID") for d in out}) == 1
        pid = out[0].get("PatientID")
        repeatable = pid is not None and pid == again[0].get("PatientID")
        lines.append(
            f"| {name} | {len(survivors)}: {', '.join(survivors) or '-'} "
            f"| {all('SOPInstanceUID' in d for d in out)} | {one_study} | {consistent_ref} "
            f"| {repeatable} | {per_instance:.2f} |"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return "\n".join(lines)


# -- scale ---------------------------------------------------------------------------


def _cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _warm_up() -> None:
    import aiodicomnet.research.distributed  # noqa: F401
    from aiodicomnet.research.deid import Deidentifier

    Deidentifier(KEY)


def scale(studies: int, instances: int, rounds: int, workers: list[int]) -> str:
    import dask
    import distributed

    from aiodicomnet.research.cohort import CohortSettings, DeidSettings, read_cohort, run_cohort
    from aiodicomnet.research.distributed import run_cohort_distributed
    from aiodicomnet.samples import make_dataset, uid
    from tests.peers.orthanc import OrthancServer

    workdir = Path(
        tempfile.mkdtemp(
            prefix="adn-cohort-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        )
    )
    os.environ["TCP_NODELAY"] = "1"
    servers = [
        OrthancServer(workdir / "a", ae_title="BENCHA", config={"StorageCompression": False}),
        OrthancServer(workdir / "b", ae_title="BENCHB", config={"StorageCompression": False}),
    ]
    for server in servers:
        server.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for server in servers:
            server.start()
        lines = ["StudyInstanceUID"]
        for i in range(studies):
            study = uid()
            series = uid()
            server = servers[i % 2]
            server.upload(
                make_dataset(
                    patient_id=f"BENCH{i:03d}", study_uid=study, series_uid=series,
                    instance_number=n + 1, rows=512, columns=512, seed=n,
                )
                for n in range(instances)
            )  # fmt: skip
            lines.append(study)
        listing = workdir / "cohort.csv"
        listing.write_text("\n".join(lines) + "\n")
        rows = read_cohort(listing)
        nodes = [s.node for s in servers]
        orthanc_pids = [s.process.pid for s in servers if s.process is not None]

        def settings(name: str, per_node: int) -> CohortSettings:
            out = workdir / "out" / name
            shutil.rmtree(out, ignore_errors=True)
            return CohortSettings(output=out, deid=DeidSettings(key=KEY), per_node=per_node)

        async def in_process() -> tuple[float, float, float]:
            s = settings("inproc", 2)
            cpu0, mine0 = _cpu(orthanc_pids), _cpu([os.getpid()])
            started = time.perf_counter()
            await run_cohort(rows, nodes, s)
            elapsed = time.perf_counter() - started
            return elapsed, _cpu(orthanc_pids) - cpu0, _cpu([os.getpid()]) - mine0

        async def on_dask(n: int) -> tuple[float, float, float]:
            async with distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, asynchronous=True,
                dashboard_address=None,
            ) as cluster:  # fmt: skip
                pids = [w.process.pid for w in cluster.workers.values()]
                async with distributed.Client(
                    cluster, asynchronous=True, set_as_default=False
                ) as warm:  # imports done, as on a cluster that has been up a while
                    await warm.run(_warm_up)
                s = settings(f"dask{n}", 4)
                cpu0, w0 = _cpu(orthanc_pids), _cpu(pids)
                started = time.perf_counter()
                await run_cohort_distributed(rows, nodes, s, cluster)
                elapsed = time.perf_counter() - started
                return elapsed, _cpu(orthanc_pids) - cpu0, _cpu(pids) - w0

        contenders: dict[str, Callable[[], Any]] = {"in process": in_process}
        for n in workers:
            contenders[f"dask x{n}"] = lambda n=n: on_dask(n)
        names = list(contenders)
        with dask.config.set({"distributed.worker.daemon": False}):
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    print(f"round {r + 1}: {name}", file=sys.stderr)
                    results.setdefault(name, []).append(asyncio.run(contenders[name]()))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    megabytes = studies * instances * 512 * 512 * 2 / 1e6
    base = statistics.median(t for t, _, _ in results[f"dask x{workers[0]}"])
    out = [
        f"{studies} studies x {instances} CT slices 512x512 ({megabytes:.0f} MB) from two Orthanc "
        f"servers; median of {rounds} rounds.",
        "",
        "| contender | seconds | studies/s | speed-up vs 1 worker | Orthanc CPU s | our CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        t = statistics.median(x for x, _, _ in results[name])
        orthanc_cpu = statistics.median(x for _, x, _ in results[name])
        our_cpu = statistics.median(x for _, _, x in results[name])
        out.append(
            f"| {name} | {t:.2f} | {studies / t:.1f} | {base / t:.2f}x "
            f"| {orthanc_cpu:.1f} | {our_cpu:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cohort", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("what", choices=("deid", "scale"))
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args(argv)
    if args.what == "deid":
        print(compare_deidentifiers())
    else:
        workers = [int(n) for n in args.workers.split(",")]
        print(scale(args.studies, args.instances, args.rounds, workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
