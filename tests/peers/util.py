"""Helpers shared by the real-peer fixtures: ports, binaries, process lifecycle.

Peers run as child processes in their own process group (so a forking server
and its children are stopped together) and, on Linux, die with the test
process even if it is killed without cleanup.

It is also a pytest plugin (listed in the peer plugins' ``pytest_plugins``)
defining the fixtures both use: ``corpus``, ``move_destination``,
``storescp_port``. The peer plugins import it before pytest registers it as a
plugin, which would draw an "already imported" warning from assertion
rewriting; this module has no asserts to rewrite, so: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from aiodicomnet import Node
from tests.data import Corpus, make_corpus

__all__ = [
    "DCMTK_TOOLS",
    "PeerProcess",
    "dcmtk_binary",
    "find_binary",
    "find_dcmtk",
    "free_port",
    "in_ci",
    "is_listening",
    "missing",
    "wait_for_port",
]

# Where distributions put server binaries that are not on a normal user's PATH.
_EXTRA_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def in_ci() -> bool:
    """True when running under CI (env ``CI`` set to true/1/yes)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip the test for a missing peer, or fail it under CI, where peers must exist."""
    if in_ci():
        pytest.fail(f"{reason}; real peers are required when CI=true", pytrace=False)
    pytest.skip(reason)


def find_binary(name: str) -> str:
    """Absolute path of ``name`` on PATH or in the sbin directories; skip/fail if absent.

    A DCMTK tool name (:data:`DCMTK_TOOLS`) is looked up by :func:`find_dcmtk`.
    """
    if name in DCMTK_TOOLS:
        return find_dcmtk(name)
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_EXTRA_PATH])
    found = shutil.which(name, path=search)
    if found is None:
        missing(f"{name} not found (install it with scripts/setup)")
    return found


# -- DCMTK's tools, not pynetdicom's namesakes ------------------------------------

#: DCMTK tools the tests and benchmarks may run. pynetdicom installs console
#: scripts named ``echoscu``, ``findscu``, ``getscu``, ``movescu``, ``storescu`` and
#: ``storescp`` too: in an activated virtualenv they come first on PATH and hide
#: DCMTK's, with other options and other output.
DCMTK_TOOLS = frozenset(
    {
        "echoscu", "findscu", "getscu", "movescu", "storescu", "storescp", "termscu",
        "dcmqrscp", "dcmqridx", "dcmrecv", "dcmsend", "wlmscpfs",
        "dcmdump", "dcmconv", "dcmodify", "dcmcjpeg", "dcmdjpeg", "dcmcjpls", "dcmdjpls",
        "dcmcrle", "dcmdrle", "img2dcm",
    }
)  # fmt: skip

# Where distributions install DCMTK, searched after PATH.
_DCMTK_FALLBACK = ("/usr/local/bin", "/usr/bin", "/opt/homebrew/bin", *_EXTRA_PATH)


def find_dcmtk(name: str) -> str:
    """Absolute path of DCMTK's ``name`` (see :func:`dcmtk_binary`); skip/fail if absent."""
    found = dcmtk_binary(name)
    if found is None:
        missing(
            f"DCMTK's {name} not found (install DCMTK with scripts/setup; a {name} that is "
            "not DCMTK's, such as pynetdicom's console script, does not count)"
        )
    return found


def dcmtk_binary(name: str) -> str | None:
    """Absolute path of DCMTK's tool ``name``, or None when DCMTK does not provide one.

    Searches PATH, then the usual install directories, skipping the ``bin`` of
    any virtualenv (where pynetdicom puts its namesakes) and any candidate whose
    ``--version`` does not say it is DCMTK (``$dcmtk: storescu v3.6.7 ...``, or
    OFFIS, DCMTK's authors). The answer is cached per PATH.
    """
    return _dcmtk_binary(name, os.environ.get("PATH", os.defpath))


