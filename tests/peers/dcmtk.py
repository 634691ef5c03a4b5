"""Real DCMTK peers and command line tools for tests (pytest plugin).

Fixtures (session scope, each started on first request):

- ``storescp``: DCMTK storescp, Nagle off (env ``TCP_NODELAY=1``).
- ``storescp_nagle``: the same with Nagle on, as Debian's DCMTK ships it.
- ``dcmqrscp``: DCMTK's Query/Retrieve SCP, empty; it knows the C-MOVE
  destinations from ``dcmqrscp_destinations``.
- ``dcmqrscp_loaded``: ``dcmqrscp`` holding the generated ``corpus``.
- ``wlmscpfs``: DCMTK's Modality Worklist SCP, answering from the worklist
  files a test writes (``WlmScp.write``).

``dcmtk_tool("findscu", ...)`` runs a DCMTK client with ``TCP_NODELAY=1``.

Every tool is DCMTK's own, found by :func:`tests.peers.util.find_dcmtk`:
pynetdicom installs console scripts with the same names (``storescu``,
``storescp``, ``findscu``, ...) that an activated virtualenv puts first on PATH.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from aiodicomnet import Node
from tests.data import Corpus, write_files
from tests.peers.util import PeerProcess, find_dcmtk, free_port, wait_for_port

# util also defines the fixtures shared with the Orthanc plugin
# (corpus, move_destination, storescp_port).
pytest_plugins = ["tests.peers.util"]

__all__ = ["DCMTK_ENV", "DcmQrScp", "StoreScp", "WlmScp", "dcmtk_tool"]

HOST = "127.0.0.1"

# DCMTK leaves Nagle's algorithm on unless told otherwise; with it on, every
# DIMSE exchange waits ~40 ms for a delayed ACK.
DCMTK_ENV: Mapping[str, str] = {"TCP_NODELAY": "1"}


def _env(nagle: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if not nagle:
        env.update(DCMTK_ENV)
    return env


def dcmtk_tool(
    name: str,
    *args: str | os.PathLike[str],
    timeout: float = 60,
    check: bool = False,
    nagle: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool (echoscu, findscu, movescu, getscu, storescu, ...).

    Runs with ``TCP_NODELAY=1`` unless ``nagle``; output is captured as text.
    It is DCMTK's tool even where pynetdicom's namesake comes first on PATH
    (an activated virtualenv): see :func:`tests.peers.util.dcmtk_binary`.
    Skips the test (fails under CI) when the tool is not installed.
    """
    binary = find_dcmtk(name)
    return subprocess.run(
        [binary, *map(str, args)],
        env=_env(nagle),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=check,
    )


