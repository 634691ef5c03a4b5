"""The cohort job on a Dask cluster: one task per study, each worker running aiodicomnet.

::

    reports = await run_cohort_distributed(
        "cohort.csv", [pacs_a, pacs_b], settings, "tcp://scheduler:8786"
    )

Why Dask distributed rather than Ray: a study's retrieval is a plain Python
function on small arguments (a few UIDs and the settings) whose output goes to
a shared file system, not back through the scheduler; Dask runs exactly that
with a pure-Python scheduler and worker (``pip install distributed``, nothing
else to run), starts a local cluster of worker processes in about a second,
reschedules the tasks of a worker that dies (``distributed.scheduler.allowed-failures``
times), and has a cluster-wide :class:`distributed.Semaphore` for the per-PACS
limit. Ray would add an object store and a C++ runtime for nothing a cohort pull
needs.

How it runs: the cohort list is planned here (C-FIND of every row, in this
process); each study still to fetch becomes one task (sharded by study). A task
runs :func:`~aiodicomnet.research.cohort.retrieve_study` in the worker, in an event
loop of its own, under the node's cluster-wide semaphore (``settings.per_node``
leases per node). Every process shares the job's state and output through the file
system (``settings.output`` must be the same path on every worker).

Exactly one successful retrieval per study: a study is done only through the
state's commit (see :mod:`~aiodicomnet.research.manifest`), one SQLite
transaction that also moves the study into the output tree. A task run again
after its worker was killed starts from scratch in a staging directory of its
own; one that finds the study committed already discards its copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio

from ..client import Client
from ..nodes import AnyNode
from .cohort import (
    CohortRow,
    CohortSettings,
    StudyOutcome,
    StudyTask,
    finish,
    plan_cohort,
    retrieve_study,
    rows_of,
)
from .manifest import RowReport

__all__ = ["run_cohort_distributed", "study_task"]


def semaphore_name(node: AnyNode) -> str:
    """The name of a node's cluster-wide semaphore."""
    return f"aiodicomnet-node-{node}"


def study_task(task: StudyTask, settings: CohortSettings) -> StudyOutcome:
    """Retrieve one study in a Dask worker (its own event loop, client and de-identifier)."""
    from distributed import Semaphore

    semaphore = Semaphore(  # type: ignore[no-untyped-call]
        max_leases=settings.per_node, name=semaphore_name(task.node)
    )

    async def main() -> StudyOutcome:
        async with Client(settings.ae_title) as client:
            return await retrieve_study(client, task, settings, settings.deid.deidentifier())

    with semaphore:
        return anyio.run(main)


async def run_cohort_distributed(
    cohort: str | os.PathLike[str] | Sequence[CohortRow],
    nodes: Sequence[AnyNode],
    settings: CohortSettings,
    scheduler: str | Any,
    *,
    client: Client | None = None,
    on_study: Callable[[StudyOutcome, int, int], object] | None = None,
    on_planned: Callable[[int], object] | None = None,
) -> list[RowReport]:
    """Run (or resume) a cohort job on a Dask cluster; return the manifest's rows.

    Args:
        cohort, nodes, settings, on_study, on_planned: as for
            :func:`~aiodicomnet.research.cohort.run_cohort` (``method`` must be
            ``"get"``: a C-MOVE destination is one fixed address).
        scheduler: the scheduler's address (``"tcp://host:8786"``), or a
            cluster object with an ``scheduler_address`` (a ``LocalCluster``).
        client: the aiodicomnet client for the planning finds (default: a new one).

    Runs on asyncio (Dask's client is asyncio-based). Cancelling it cancels the
    tasks not yet finished; the state keeps what was committed.
    """
    from distributed import Client as DaskClient

    if settings.method != "get":
        raise ValueError("a distributed cohort job retrieves with C-GET (method='get')")
    rows = await rows_of(cohort)
    address = getattr(scheduler, "scheduler_address", scheduler)
    async with AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(Client(settings.ae_title))
        try:
            tasks = await plan_cohort(client, rows, nodes, settings)
            if on_planned is not None:
                on_planned(len(tasks))
            if tasks:
                dask = await stack.enter_async_context(
                    DaskClient(  # type: ignore[no-untyped-call]
                        address, asynchronous=True, set_as_default=False
                    )
                )
                futures = [
                    dask.submit(study_task, task, settings, key=f"aiodicomnet-study-{task.key}")
                    for task in tasks
                ]
                finished = 0

                async def one(future: Any) -> None:
                    nonlocal finished
                    outcome = await future
                    finished += 1
                    if on_study is not None:
                        on_study(outcome, finished, len(tasks))

                try:
                    async with anyio.create_task_group() as tg:
                        for future in futures:
                            tg.start_soon(one, future)
                finally:
                    with anyio.CancelScope(shield=True):
                        await dask.cancel(futures)
        finally:
            with anyio.CancelScope(shield=True):
                reports = await finish(settings)
    return reports