@functools.cache
def _dcmtk_binary(name: str, path: str) -> str | None:
    directories = dict.fromkeys([*path.split(os.pathsep), *_DCMTK_FALLBACK])
    for directory in directories:
        if not directory or _in_virtualenv(directory):
            continue
        candidate = shutil.which(name, path=directory)
        if candidate is not None and _is_dcmtk(candidate):
            return candidate
    return None


def _in_virtualenv(directory: str) -> bool:
    """Whether ``directory`` is the scripts directory of a virtualenv (``pyvenv.cfg`` above)."""
    return (Path(directory).parent / "pyvenv.cfg").is_file()


def _is_dcmtk(binary: str) -> bool:
    """Whether ``binary --version`` reports a DCMTK tool."""
    try:
        result = subprocess.run(
            [binary, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    text = result.stdout + result.stderr
    return "$dcmtk:" in text or "OFFIS" in text


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bound to 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_net_listening(port: int) -> bool | None:
    """Whether some socket listens on ``port`` per /proc/net/tcp{,6}; None if unreadable."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            # fields[1] is "ADDR:PORT" in hex, fields[3] the state; 0A is LISTEN.
            if (
                len(fields) > 3
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                return True
    return False if found_table else None


def is_listening(host: str, port: int) -> bool:
    """Whether ``host:port`` accepts TCP connections.

    On Linux this reads the kernel's socket table, so probing does not open a
    connection the peer would log as a failed association; elsewhere it tries
    to connect.
    """
    listening = _proc_net_listening(port) if host in {"127.0.0.1", "localhost", "::1"} else None
    if listening is not None:
        return listening
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    process: PeerProcess | None = None,
) -> None:
    """Wait until ``host:port`` listens; raise TimeoutError after ``timeout`` seconds.

    With ``process``, fail at once (with the tail of its log) if it exits first.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with code {process.returncode} before listening on "
                f"{host}:{port}\n{process.log_tail()}"
            )
        if is_listening(host, port):
            return
        if time.monotonic() >= deadline:
            where = f"\n{process.log_tail()}" if process is not None else ""
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s{where}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _new_session() -> None:  # pragma: no cover - runs in the child
    """In the child before exec: lead a new process group."""
    os.setsid()


def _new_session_die_with_parent() -> None:  # pragma: no cover - runs in the child
    """As ``_new_session``, and get SIGTERM when the parent thread dies (Linux)."""
    os.setsid()
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class PeerProcess:
    """A peer server started in its own process group, output going to a log file.

    ``env`` is the child's whole environment (default: ours). ``stop()`` sends
    SIGTERM to the group, waits, then SIGKILLs what is left.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        # Tie the peer's life to ours on Linux, but only when started from the
        # main thread: the kernel signals when the *thread* that forked exits.
        preexec = (
            _new_session_die_with_parent
            if sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
            else _new_session
        )
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            preexec_fn=preexec,
        )

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"({self.name}: no log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def _signal_group(self, sig: int) -> None:
        # The child called setsid(), so its process group id is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the peer and its children; kill them after ``timeout`` seconds."""
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait(timeout)
        # Forked children (dcmqrscp) may outlive the parent briefly: clear the group.
        self._signal_group(signal.SIGKILL)
        self._log.close()
        return self._popen.returncode

    def __repr__(self) -> str:
        return f"<PeerProcess {self.name} pid={self.pid} rc={self.returncode}>"


# -- fixtures shared by the peer plugins ---------------------------------------


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """The generated test corpus: 3 patients, 6 studies, 12 series, 36 instances."""
    return make_corpus()


@pytest.fixture(scope="session")
def move_destination() -> Node:
    """``ADNMOVE`` at a port reserved for the session, known to Orthanc and dcmqrscp.

    Start a C-MOVE receiver (Storage SCP) with this AE title on this port and
    ask a peer to move to ``ADNMOVE``.
    """
    return Node("ADNMOVE", "127.0.0.1", free_port())


@pytest.fixture(scope="session")
def storescp_port() -> int:
    """The port the ``storescp`` fixture listens on, reserved before it starts.

    Reserved early so Orthanc and dcmqrscp can list ``STORESCP`` as a C-MOVE
    destination without starting storescp.
    """
    return free_port()
