"""Shared pieces of the benchmarks: workspace, data, peers, workers, statistics, results.

Every contender runs in a process of its own (a *worker*, see
:mod:`benchmarks.workers`, or a DCMTK tool), one at a time, so they never
compete for the two cores or share interpreter state. The contenders of a
benchmark are interleaved round by round (the order rotates each round) and
each figure is the median over rounds of a ratio taken within one round: the
machine is shared and absolute numbers drift, ratios much less.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.data import iter_large_ct, write_files
from tests.peers.util import DCMTK_TOOLS, PeerProcess, dcmtk_binary, wait_for_port

HOST = "127.0.0.1"
MB = 1_000_000  # throughput is in MB/s (10^6 bytes), as DCMTK and most tools report it
_EXTRA_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")


# ---------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` rotated left by ``k``: round ``k`` starts with a different contender."""
    k %= len(items)
    return [*items[k:], *items[:k]]


# ---------------------------------------------------------------------- results


@dataclass
class Figure:
    """One contender's result: a value per round, shown as the median."""

    contender: str
    unit: str
    values: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)  # e.g. p95 per round
    note: str = ""

    @property
    def median(self) -> float:
        return median(self.values)


@dataclass
class Check:
    """A target: the median over rounds of a per-round ratio (or difference)."""

    what: str
    value: float
    target: str
    passed: bool | None  # None: for information, no target
    unit: str = "x"
    rounds: list[float] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "info" if self.passed is None else ("PASS" if self.passed else "MISS")


@dataclass
class Section:
    key: str
    title: str
    setup: str
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: extra columns: (key in Figure.extra, heading, "median" or "sum" over rounds)
    columns: tuple[tuple[str, str, str], ...] = ()
    error: str | None = None
    #: contender -> runs redone because pynetdicom lost a response (the reactor race)
    redone: dict[str, int] = field(default_factory=dict)

    def figure(self, contender: str, unit: str, note: str = "") -> Figure:
        fig = Figure(contender, unit, note=note)
        self.figures.append(fig)
        return fig


def ratios(a: Figure, b: Figure) -> list[float]:
    return [x / y for x, y in zip(a.values, b.values, strict=False) if y]


def differences(a: Figure, b: Figure) -> list[float]:
    return [x - y for x, y in zip(a.values, b.values, strict=False)]


# ---------------------------------------------------------------------- machine


def machine_info() -> dict[str, str]:
    import pydicom
    import pynetdicom

    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except Exception:  # pragma: no cover - psutil missing
        mem, load = "?", "?"
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    dcmtk = "?"
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [find_binary("storescu"), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        dcmtk = out.split()[2] if out.startswith("$dcmtk") else out.splitlines()[0]
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "load average at start": load,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
        "dcmtk": dcmtk,
    }


def find_binary(name: str) -> str:
    """Absolute path of ``name``; for a DCMTK tool, DCMTK's own.

    pynetdicom's console scripts (``storescu``, ``echoscu``, ...) share DCMTK's
    names and come first on an activated virtualenv's PATH: a benchmark of
    "DCMTK storescu" must not time pynetdicom's (see ``dcmtk_binary``).
    """
    if name in DCMTK_TOOLS:
        found = dcmtk_binary(name)
    else:
        search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_EXTRA_PATH])
        found = shutil.which(name, path=search)
    if found is None:
        raise MissingTool(f"{name} not found (scripts/setup installs DCMTK and Orthanc)")
    return found


class MissingTool(RuntimeError):
    pass


# ---------------------------------------------------------------------- environment


def peer_env(*, nagle: bool = False) -> dict[str, str]:
    """Environment for a DCMTK-based peer: ``TCP_NODELAY=1`` unless ``nagle``."""
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if not nagle:
        env["TCP_NODELAY"] = "1"
    return env


def worker_env() -> dict[str, str]:
    """Environment for a Python worker: no TCP_NODELAY (it means nothing to Python)."""
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables of this process for the duration of a block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- workspace and data


