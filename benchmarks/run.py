"""Run the benchmarks side by side and write a markdown report.

::

    ./scripts/bench                   # everything (~5-10 minutes)
    ./scripts/bench --quick           # smaller data, fewer rounds (~2 minutes)
    ./scripts/bench --only store,echo # some of them

The report goes to ``benchmarks/results/latest.md`` (``--output``) and to
standard output; progress goes to standard error.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from .common import Section, Settings, Workspace, log, machine_info, median

#: name -> "module:function(workspace, settings) -> Section", in running order.
BENCHMARKS = {
    "store": "benchmarks.store:run",
    "store-parallel": "benchmarks.store:run_parallel",
    "echo": "benchmarks.echo:run",
    "pool": "benchmarks.pool:run",
    "browse": "benchmarks.browse:run",
    "receive": "benchmarks.receive:run",
    "receive-parallel": "benchmarks.receive:run_parallel",
    "rss": "benchmarks.receive:run_rss",
    "retrieve": "benchmarks.retrieve:run",
    "dicomweb": "benchmarks.dicomweb:run",
    "volume": "benchmarks.volume:run",
}

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.md"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer rounds")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per benchmark")
    parser.add_argument(
        "--workdir",
        default=None,
        help="where to put generated data and received files (default: a new "
        "directory under /dev/shm if it has room, else the system temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown report")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    args.names = names
    return args


def _fmt(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:+.2f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    a = abs(value)
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _rounds(values: Sequence[float]) -> str:
    return ", ".join(_fmt(v) for v in values)


def render(
    sections: Sequence[Section],
    *,
    command: str,
    started: datetime,
    seconds: float,
    settings: Settings,
    machine: dict[str, str],
    workspace: str,
    rev: str,
) -> str:
    out: list[str] = []
    add = out.append
    add("# aiodicomnet benchmarks")
    add("")
    add(f"- Command: `{command}`")
    add(f"- aiodicomnet revision: {rev}")
    add(f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z')} (took {seconds / 60:.1f} min)")
    add(
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory']} RAM, "
        f"{machine['os']}; load average at start {machine['load average at start']}"
    )
    add(
        f"- Software: Python {machine['python']}, pydicom {machine['pydicom']}, "
        f"pynetdicom {machine['pynetdicom']}, DCMTK {machine['dcmtk']}"
    )
    add(f"- Files: {workspace}; everything on 127.0.0.1")
    add(
        f"- Method: {settings.rounds} rounds (retrieve: {settings.retrieve_rounds}, pool: "
        f"{settings.pool_rounds}); in each "
        "round every contender runs once, in its own process, one at a time, the order "
        "rotating from round to round. A figure is the median over rounds; a ratio is "
        "the median of the per-round ratios."
    )
    add("")
    add("## Summary")
    add("")
    add("| benchmark | check | value | target | result |")
    add("|---|---|---|---|---|")
    for s in sections:
        if s.error:
            add(f"| {s.title} | failed to run | - | - | ERROR |")
        for c in s.checks:
            add(f"| {s.title} | {c.what} | {_fmt(c.value, c.unit)} | {c.target or '-'} | "
                f"{c.verdict} |")  # fmt: skip
    for s in sections:
        add("")
        add(f"## {s.title}")
        add("")
        add(s.setup)
        add("")
        if s.figures:
            unit = s.figures[0].unit
            columns = list(s.columns)
            if s.redone:
                columns.append(("redone", "runs redone", "sum"))
                for f in s.figures:
                    f.extra["redone"] = [float(s.redone.get(f.contender, 0))]
            head = f"| contender | median ({unit}) |" + "".join(f" {c[1]} |" for c in columns)
            add(head + " per round |")
            add("|---|---:|" + "---:|" * len(columns) + "---|")
            for f in s.figures:
                cells = ""
                for key, _, how in columns:
                    values = f.extra.get(key, [])
                    cell = (
                        (f"{sum(values):g}" if values else "-")
                        if how == "sum"
                        else _fmt(median(values))
                    )
                    cells += f" {cell} |"
                add(f"| {f.contender} | {_fmt(f.median)} |{cells} {_rounds(f.values)} |")
            add("")
        if s.checks:
            add("| check | value | target | result | per round |")
            add("|---|---:|---|---|---|")
            for c in s.checks:
                add(f"| {c.what} | {_fmt(c.value, c.unit)} | {c.target or '-'} | {c.verdict} | "
                    f"{_rounds(c.rounds)} |")  # fmt: skip
            add("")
        if s.error:
            add("```")
            add(s.error.rstrip())
            add("```")
            add("")
        notes = list(s.notes)
        if s.redone:
            notes.insert(
                0,
                f"Runs redone: {sum(s.redone.values())}. Each lost a response to pynetdicom's "
                'reactor race (its log: "Received unexpected C-... service message"; '
                "aiodicomnet locks the reactor out, see aiodicomnet/_dimse/patches.py), "
                "waited for the DIMSE timeout and was run again.",
            )
        for note in notes:
            add(f"- {note}")
        if notes:
            add("")
    return "\n".join(out).rstrip() + "\n"


def revision() -> str:
    """The library's git revision, and whether aiodicomnet/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "aiodicomnet"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes in aiodicomnet/" if dirty else "")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    command = os.environ.get("ADN_BENCH_COMMAND") or shlex.join(
        ["python", "-m", "benchmarks.run", *argv]
    )
    settings = Settings.make(args.quick, args.rounds)
    started = datetime.now(timezone.utc).astimezone()
    t0 = time.monotonic()
    machine = machine_info()
    rev = revision()
    ws = Workspace(args.workdir, keep=args.keep)
    where = "tmpfs" if ws.on_tmpfs else "disk"
    workspace = f"generated into a temporary directory on {where} ({ws.root.parent}), removed after"
    log(f"work directory {ws.root} ({where})")
    sections: list[Section] = []
    try:
        for name in args.names:
            log(f"== {name}")
            module_name, function = BENCHMARKS[name].split(":")
            try:
                bench = getattr(importlib.import_module(module_name), function)
                sections.append(bench(ws, settings))
            except KeyboardInterrupt:
                raise
            except Exception:
                log(f"{name} failed:\n{traceback.format_exc()}")
                sections.append(Section(name, name, "", error=traceback.format_exc(limit=4)))
    finally:
        ws.close()
    report = render(
        sections,
        command=command,
        started=started,
        seconds=time.monotonic() - t0,
        settings=settings,
        machine=machine,
        workspace=workspace,
        rev=rev,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    log(f"report written to {args.output}")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
