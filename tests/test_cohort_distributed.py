"""The cohort job on a Dask LocalCluster of worker processes, one of them killed mid-run.

Two real Orthanc servers, three worker processes; once a study is being
retrieved (its attempt is recorded in the job's state), the worker process
running that study's task is killed with SIGKILL. Dask runs the task again on
another worker; at the end every study was committed exactly once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiodicomnet.research.cohort import CohortSettings, DeidSettings, read_cohort
from aiodicomnet.research.manifest import JobState
from tests.test_cohort import (  # noqa: F401 - two_orthancs is a fixture
    KEY,
    assert_deidentified,
    make_cohort,
    read_manifest,
    two_orthancs,
    write_list,
)

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(90)]


def in_progress(state: JobState) -> list[str]:
    """Keys of studies with an attempt started and not committed."""
    return [s.key for s in state.studies() if s.attempts >= 1 and s.status != "done"]


async def test_a_killed_worker_loses_nothing_and_duplicates_nothing(
    two_orthancs: tuple[Any, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    import dask

    from aiodicomnet.research.distributed import run_cohort_distributed

    a, b = two_orthancs
    cohort = make_cohort(a, b, "DSK")
    rows = read_cohort(write_list(tmp_path / "cohort.csv", cohort.rows))
    settings = CohortSettings(
        output=tmp_path / "out", deid=DeidSettings(key=KEY), per_node=2, backoff=0.01
    )
    killed: dict[str, Any] = {}
    # leases of a killed worker go back after 2 s, not 30
    with dask.config.set(
        {
            "distributed.scheduler.locks.lease-timeout": "2s",
            "distributed.scheduler.locks.lease-validation-interval": "200ms",
        }
    ):
        async with (
            distributed.LocalCluster(
                n_workers=3,
                threads_per_worker=1,
                processes=True,
                asynchronous=True,
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster, asynchronous=True, set_as_default=False) as dask_client,
        ):
            state = JobState(settings.output)

            async def kill_one_mid_study() -> None:
                with anyio.fail_after(60):
                    while True:  # wait for a study being retrieved, then for its task
                        running = in_progress(state)
                        processing = await dask_client.processing()
                        for worker, keys in processing.items():
                            victims = [k for k in running if f"aiodicomnet-study-{k}" in keys]
                            if victims:
                                nanny = next(
                                    n
                                    for n in cluster.workers.values()
                                    if n.worker_address == worker
                                )
                                os.kill(nanny.process.pid, signal.SIGKILL)
                                killed["key"] = victims[0]
                                killed["done at kill"] = (
                                    state.study(victims[0]).status == "done"  # type: ignore[union-attr]
                                )
                                return
                        await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_one_mid_study)
                reports = await run_cohort_distributed(rows, [a.node, b.node], settings, cluster)

    assert killed, "no worker was killed"
    studies = JobState(settings.output).studies()
    assert len(studies) == 20
    assert all(s.status == "done" and s.retrievals == 1 for s in studies)
    victim = next(s for s in studies if s.key == killed["key"])
    if not killed["done at kill"]:
        assert victim.attempts >= 2  # run again after its worker died
    assert_deidentified(cohort, settings.output)
    assert [r.status for r in reports] == ["done"] * 20 + ["not found"]
    assert len(read_manifest(settings.output)) == 21


def test_the_cli_on_a_scheduler(two_orthancs: tuple[Any, Any], tmp_path: Path) -> None:  # noqa: F811
    import json
    import subprocess
    import sys

    from tests.test_cohort import ROOT

    a, b = two_orthancs
    cohort = make_cohort(a, b, "CLI")
    listing = write_list(tmp_path / "cohort.csv", cohort.rows[8:12])  # studies 8, 9 (a), 10, 11 (b)
    env = {**os.environ, "AIODICOMNET_DEID_KEY": KEY, "AIODICOMNET_CONFIG": str(tmp_path / "c")}
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        proc = subprocess.run(
            [sys.executable, "-m", "aiodicomnet", "cohort", str(listing), str(a.node),
             str(b.node), "-o", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address,
             "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [e for e in map(json.loads, proc.stdout.splitlines()) if e["type"] == "row"]
    assert [(r["status"], r["instances"]) for r in rows] == [("done", 4)] * 4
    assert all(s.retrievals == 1 for s in JobState(tmp_path / "out").studies())
