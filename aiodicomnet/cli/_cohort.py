"""``aiodicomnet cohort``: pull a de-identified cohort from a list (see docs/howto/cohort.md).

Imports the research recipes (and so dicognito) only when the command runs, so
the rest of the command line works without the ``research`` extra.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._dimse.bridge import run_in_thread

if TYPE_CHECKING:
    from ..research.cohort import CohortSettings, StudyOutcome
    from ._commands import Context

__all__ = ["add_arguments", "cmd_cohort"]

KEY_ENV = "AIODICOMNET_DEID_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``cohort`` command's own arguments."""
    parser.add_argument("cohort", metavar="COHORT.csv", help="the cohort list (CSV with a header)")
    parser.add_argument(
        "nodes", nargs="+", metavar="NODE", help="where to look, in order of preference"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="the output tree (and its state)"
    )
    parser.add_argument(
        "--key-file",
        metavar="PATH",
        help=f"the de-identification key, read from a file (else ${KEY_ENV})",
    )
    parser.add_argument(
        "--keep-dates", action="store_true", help="keep dates (default: shift them per patient)"
    )
    parser.add_argument(
        "--burned-in",
        choices=("refuse", "flag"),
        default="refuse",
        help="instances whose pixels may carry text: withhold them (default) or keep and log",
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="KEYWORD",
        help="leave this attribute as it is (repeatable), e.g. SeriesDescription",
    )
    parser.add_argument(
        "--mapping",
        metavar="PATH",
        help="record original -> pseudonym pairs in this SQLite file (outside the output)",
    )
    parser.add_argument(
        "--per-node", type=int, default=2, metavar="N", help="studies at once per node (2)"
    )
    parser.add_argument(
        "--attempts", type=int, default=3, metavar="N", help="tries per study before failing (3)"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a Dask cluster (tcp://host:8786) instead of in this process",
    )


def _key(args: argparse.Namespace) -> str:
    from ._parser import UsageError

    if args.key_file:
        try:
            key = Path(args.key_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--key-file: {exc}") from None
    else:
        key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise UsageError(
            f"a de-identification key is needed: --key-file PATH or ${KEY_ENV} "
            "(never on the command line, where other users could read it)"
        )
    return key


def _settings(args: argparse.Namespace, ae_title: str) -> CohortSettings:
    """The job's settings from the command line (reads the key file: call in a thread)."""
    from ..research.cohort import CohortSettings, DeidSettings

    return CohortSettings(
        output=Path(args.output).expanduser(),
        deid=DeidSettings(
            key=_key(args),
            shift_dates=not args.keep_dates,
            burned_in=args.burned_in,
            keep=tuple(args.keep),
            mapping=Path(args.mapping).expanduser() if args.mapping else None,
        ),
        ae_title=ae_title,
        per_node=args.per_node,
        attempts=args.attempts,
    )


async def cmd_cohort(ctx: Context) -> int:
    """Run or resume a cohort job; one JSON line per study with ``--json``."""
    from ._parser import UsageError

    try:
        from ..research import cohort as _cohort
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise UsageError(
            f"cohort needs the research extra (pip install 'aiodicomnet[research]'): {exc}"
        ) from None
    from ..errors import CohortInputError
    from ._commands import Partial

    args, out = ctx.args, ctx.output
    nodes = [ctx.node(spec) for spec in args.nodes]
    try:
        rows = await run_in_thread(_cohort.read_cohort, args.cohort)
    except OSError as exc:
        raise UsageError(f"{args.cohort}: {exc}") from None
    except CohortInputError as exc:
        raise UsageError(f"{args.cohort}: {exc}") from None
    try:
        settings = await run_in_thread(_settings, args, ctx.ae_title)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    with out.bar("cohort", None, sizes=False) as bar:

        def planned(total: int) -> None:
            bar.update(total=total)
            out.emit({"type": "planned", "studies": total})

        def study(outcome: StudyOutcome, finished: int, total: int) -> None:
            bar.update(advance=1)
            out.emit(
                {
                    "type": "study",
                    "line": outcome.line,
                    "status": outcome.status,
                    "instances": outcome.instances,
                    "withheld": outcome.withheld,
                    "detail": outcome.detail or None,
                    "finished": finished,
                    "total": total,
                }
            )
            if outcome.status == "failed":
                out.note(f"  line {outcome.line}: a study failed: {outcome.detail}")

        try:
            if args.scheduler:
                from ..research.distributed import run_cohort_distributed

                reports = await run_cohort_distributed(
                    rows, nodes, settings, args.scheduler, on_study=study, on_planned=planned
                )
            else:
                async with ctx.client() as client:
                    reports = await _cohort.run_cohort(
                        rows, nodes, settings, client=client, on_study=study, on_planned=planned
                    )
        except CohortInputError as exc:  # the list changed since the job started
            raise UsageError(f"{args.cohort}: {exc}") from None

    unfinished = [r for r in reports if r.status not in ("done", "not found")]
    for r in reports:
        out.emit(
            {
                "type": "row",
                "line": r.line,
                "status": r.status,
                "found": r.found,
                "retrieved": r.retrieved,
                "instances": r.instances,
                "withheld": r.withheld,
                "detail": r.detail or None,
            }
        )
    done = sum(r.retrieved for r in reports)
    out.line(
        f"{done} studies in {settings.output}; manifest: {settings.output / 'manifest.csv'}; "
        f"{len(reports) - len(unfinished)} of {len(reports)} rows complete"
    )
    for r in unfinished:
        out.note(f"  line {r.line}: {r.status}: {r.detail}")
    if unfinished:
        raise Partial(f"{len(unfinished)} of {len(reports)} rows not complete")
    return 0
