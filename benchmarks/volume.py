"""A CT series to a volume: aiodicomnet.imaging vs SimpleITK's own series reader.

Both read the same Part 10 files (512x512 16-bit CT slices, generated once)
into one volume in memory, each in a fresh process of its own
(``python -m benchmarks.volume adn|sitk DIRECTORY`` prints one JSON line),
interleaved round by round. Each process times only the read (after its
imports) and reports its peak resident set size growth over the read
(``ru_maxrss`` against the RSS before), and the size of the volume it made.

Targets: time <= 1.0x SimpleITK's; peak memory growth <= 1.3x the volume.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    Check,
    Contender,
    Section,
    Settings,
    Workspace,
    interleave,
    median,
    ratios,
    worker_env,
)

ROOT = Path(__file__).resolve().parent.parent
TIME_TARGET = 1.0
MEMORY_TARGET = 1.3


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read_adn(directory: str) -> dict[str, Any]:
    from aiodicomnet.imaging import volume_from

    paths = sorted(Path(directory).iterdir())
    base = _rss()
    t0 = time.perf_counter()
    volume = volume_from(paths)
    seconds = time.perf_counter() - t0
    return _result(seconds, base, volume.voxels.nbytes, volume.shape[0])


def read_sitk(directory: str) -> dict[str, Any]:
    import SimpleITK as sitk

    base = _rss()
    t0 = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(directory))
    image = reader.Execute()
    seconds = time.perf_counter() - t0
    nbytes = image.GetNumberOfPixels() * image.GetSizeOfPixelComponent()
    return _result(seconds, base, nbytes, image.GetSize()[2])


def _result(seconds: float, base: int, nbytes: int, slices: int) -> dict[str, Any]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak": (peak - base) / nbytes, "nbytes": nbytes, "slices": slices}


def _measure(which: str, directory: Path, slices: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.volume", which, str(directory)],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["slices"] != slices:
        raise RuntimeError(f"{which} read {result['slices']} slices of {slices}")
    return {k: float(result[k]) for k in ("seconds", "peak", "nbytes")}


def run(ws: Workspace, s: Settings) -> Section:
    files = ws.ct_series(s.store_slices)
    directory = files[0].parent
    section = Section(
        "volume",
        "Series to volume (aiodicomnet.imaging vs SimpleITK's series reader)",
        f"{len(files)} CT slices of 512x512x16 bit, read from the same files into one volume "
        "in memory; each contender in a fresh process, timing only the read; memory is the "
        "peak RSS growth during the read over the volume's own size.",
    )
    adn = "aiodicomnet.imaging.volume_from"
    sitk = "SimpleITK ImageSeriesReader (GDCM)"
    contenders = [
        Contender(adn, lambda: _measure("adn", directory, len(files))),
        Contender(sitk, lambda: _measure("sitk", directory, len(files))),
    ]
    results = interleave(section, s.rounds, contenders, retries=1)
    figures = {}
    for c in contenders:
        fig = section.figure(c.name, "s")
        fig.values = results[c.name]["seconds"]
        fig.extra["peak"] = results[c.name]["peak"]
        fig.extra["mib"] = [v / 2**20 for v in results[c.name]["nbytes"]]
        figures[c.name] = fig
    section.columns = (
        ("mib", "volume (MiB)", "median"),
        ("peak", "peak RSS growth / volume", "median"),
    )
    time_ratios = ratios(figures[adn], figures[sitk])
    section.checks.append(
        Check(
            "time, aiodicomnet / SimpleITK",
            median(time_ratios),
            f"<= {TIME_TARGET:.1f}x",
            median(time_ratios) <= TIME_TARGET,
            rounds=time_ratios,
        )
    )
    peaks = figures[adn].extra["peak"]
    section.checks.append(
        Check(
            "aiodicomnet peak memory / volume size",
            median(peaks),
            f"<= {MEMORY_TARGET:.1f}x",
            median(peaks) <= MEMORY_TARGET,
            rounds=peaks,
        )
    )
    return section


if __name__ == "__main__":
    which, directory = sys.argv[1], sys.argv[2]
    reader = {"adn": read_adn, "sitk": read_sitk}[which]
    print(json.dumps(reader(directory)), flush=True)