class Workspace:
    """A temporary directory, on tmpfs (/dev/shm) when there is room, removed at the end.

    Data is generated here once and reused by every benchmark; peers write
    what they receive here too, so the disk is never the bottleneck.
    """

    def __init__(self, base: str | None = None, *, keep: bool = False) -> None:
        if base is None:
            base = _tmpfs_base()
        self.root = Path(tempfile.mkdtemp(prefix="aiodicomnet-bench-", dir=base))
        self.on_tmpfs = _is_tmpfs(self.root)
        self.keep = keep
        self._series: dict[int, list[Path]] = {}
        self._lock = threading.Lock()

    def path(self, *parts: str, clean: bool = False) -> Path:
        p = self.root.joinpath(*parts)
        if clean and p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def ct_series(self, n: int) -> list[Path]:
        """``n`` 512x512 16-bit CT slices of one series, as Part 10 files (cached)."""
        with self._lock:
            if n not in self._series:
                directory = self.path("data", f"ct{n}")
                t0 = time.perf_counter()
                self._series[n] = sorted(write_files(directory, iter_large_ct(n)))
                log(f"generated {n} CT slices in {time.perf_counter() - t0:.1f} s")
            return self._series[n]

    def studies(
        self, name: str, *, patients: int, studies: int, series: int, instances: int
    ) -> Path:
        """Small instances (16x16 CT) of ``patients`` x ``studies`` x ``series``
        x ``instances``, as Part 10 files in ``data/name`` (cached).

        Series of a study share its patient and study UIDs (``samples.make_series``);
        patient IDs are ``{name}{p:02d}`` in upper case.
        """
        from aiodicomnet.samples import make_series, uid

        with self._lock:
            directory = self.root / "data" / name
            if directory.is_dir():
                return directory
            t0 = time.perf_counter()
            datasets = []
            prefix = name.upper()[:8]
            for p in range(patients):
                for s in range(studies):
                    study_uid = uid()
                    for r in range(series):
                        datasets += make_series(
                            instances,
                            patient_id=f"{prefix}{p:02d}",
                            patient_name=f"{prefix.capitalize()}^Patient{p:02d}",
                            study_uid=study_uid,
                            study_date=f"2024{s % 12 + 1:02d}15",
                            study_description=f"STUDY {s + 1}",
                            accession=f"{prefix[:4]}{p:02d}{s:03d}",
                            study_id=str(s + 1),
                            series_number=r + 1,
                            series_description=f"SERIES {r + 1}",
                        )
            write_files(directory, datasets)
            log(f"generated {len(datasets)} small instances ({name}) in "
                f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
            return directory

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _tmpfs_base() -> str | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        usage = shutil.disk_usage(shm)
        if usage.free > 4 * 2**30:
            return str(shm)
    return None


def _is_tmpfs(path: Path) -> bool:
    best, fstype = "", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype == "tmpfs"


def total_bytes(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def empty_dir(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


# ---------------------------------------------------------------------- logging


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- peers


def start_storescp(
    ws: Workspace,
    name: str,
    *,
    ae_title: str = "STORESCP",
    nagle: bool = False,
    extra: Sequence[str] = (),
) -> tuple[PeerProcess, int, Path]:
    """DCMTK storescp writing into ``ws/name/received``; returns (process, port, directory).

    Quiet (no ``--verbose``): logging every instance would cost it time. It
    accepts the uncompressed transfer syntaxes, preferring Explicit VR Little
    Endian (its default), not ``--accept-all``: with that it prefers Deflated
    Explicit VR Little Endian, and a requestor that proposes it (pynetdicom's
    default transfer syntaxes do) would spend its time in zlib.
    """
    directory = ws.path(name, "received", clean=True)
    port = free_port()
    argv = [
        find_binary("storescp"),
        "--aetitle", ae_title,
        "--output-directory", str(directory),
        "--promiscuous",
        "--disable-host-lookup",
        *extra,
        str(port),
    ]  # fmt: skip
    proc = PeerProcess(
        f"storescp-{name}", argv, log_path=ws.path(name) / "storescp.log", env=peer_env(nagle=nagle)
    )
    try:
        wait_for_port(HOST, port, 30, process=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, port, directory


def run_tool(
    argv: Sequence[str], *, timeout: float, nagle: bool = False
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a DCMTK tool (``TCP_NODELAY=1`` unless ``nagle``); return (seconds, result).

    Raises RuntimeError with the tail of its output if it fails or reports errors.
    """
    t0 = time.perf_counter()
    result = subprocess.run(
        list(argv),
        env=peer_env(nagle=nagle),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t0
    errors = [ln for ln in result.stderr.splitlines() if ln[:2] in {"E:", "F:"}]
    if result.returncode != 0 or errors:
        raise RuntimeError(
            f"{Path(argv[0]).name} failed ({result.returncode}):\n"
            f"{(result.stderr + result.stdout)[-3000:]}"
        )
    return seconds, result


# ---------------------------------------------------------------------- workers


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Worker:
    """A benchmark worker process: ``python -m benchmarks.workers NAME PARAMS``.

    It prints ``READY`` when it is ready to be measured (servers), and its
    result as one JSON line at the end; its stderr goes to a log file.
    """

    def __init__(self, ws: Workspace, name: str, **params: Any) -> None:
        self.name = name
        logs = ws.path("logs")
        self.log_path = logs / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", name, json.dumps(params)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=worker_env(),
            preexec_fn=_die_with_parent
            if threading.current_thread() is threading.main_thread()
            else os.setsid,
        )
        self._lines: list[str] = []
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_line(self, deadline: float) -> str | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"worker {self.name} timed out\n{self.log_tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_line(deadline)
            if line is None:
                self.proc.wait(5)
                raise RuntimeError(
                    f"worker {self.name} exited ({self.proc.returncode}) before READY\n"
                    f"{self.log_tail()}"
                )
            if line.strip() == "READY":
                return

    def result(self, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: str | None = None
        try:
            while True:
                line = self._read_line(deadline)
                if line is None:
                    break
                if line.strip():
                    last = line
            self.proc.wait(max(1.0, deadline - time.monotonic()))
        finally:
            self.stop()
        if self.proc.returncode != 0 or last is None:
            raise RuntimeError(
                f"worker {self.name} failed ({self.proc.returncode}){self._known()}\n"
                f"{self.log_tail()}"
            )
        data: dict[str, Any] = json.loads(last)
        return data

    def _known(self) -> str:
        """Known pynetdicom messages in the whole log (the tail may not show them)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "".join(
            f"; log: {line.strip()}"
            for line in dict.fromkeys(text.splitlines())
            if "Received unexpected" in line
        )

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError, ValueError):
            if not self._log.closed:
                self._log.flush()
            text = self.log_path.read_text(errors="replace")
            return "--- worker log ---\n" + "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def run_worker(
    ws: Workspace, name: str, *, timeout: float = 300.0, **params: Any
) -> dict[str, Any]:
    """Run a one-shot worker and return its JSON result."""
    return Worker(ws, name, **params).result(timeout)


def start_archive(
    ws: Workspace, name: str, files: Path, *, ae_title: str = "ARCHIVE"
) -> tuple[Worker, int]:
    """An aiodicomnet ``Archive`` (Q/R SCP) in a worker process of its own, holding
    ``files``; its index and files in ``ws/name/archive``. Returns (worker, port).

    Stop it with ``worker.stop()``.
    """
    port = free_port()
    directory = ws.path(name, "archive", clean=True)
    archive = Worker(
        ws, "archive-serve", port=port, directory=str(directory), files=str(files),
        ae_title=ae_title,
    )  # fmt: skip
    try:
        archive.wait_ready(120)
    except BaseException:
        archive.stop()
        raise
    return archive, port


def start_orthanc(ws: Workspace, name: str, files: Path, section: Section) -> Any:
    """An Orthanc (``TCP_NODELAY=1``) holding ``files``, or ``None`` if Orthanc is not
    installed (noted in ``section``). Stop it with ``.stop()``."""
    try:
        find_binary("Orthanc")
    except Exception as exc:
        section.notes.append(f"Orthanc not measured: {exc}")
        return None
    from tests.peers.orthanc import OrthancServer

    orthanc = OrthancServer(ws.path(name, "orthanc"))
    with environ(TCP_NODELAY="1"):
        orthanc.start()
    t0 = time.perf_counter()
    orthanc.upload(sorted(files.iterdir()))
    log(f"uploaded {count_files(files)} instances to Orthanc in {time.perf_counter() - t0:.1f} s")
    return orthanc


class RssSampler:
    """Sample a process's resident set size in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._proc.memory_info().rss
            except Exception:
                return
            self.peak = max(self.peak, rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return int(self.peak - self.baseline)


@dataclass
class Settings:
    """What a run measures (``--quick`` shrinks it)."""

    quick: bool
    rounds: int
    store_slices: int
    echo_count: int
    echo_nagle_count: int
    receive_slices: int
    rss_slices: int
    retrieve_slices: int
    retrieve_rounds: int
    #: C-ECHOs and C-FINDs per run of the pool benchmark
    pool_ops: int = 100
    #: rounds of the pool benchmark (its per-round ratios vary little; its runs are long)
    pool_rounds: int = 3
    #: studies (of 4 series) in the browse benchmark's archive
    browse_studies: int = 50

    @classmethod
    def make(cls, quick: bool, rounds: int | None) -> Settings:
        if quick:
            return cls(
                True, rounds or 2, 100, 100, 25, 100, 500, 50, rounds or 5,
                pool_ops=30, pool_rounds=rounds or 2, browse_studies=20,
            )  # fmt: skip
        return cls(
            False, rounds or 5, 500, 200, 200, 500, 2000, 50, rounds or 7,
            pool_rounds=rounds or 3,
        )  # fmt: skip


Bench = Callable[[Workspace, Settings], Section]


@dataclass
class Contender:
    """One side of a comparison: ``measure()`` runs it once and returns its figure(s)."""

    name: str
    measure: Callable[[], dict[str, float]]


def interleave(
    section: Section, rounds: int, contenders: Sequence[Contender], *, retries: int = 1
) -> dict[str, dict[str, list[float]]]:
    """Run every contender once per round, rotating the order each round.

    Returns ``{contender: {key: [value per round]}}``. A run that fails is
    retried (``retries`` times) and the failure noted in the section.
    """
    results: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    for r in range(rounds):
        for c in rotate(contenders, r):
            for attempt in range(retries + 1):
                try:
                    values = c.measure()
                    break
                except Exception as exc:
                    text = str(exc).strip()
                    lost = "Received unexpected" in text
                    log(f"{c.name} failed: {text}")
                    if lost:
                        section.redone[c.name] = section.redone.get(c.name, 0) + 1
                    else:
                        first = text.splitlines()[0] if text else type(exc).__name__
                        section.notes.append(f"round {r + 1}: {c.name} failed ({first})")
                    if attempt == retries:
                        raise
            for key, value in values.items():
                results[c.name].setdefault(key, []).append(value)
            log(
                f"  round {r + 1}: {c.name}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            )
    return results