class _DcmtkServer:
    """A DCMTK server process: started by ``start()``, waited for on its port."""

    port: int
    process: PeerProcess | None = None

    def _launch(self, name: str, argv: list[str], timeout: float, **kwargs: Any) -> None:
        self.process = PeerProcess(name, argv, **kwargs)
        try:
            wait_for_port(HOST, self.port, timeout, process=self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StoreScp(_DcmtkServer):
    """DCMTK storescp writing every instance it receives into ``directory``.

    It accepts any SOP class (``-pm``) in every transfer syntax it knows
    (``+xa``), as one process handling one association at a time.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ae_title: str = "STORESCP",
        port: int | None = None,
        nagle: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.ae_title = ae_title
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.node = Node(ae_title, HOST, self.port)
        self.nagle = nagle
        self.workdir = workdir
        self.directory = workdir / "received"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "storescp.log"
        self.extra_args = list(extra_args)
        self.process: PeerProcess | None = None

    def start(self, timeout: float = 30.0) -> StoreScp:
        argv = [
            find_dcmtk("storescp"),
            "--verbose",
            "--aetitle", self.ae_title,
            "--output-directory", str(self.directory),
            "--accept-all",
            "--promiscuous",
            "--disable-host-lookup",
            "--filename-extension", ".dcm",
            *self.extra_args,
            str(self.port),
        ]  # fmt: skip
        self._launch("storescp", argv, timeout, log_path=self.log_path, env=_env(self.nagle))
        return self

    def __enter__(self) -> StoreScp:
        return self.start()

    def received_files(self) -> list[Path]:
        """Files received so far (``<modality>.<SOP Instance UID>.dcm``), sorted by name."""
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def clear(self) -> None:
        """Delete the received files."""
        for path in self.received_files():
            path.unlink()

    def __repr__(self) -> str:
        return f"<StoreScp {self.node} nagle={self.nagle}>"


class DcmQrScp(_DcmtkServer):
    """DCMTK dcmqrscp: a Query/Retrieve SCP (C-FIND, C-MOVE, C-GET, C-STORE).

    One storage area for AE ``DCMQRSCP`` that any calling AE may read and
    write. C-MOVE only sends to AEs listed in the HostTable, which is written
    once at start from ``destinations`` (AE title, host, port). Forks a child
    per association, so it serves several associations at once.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ae_title: str = "DCMQRSCP",
        destinations: Iterable[tuple[str, str, int]] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.ae_title = ae_title
        self.host = HOST
        self.port = free_port()
        self.node = Node(ae_title, HOST, self.port)
        self.workdir = workdir
        self.directory = workdir / "storage" / ae_title
        self.directory.mkdir(parents=True, exist_ok=True)
        self.destinations = list(destinations)
        self.config_path = workdir / "dcmqrscp.cfg"
        self.log_path = workdir / "dcmqrscp.log"
        self.extra_args = list(extra_args)
        self.process: PeerProcess | None = None

    def config_text(self) -> str:
        hosts = "\n".join(
            f"dest{i} = ({aet}, {host}, {port})"
            for i, (aet, host, port) in enumerate(self.destinations)
        )
        # Quota: (max studies, max bytes per study); beyond it dcmqrscp deletes
        # the oldest studies, so keep it well above what tests store.
        return (
            f"NetworkTCPPort  = {self.port}\n"
            "MaxPDUSize      = 65536\n"
            "MaxAssociations = 32\n"
            "\n"
            "HostTable BEGIN\n"
            f"{hosts}\n"
            "HostTable END\n"
            "\n"
            "VendorTable BEGIN\n"
            "VendorTable END\n"
            "\n"
            "AETable BEGIN\n"
            f"{self.ae_title} {self.directory} RW (10000, 1024mb) ANY\n"
            "AETable END\n"
        )

    def start(self, timeout: float = 30.0) -> DcmQrScp:
        self.config_path.write_text(self.config_text())
        argv = [
            find_dcmtk("dcmqrscp"),
            "--verbose",
            "--config", str(self.config_path),
            "--disable-host-lookup",
            # Answer in the request's character set, falling back to UTF-8
            # (the default fallback, ASCII, would mangle non-ASCII names).
            "--convert-to-utf8",
            *self.extra_args,
        ]  # fmt: skip
        self._launch(
            "dcmqrscp", argv, timeout, log_path=self.log_path, env=_env(), cwd=self.workdir
        )
        return self

    def __enter__(self) -> DcmQrScp:
        return self.start()

    def load(self, paths: Sequence[Path], *, calling_ae: str = "ADNLOAD") -> None:
        """C-STORE ``paths`` into the archive with DCMTK storescu (Nagle off)."""
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            result = dcmtk_tool(
                "storescu",
                "--aetitle", calling_ae,
                "--call", self.ae_title,
                "--required",
                HOST, str(self.port),
                *chunk,
                timeout=300,
            )  # fmt: skip
            errors = [line for line in result.stderr.splitlines() if line[:2] in {"E:", "F:"}]
            if result.returncode != 0 or errors:
                raise RuntimeError(
                    f"storescu into dcmqrscp failed ({result.returncode}):\n{result.stderr[-3000:]}"
                )

    def stored_files(self) -> list[Path]:
        """The instances in the storage area (not the index)."""
        return sorted(p for p in self.directory.iterdir() if p.is_file() and p.name != "index.dat")

    def __repr__(self) -> str:
        return f"<DcmQrScp {self.node} destinations={self.destinations}>"


class WlmScp(_DcmtkServer):
    """DCMTK wlmscpfs: a Modality Worklist SCP answering from worklist files.

    It serves the files in ``<directory>/<AE title>/`` (``*.wl``, beside the
    ``lockfile`` wlmscpfs requires), read anew for every C-FIND: :meth:`write`
    replaces them.  One process (``--single-process``), files missing a
    required attribute are rejected as wlmscpfs does by default.
    """

    def __init__(self, workdir: Path, *, ae_title: str = "WLMSCP", port: int | None = None) -> None:
        self.ae_title = ae_title
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.node = Node(ae_title, HOST, self.port)
        self.workdir = workdir
        self.directory = workdir / "worklists"
        (self.directory / ae_title).mkdir(parents=True, exist_ok=True)
        (self.directory / ae_title / "lockfile").touch()
        self.log_path = workdir / "wlmscpfs.log"
        self.process: PeerProcess | None = None

    def start(self, timeout: float = 30.0) -> WlmScp:
        argv = [
            find_dcmtk("wlmscpfs"),
            "--verbose",
            "--single-process",
            "--data-files-path", str(self.directory),
            "--disable-host-lookup",
            str(self.port),
        ]  # fmt: skip
        self._launch("wlmscpfs", argv, timeout, log_path=self.log_path, env=_env())
        return self

    def __enter__(self) -> WlmScp:
        return self.start()

    def write(self, items: Iterable[Dataset]) -> list[Path]:
        """Replace the worklist with ``items`` (one ``.wl`` file each, Part 10)."""
        folder = self.directory / self.ae_title
        for old in folder.glob("*.wl"):
            old.unlink()
        paths = []
        for i, item in enumerate(items):
            ds = Dataset()
            ds.update(item)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            path = folder / f"item{i:03d}.wl"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths

    def __repr__(self) -> str:
        return f"<WlmScp {self.node}>"


@pytest.fixture(scope="session")
def wlmscpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WlmScp]:
    """wlmscpfs as ``WLMSCP`` on a free port, Nagle off, with an empty worklist."""
    with WlmScp(tmp_path_factory.mktemp("wlmscpfs")) as scp:
        yield scp


