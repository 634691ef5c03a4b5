"""In-process peers for fault injection: a scriptable pynetdicom SCP and a silent TCP server.

``ScriptedSCP`` runs a pynetdicom AE server on 127.0.0.1 (free port) whose
C-FIND/C-MOVE/C-GET/C-STORE/C-ECHO (and N-ACTION, N-CREATE, N-SET: Storage
Commitment and MPPS) handlers are plain functions the test
sets; it records what happened (C-CANCEL seen, aborts, releases) in
``threading.Event`` objects tests can wait on.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from aiodicomnet import Node

Handler = Callable[[evt.Event], Any]

QR_MODELS = [
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
]


@dataclass
class ScriptedSCP:
    """A pynetdicom SCP whose service handlers are set per test."""

    ae_title: str = "SCRIPTED"
    port: int = 0
    on_find: Handler | None = None
    on_move: Handler | None = None
    on_get: Handler | None = None
    on_store: Handler | None = None
    on_echo: Handler | None = None
    on_n_action: Handler | None = None
    on_n_create: Handler | None = None
    on_n_set: Handler | None = None
    require_called_aet: bool = True
    cancelled: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    aborted: threading.Event = field(default_factory=threading.Event)
    established: threading.Event = field(default_factory=threading.Event)
    requests: list[Dataset] = field(default_factory=list)
    accepted_count: int = 0
    active: int = 0
    max_active: int = 0
    _count_lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def node(self) -> Node:
        """This peer as a :class:`~aiodicomnet.Node`."""
        return Node(self.ae_title, "127.0.0.1", self.port)

    def reset(self) -> None:
        for e in (self.cancelled, self.released, self.aborted, self.established):
            e.clear()
        self.requests.clear()
        with self._count_lock:
            self.accepted_count = self.max_active = 0
        self.on_find = self.on_move = self.on_get = self.on_store = self.on_echo = None
        self.on_n_action = self.on_n_create = self.on_n_set = None

    def _dispatch(self, name: str) -> Handler:
        def handler(event: evt.Event) -> Any:
            fn = getattr(self, name)
            if fn is None and name.startswith("on_n_"):
                return 0x0110, None  # DIMSE-N: processing failure
            if fn is None:
                return 0xC000 if name in ("on_store", "on_echo") else iter([(0xC000, None)])
            return fn(event)

        return handler

    def _handlers(self) -> list[tuple[Any, Handler]]:
        return [
            (evt.EVT_C_ECHO, lambda e: (self.on_echo or (lambda _e: 0x0000))(e)),
            (evt.EVT_C_FIND, self._dispatch("on_find")),
            (evt.EVT_C_MOVE, self._dispatch("on_move")),
            (evt.EVT_C_GET, self._dispatch("on_get")),
            (evt.EVT_C_STORE, self._dispatch("on_store")),
            (evt.EVT_N_ACTION, self._dispatch("on_n_action")),
            (evt.EVT_N_CREATE, self._dispatch("on_n_create")),
            (evt.EVT_N_SET, self._dispatch("on_n_set")),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_ACCEPTED, self._on_accepted),
        ]

    def _on_accepted(self, event: evt.Event) -> None:
        with self._count_lock:
            self.accepted_count += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._count_lock.notify_all()
        self.established.set()

    def _ended(self) -> None:
        with self._count_lock:
            self.active -= 1
            self._count_lock.notify_all()

    def wait_active(self, n: int, timeout: float = 5.0) -> bool:
        """Block until exactly ``n`` associations are open at the peer."""
        with self._count_lock:
            return self._count_lock.wait_for(lambda: self.active == n, timeout)

    def _on_released(self, event: evt.Event) -> None:
        self._ended()
        self.released.set()

    def _on_aborted(self, event: evt.Event) -> None:
        self._ended()
        self.aborted.set()

    def abort_all(self) -> None:
        """Abort every association the peer has open (as a restarting PACS would)."""
        for assoc in list(self._server.active_associations):
            assoc.abort()

    @contextmanager
    def running(self) -> Iterator[ScriptedSCP]:
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = self.require_called_aet
        ae.add_supported_context(Verification)
        ae.add_supported_context("1.2.840.10008.5.1.4.31")  # Modality Worklist FIND
        ae.add_supported_context(StorageCommitmentPushModel)
        ae.add_supported_context(ModalityPerformedProcedureStep)
        for model in QR_MODELS:
            ae.add_supported_context(model)
        for cx in AllStoragePresentationContexts:
            # scu_role and scp_role: accept C-GET requestors offering to store.
            ae.add_supported_context(
                cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        # C-MOVE sub-operations are sent on an association this AE requests.
        for sop_class in (CTImageStorage, MRImageStorage):
            ae.add_requested_context(sop_class)
        ae.maximum_associations = 20
        # A requestor cancelled between its TCP connect and its A-ASSOCIATE-RQ
        # leaves pynetdicom's acceptor thread waiting for the RQ until this
        # timeout (it does not notice the closed connection in Sta2).
        ae.acse_timeout = 2
        server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=self._handlers()
        )
        self._server = server
        self.port = server.server_address[1]
        try:
            yield self
        finally:
            server.shutdown()


def study_identifiers(n: int) -> list[Dataset]:
    """``n`` STUDY-level C-FIND identifiers, StudyInstanceUID 1.2.3.0, 1.2.3.1, ..."""
    out = []
    for i in range(n):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = f"1.2.3.{i}"
        out.append(ds)
    return out


@pytest.fixture(scope="session")
def scripted_scp() -> Iterator[ScriptedSCP]:
    """One scriptable pynetdicom SCP for the session (see ``peer``)."""
    scp = ScriptedSCP()
    with scp.running():
        yield scp


@pytest.fixture
def peer(scripted_scp: ScriptedSCP) -> Iterator[ScriptedSCP]:
    """The session's ScriptedSCP, with no handlers and cleared records."""
    scripted_scp.reset()
    yield scripted_scp
    scripted_scp.reset()


def wait_cancelled(
    event: evt.Event, until: threading.Event | None = None, limit: float = 30.0
) -> bool:
    """In a handler: wait until the requestor sends C-CANCEL (or ``until`` is set)."""
    step = 0.01
    waited = 0.0
    while waited < limit:
        if event.is_cancelled:
            return True
        if until is not None and until.wait(step):
            return False
        if until is None:
            threading.Event().wait(step)
        waited += step
    return False


class SilentServer:
    """Accepts TCP connections and never says anything (an unresponsive peer)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for c in self._conns:
            c.close()
        self._sock.close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_role(sop_class: str) -> Any:
    return build_role(sop_class, scp_role=True)
