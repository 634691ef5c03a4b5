"""A real Orthanc server for tests (pytest plugin).

Fixtures:

- ``orthanc``: an Orthanc (session scope), started on the first request; empty
  at start, shared by every test after that.
- ``orthanc_loaded``: the same server holding the generated ``corpus``; uploaded
  once, and again only after a test called :meth:`OrthancServer.clear`.

Orthanc's C-MOVE only sends to AEs listed in its DicomModalities. The server
starts knowing ``ADNMOVE`` (the shared ``move_destination``) and ``STORESCP``
(the ``storescp`` fixture's port); add more at run time with
:meth:`OrthancServer.add_modality`.
"""

from __future__ import annotations

import http.client
import io
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from aiodicomnet import Node
from tests.data import Corpus
from tests.peers.util import PeerProcess, find_binary, free_port, missing, wait_for_port

# util also defines the fixtures shared with the DCMTK plugin
# (corpus, move_destination, storescp_port).
pytest_plugins = ["tests.peers.util"]

__all__ = ["OrthancError", "OrthancServer"]

HOST = "127.0.0.1"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancError(RuntimeError):
    """A REST call to Orthanc failed."""


class OrthancServer:
    """One Orthanc process with its config, storage and index in ``workdir``.

    Args:
        workdir: an empty directory for the config, storage, index and log.
        ae_title: Orthanc's AE title (DicomCheckCalledAet is on).
        modalities: DicomModalities at start, name -> (AET, host, port).
        dicomweb: load the DICOMweb plugin (served under ``/dicom-web/``).
        config: extra configuration entries, overriding the defaults.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ae_title: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        dicomweb: bool = False,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.ae_title = ae_title
        self.host = HOST
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.http_url = f"http://{HOST}:{self.http_port}"
        self.node = Node(ae_title, HOST, self.dicom_port)
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        self.process: PeerProcess | None = None
        plugins = []
        if dicomweb:
            if not DICOMWEB_PLUGIN.exists():
                missing(f"Orthanc DICOMweb plugin not found at {DICOMWEB_PLUGIN}")
            plugins.append(str(DICOMWEB_PLUGIN))
        storage = workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.config: dict[str, Any] = {
            "Name": "aiodicomnet-tests",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "DicomServerEnabled": True,
            "DicomAet": ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowFindWorklist": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": True,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {
                name: [aet, host, port] for name, (aet, host, port) in (modalities or {}).items()
            },
            # Release the associations Orthanc opens (C-MOVE, C-STORE SCU) when
            # done instead of keeping them 5 s for reuse.
            "DicomAssociationCloseDelay": 0,
            # Answers carry UTF-8, so non-Latin-1 names survive.
            "DefaultEncoding": "Utf8",
            "Plugins": plugins,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "SaveJobs": False,
            "SyncStorageArea": False,
            "HttpThreadsCount": 10,
        }
        if config:
            self.config.update(config)

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 30.0) -> OrthancServer:
        binary = find_binary("Orthanc")
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.process = PeerProcess(
            "Orthanc",
            [binary, str(self.config_path)],
            log_path=self.log_path,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        try:
            wait_for_port(HOST, self.http_port, timeout, process=self.process)
            wait_for_port(HOST, self.dicom_port, deadline - time.monotonic(), process=self.process)
            self._wait_for_rest(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_rest(self, deadline: float) -> None:
        while True:
            try:
                self.rest("GET", "/system")
                return
            except (OSError, OrthancError) as exc:
                if time.monotonic() >= deadline:
                    assert self.process is not None
                    raise TimeoutError(
                        f"Orthanc REST API not answering: {exc}\n{self.process.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST ----------------------------------------------------------------

    def rest(
        self,
        method: str,
        path: str,
        body: bytes | Mapping[str, Any] | list[Any] | str | None = None,
        *,
        content_type: str | None = None,
        timeout: float = 60.0,
    ) -> Any:
        """Call the REST API; returns decoded JSON (or bytes for other content)."""
        headers = {}
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
            headers["Content-Type"] = content_type or "application/dicom"
        elif isinstance(body, str):
            data = body.encode()
            headers["Content-Type"] = content_type or "text/plain"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(HOST, self.http_port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            detail = payload[:500].decode(errors="replace")
            raise OrthancError(f"{method} {path} -> HTTP {response.status}: {detail}")
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(payload) if payload else None
        return payload

    def upload(self, items: Iterable[str | Path | Dataset | bytes]) -> list[str]:
        """POST each file, dataset or Part 10 byte string to /instances; Orthanc IDs."""
        ids = []
        for item in items:
            if isinstance(item, Dataset):
                buffer = io.BytesIO()
                dcmwrite(buffer, item, enforce_file_format=True)
                data = buffer.getvalue()
            elif isinstance(item, bytes):
                data = item
            else:
                data = Path(item).read_bytes()
            answer = self.rest("POST", "/instances", data)
            if answer.get("Status") not in {"Success", "AlreadyStored"}:
                raise OrthancError(f"upload refused: {answer}")
            ids.append(answer["ID"])
        return ids

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance)."""
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")
        self._loaded = False

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Make ``aet`` at ``host:port`` known (a C-MOVE destination) without a restart."""
        self.rest("PUT", f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})

    def remove_modality(self, name: str) -> None:
        self.rest("DELETE", f"/modalities/{name}")

    def modalities(self) -> dict[str, Any]:
        result: dict[str, Any] = self.rest("GET", "/modalities?expand")
        return result

    def instances_count(self) -> int:
        return int(self.rest("GET", "/statistics")["CountInstances"])

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of everything stored."""
        return {
            item["MainDicomTags"]["SOPInstanceUID"]
            for item in self.rest("GET", "/instances?expand")
        }

    def instance(self, sop_instance_uid: str) -> Dataset:
        """The stored instance with this SOP Instance UID, read back as a dataset."""
        found = self.rest("POST", "/tools/lookup", sop_instance_uid, content_type="text/plain")
        ids = [item["ID"] for item in found if item["Type"] == "Instance"]
        if not ids:
            raise KeyError(sop_instance_uid)
        return dcmread(io.BytesIO(self.rest("GET", f"/instances/{ids[0]}/file")))

    # -- corpus --------------------------------------------------------------

    _loaded = False

    def ensure_loaded(self, corpus: Corpus) -> None:
        """Upload ``corpus`` unless it is there already (since the last clear())."""
        if not self._loaded:
            self.upload(corpus.datasets)
            self._loaded = True

    def __repr__(self) -> str:
        return f"<OrthancServer {self.node} http={self.http_url}>"


@pytest.fixture(scope="session")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory,
    move_destination: Node,
    storescp_port: int,
) -> Iterator[OrthancServer]:
    """An Orthanc on free ports, started once per session.

    Empty at start, but shared: it holds ``corpus`` once some test used
    ``orthanc_loaded``, and whatever tests stored. Call ``clear()`` to empty it.
    """
    server = OrthancServer(
        tmp_path_factory.mktemp("orthanc"),
        modalities={
            "adnmove": (move_destination.ae_title, move_destination.host, move_destination.port),
            "storescp": ("STORESCP", HOST, storescp_port),
        },
    )
    with server:
        yield server


@pytest.fixture
def orthanc_loaded(orthanc: OrthancServer, corpus: Corpus) -> OrthancServer:
    """``orthanc`` holding ``corpus`` (uploaded on first use and after a clear())."""
    orthanc.ensure_loaded(corpus)
    return orthanc