@pytest.fixture(scope="session")
def storescp(tmp_path_factory: pytest.TempPathFactory, storescp_port: int) -> Iterator[StoreScp]:
    """storescp as ``STORESCP`` on ``storescp_port``, Nagle off."""
    with StoreScp(tmp_path_factory.mktemp("storescp"), port=storescp_port) as scp:
        yield scp


@pytest.fixture(scope="session")
def storescp_nagle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    """storescp as ``STORESCP`` on its own free port, Nagle on (no TCP_NODELAY)."""
    with StoreScp(tmp_path_factory.mktemp("storescp-nagle"), nagle=True) as scp:
        yield scp


@pytest.fixture(scope="session")
def dcmqrscp_destinations(move_destination: Node, storescp_port: int) -> list[tuple[str, str, int]]:
    """C-MOVE destinations dcmqrscp knows: ``ADNMOVE`` and ``STORESCP``.

    Override this fixture (session scope) to add more; they must be known
    before dcmqrscp starts.
    """
    return [
        (move_destination.ae_title, move_destination.host, move_destination.port),
        ("STORESCP", HOST, storescp_port),
    ]


@pytest.fixture(scope="session")
def dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory,
    dcmqrscp_destinations: list[tuple[str, str, int]],
) -> Iterator[DcmQrScp]:
    """dcmqrscp as ``DCMQRSCP`` on a free port, Nagle off; empty at first."""
    with DcmQrScp(tmp_path_factory.mktemp("dcmqrscp"), destinations=dcmqrscp_destinations) as scp:
        yield scp


@pytest.fixture(scope="session")
def dcmqrscp_loaded(
    dcmqrscp: DcmQrScp, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> DcmQrScp:
    """``dcmqrscp`` holding ``corpus`` (sent once with storescu)."""
    files = write_files(tmp_path_factory.mktemp("dcmqrscp-corpus"), corpus.datasets)
    dcmqrscp.load(files)
    return dcmqrscp
