"""Receiver processes: several processes on one port, one stream (``StorageServer(workers=N)``).

One Python process receives on one core: pynetdicom's per-PDU work, the
check of each data set and the storage all hold the GIL, so a Storage SCP
that several senders feed at once gains nothing from more threads.  With
``workers=N`` the server starts N receiver processes.  The server keeps the
listening socket and accepts; each new connection goes, in turn, to the
next receiver (its file descriptor sent over a Unix socket, ``SCM_RIGHTS``),
so N senders are spread evenly over N receivers (``SO_REUSEPORT`` would
hash them: 4 senders on 2 processes land 3+1 or 4+0 more often than 2+2).
Each receiver runs the usual request check and associations, checks and stores what it
receives with the server's :class:`~aiodicomnet.storage.Storage` (which must
therefore be picklable: :class:`~aiodicomnet.storage.DiskStorage`,
:class:`~aiodicomnet.storage.MemoryStorage` or a subclass of them), then
hands the :class:`~aiodicomnet.storage.ReceivedInstance` to the server
process and waits for its answer before it answers the C-STORE:

* the server delivers it as if it had received it itself (its ``_deliver``:
  hooks, subscriptions, the main stream, waiting while the stream is full),
  so backpressure and "nothing acknowledged that is not delivered" hold
  across processes;
* a refusal there (server closing, a hook failing) is a failure status to
  the sender and the stored instance is discarded by the receiver, as in
  one process.

A receiver that dies takes its own associations with it (their senders see
the connection drop); the kernel sends new connections to the others, and
the server logs the loss and lists it in
:attr:`ReceiverPool.lost` (``StorageServer.lost_workers``).

Each receiver is a new interpreter (``python -c``, so the application's
``__main__`` is never imported again, as multiprocessing's spawn would),
linked to the server by two socket pairs: one for messages (framed by
``multiprocessing.connection``; the first is the :class:`ReceiverSpec`), one
for the connections handed over.  Messages:
receiver -> server ``("ready", port)``, ``("deliver", id, instance)``,
``("stopped", None)``; server -> receiver ``("done", id)``,
``("refused", id, resource_error, message)``, ``("stop", grace)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext

from ..storage import DeliveryRefused, ReceivedInstance, Storage
from ..timeouts import Timeouts
from . import incoming
from .acceptor import Acceptor
from .incoming import handle_store
from .patches import CONN_OPEN_HANDLER

__all__ = ["HANDOFF", "ReceiverPool", "ReceiverSpec", "receiver_main"]

LOGGER = logging.getLogger("aiodicomnet.server.workers")

#: Whether accepted connections can be handed to another process here (Unix).
HANDOFF = hasattr(socket, "send_fds") and os.name == "posix"

#: How long a receiver may take to start (a new interpreter importing pydicom
#: and pynetdicom, then listening).
START_TIMEOUT = 60.0

#: How long a receiver may take beyond the grace period to stop (its aborts are bounded).
_STOP_BOUND = 5.0

#: Association IDs of receiver ``i`` start at ``(i + 1) * ASSOCIATION_ID_STRIDE``,
#: so they stay unique across the server's processes.
ASSOCIATION_ID_STRIDE = 1_000_000_000


@dataclass(frozen=True)
class ReceiverSpec:
    """What a receiver process needs to listen as the server does."""

    index: int
    ae_title: str
    host: str
    port: int
    storage: Storage
    contexts: list[PresentationContext]
    allowed_calling_aets: list[str] | None
    check_called_aet: bool
    max_associations: int
    max_pdu: int
    timeouts: Timeouts


def make_acceptor_ae(
    ae_title: str,
    *,
    max_associations: int,
    max_pdu: int,
    timeouts: Timeouts,
    check_called_aet: bool,
    allowed_calling_aets: Sequence[str] | None,
    ae_class: type[AE] = AE,
) -> AE:
    """An AE configured as the server's (limits, timeouts, AE title checks)."""
    ae = ae_class(ae_title)
    ae.maximum_associations = max_associations
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    ae.require_called_aet = check_called_aet
    ae.require_calling_aet = list(allowed_calling_aets or [])
    return ae


# -- the receiver process ---------------------------------------------------------------


class _Reply:
    __slots__ = ("event", "refusal")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.refusal: tuple[bool, str] | None = None


class _ServerLink:
    """The receiver's end of its pipe: deliveries out, answers and the stop command in."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, _Reply] = {}
        self._ids = itertools.count(1)
        self._lost = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def deliver(self, instance: ReceivedInstance) -> None:
        """Hand ``instance`` to the server and wait for it to be delivered (association thread).

        Raises:
            DeliveryRefused: the server refused it for lack of resources, is
                closing, or is gone.
            RuntimeError: a hook of the server failed.
        """
        reply = _Reply()
        with self._lock:
            if self._lost:
                raise DeliveryRefused("the server process is gone")
            msg_id = next(self._ids)
            self._pending[msg_id] = reply
        try:
            self.send(("deliver", msg_id, instance))
        except (OSError, ValueError) as exc:
            with self._lock:
                self._pending.pop(msg_id, None)
            raise DeliveryRefused(f"the server process is gone: {exc}") from exc
        reply.event.wait()
        if reply.refusal is not None:
            resource, message = reply.refusal
            raise DeliveryRefused(message) if resource else RuntimeError(message)

    def serve(self, on_stop: Callable[[float], None]) -> None:
        """Read answers until the server closes the pipe (main thread)."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "stop":
                threading.Thread(target=on_stop, args=(message[1],), daemon=True).start()
                continue
            with self._lock:
                reply = self._pending.pop(message[1], None)
            if reply is None:
                continue
            if kind == "refused":
                reply.refusal = (bool(message[2]), str(message[3]))
            reply.event.set()
        with self._lock:
            self._lost = True
            pending, self._pending = self._pending, {}
        for reply in pending.values():
            reply.refusal = (True, "the server process is gone")
            reply.event.set()


def receiver_main(spec: ReceiverSpec, conn: Connection, handoff: socket.socket) -> None:
    """A receiver process: take the connections handed over until told to stop."""
    logging.basicConfig(level=logging.WARNING, format=f"receiver {spec.index}: %(message)s")
    incoming.number_associations_from((spec.index + 1) * ASSOCIATION_ID_STRIDE)
    storage = spec.storage.bind()
    link = _ServerLink(conn)

    def on_c_store(event: evt.Event) -> Any:
        return handle_store(event, storage, link.deliver, logger=LOGGER)

    ae = make_acceptor_ae(
        spec.ae_title,
        max_associations=spec.max_associations,
        max_pdu=spec.max_pdu,
        timeouts=spec.timeouts,
        check_called_aet=spec.check_called_aet,
        allowed_calling_aets=spec.allowed_calling_aets,
    )
    acceptor = Acceptor(
        ae,
        (spec.host, spec.port),
        spec.contexts,
        [CONN_OPEN_HANDLER, (evt.EVT_C_STORE, on_c_store)],
        name=f"aiodicomnet-receiver-{spec.index}",
        handoff=handoff,
    )
    acceptor.start()

    def stop(grace: float) -> None:
        acceptor.stop()
        acceptor.finish(time.monotonic() + grace, grace)
        with contextlib.suppress(OSError, ValueError):
            link.send(("stopped", None))

    link.send(("ready", acceptor.port))
    link.serve(stop)
    acceptor.stop()  # the server is gone without a stop: end at once
    acceptor.finish(time.monotonic(), 0.0)


# -- the server's side -------------------------------------------------------------------


@dataclass
class _Receiver:
    index: int
    process: subprocess.Popen[bytes]
    conn: Connection
    handoff: socket.socket
    thread: threading.Thread | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    dead: bool = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)


class ReceiverPool:
    """N receiver processes behind one listening socket, delivering to ``deliver`` here.

    The same face as :class:`~.acceptor.Acceptor` for the server (``port``,
    ``stop``, ``finish``, ``associations``).  Start it in a thread (it waits
    for the processes to be ready).

    Args:
        spec: the receivers' configuration (``index`` and ``port`` are set here).
        workers: how many processes.
        deliver: the server's delivery of one instance (hooks, routing to a
            stream; may block for backpressure); called in a thread per receiver.
        is_resource_error: whether an exception ``deliver`` raised is a lack
            of resources (answered 0xA700) rather than a failure (0xC001).
    """

    def __init__(
        self,
        spec: ReceiverSpec,
        workers: int,
        deliver: Callable[[ReceivedInstance], None],
        is_resource_error: Callable[[BaseException], bool],
    ) -> None:
        self._deliver = deliver
        self._is_resource_error = is_resource_error
        #: (receiver index, exit code) of receivers that ended unexpectedly.
        self.lost: list[tuple[int, int | None]] = []
        self._receivers: list[_Receiver] = []
        self._next = 0
        self._stopping = False
        family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
        self._listener = socket.create_server((spec.host, spec.port), family=family, backlog=128)
        self.port = int(self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            for index in range(workers):
                self._receivers.append(
                    _launch(dataclasses.replace(spec, index=index, port=self.port))
                )
            for receiver in self._receivers:
                self._wait_ready(receiver)
        except BaseException:
            self._kill_all()
            self._close_listener()
            raise
        for receiver in self._receivers:
            receiver.thread = threading.Thread(
                target=self._serve,
                args=(receiver,),
                name=f"aiodicomnet-receiver-link-{receiver.index}",
                daemon=True,
            )
            receiver.thread.start()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"aiodicomnet-receivers:{self.port}", daemon=True
        )
        self._accept_thread.start()

    def _wait_ready(self, receiver: _Receiver) -> None:
        if not receiver.conn.poll(START_TIMEOUT):
            raise RuntimeError(f"receiver process {receiver.index} did not start")
        try:
            kind, _ = receiver.conn.recv()
        except (EOFError, OSError) as exc:
            code = receiver.process.poll()
            raise RuntimeError(
                f"receiver process {receiver.index} failed to start (exit code {code})"
            ) from exc
        if kind != "ready":  # pragma: no cover - protocol error
            raise RuntimeError(f"receiver process {receiver.index} said {kind!r}")

    # -- accepting (its own thread) ------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            self._listener.setblocking(False)
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self._listener:
                        self._accept()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again later
                LOGGER.warning("accept failed on port %d: %s", self.port, exc)
                return
            with conn:
                self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        """Send ``conn`` to the next live receiver (round robin); our copy is closed after."""
        for _ in range(len(self._receivers)):
            receiver = self._receivers[self._next % len(self._receivers)]
            self._next += 1
            if receiver.dead:
                continue
            try:
                socket.send_fds(receiver.handoff, [b"\0"], [conn.fileno()])
                return
            except OSError:
                receiver.dead = True  # its end closed: it is gone (reported by _serve)
        LOGGER.error("no receiver process left on port %d: connection closed", self.port)

    # -- deliveries (a thread per receiver) ---------------------------------------------

    def _serve(self, receiver: _Receiver) -> None:
        """Deliver what one receiver hands over, answer it; notice its end."""
        conn = receiver.conn
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "stopped":
                break
            if kind != "deliver":  # pragma: no cover - protocol error
                continue
            _, msg_id, instance = message
            try:
                self._deliver(instance)
                answer: tuple[Any, ...] = ("done", msg_id)
            except BaseException as exc:
                resource = self._is_resource_error(exc)
                answer = ("refused", msg_id, resource, f"{type(exc).__name__}: {exc}")
            try:
                receiver.send(answer)
            except (OSError, ValueError):
                break
        receiver.stopped.set()
        if not receiver.stopping:
            receiver.dead = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                receiver.process.wait(1.0)
            code = receiver.process.returncode
            self.lost.append((receiver.index, code))
            LOGGER.error(
                "receiver process %d ended unexpectedly (exit code %s): its associations "
                "are lost; the other receivers go on",
                receiver.index,
                code,
            )

    # -- stopping (any thread) ------------------------------------------------------------

    def associations(self) -> list[Any]:
        """Associations of this process: none (they live in the receivers)."""
        return []

    def stop(self) -> None:
        """Stop accepting and close the listening socket (the receivers are told in
        :meth:`finish`, with the time left)."""
        self._stopping = True
        for receiver in self._receivers:
            receiver.stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._accept_thread.is_alive():
            self._accept_thread.join()
        self._close_listener()

    def _close_listener(self) -> None:
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def finish(self, deadline: float, grace: float) -> None:
        """Wait (bounded) for the receivers to finish, then end those that did not."""
        for receiver in self._receivers:
            receiver.stopping = True
            with contextlib.suppress(OSError, ValueError):
                receiver.send(("stop", max(0.0, deadline - time.monotonic())))
        for receiver in self._receivers:  # each stops within the grace, then says so
            receiver.stopped.wait(max(0.0, deadline - time.monotonic()) + _STOP_BOUND)
        for receiver in self._receivers:  # a closed pipe ends the receiver process
            with contextlib.suppress(OSError):
                receiver.conn.close()
        for receiver in self._receivers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                receiver.process.wait(_STOP_BOUND)
        self._kill_all()
        for receiver in self._receivers:
            if receiver.thread is not None:
                receiver.thread.join(_STOP_BOUND)

    def _kill_all(self) -> None:
        for receiver in self._receivers:
            receiver.stopping = True
            with contextlib.suppress(OSError):
                receiver.conn.close()
            receiver.handoff.close()
            if receiver.process.poll() is None:
                receiver.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                receiver.process.wait(_STOP_BOUND)


def _launch(spec: ReceiverSpec) -> _Receiver:
    """Start one receiver: a new interpreter running :func:`_child` (never the
    application's ``__main__``, unlike multiprocessing's spawn), linked by two
    socket pairs (messages, connections); its first message is the spec."""
    ours, theirs = socket.socketpair()
    handoff, their_handoff = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = (theirs.fileno(), their_handoff.fileno())
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, *map(str, fds)],
            pass_fds=fds,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        ours.close()
        handoff.close()
        raise
    finally:
        theirs.close()
        their_handoff.close()
    conn = Connection(ours.detach())
    receiver = _Receiver(spec.index, process, conn, handoff)
    try:
        receiver.send(("spec", spec))
    except (OSError, ValueError) as exc:
        process.kill()
        process.wait()
        conn.close()
        handoff.close()
        raise RuntimeError(f"receiver process {spec.index} could not be started: {exc}") from exc
    return receiver


_CHILD_CODE = (
    "import sys; from aiodicomnet._dimse.receivers import _child; "
    "_child(int(sys.argv[1]), int(sys.argv[2]))"
)


def _child(fd: int, handoff_fd: int) -> None:
    """A receiver process's entry point: read the spec, then :func:`receiver_main`."""
    conn = Connection(fd)
    kind, spec = conn.recv()
    if kind != "spec":  # pragma: no cover - protocol error
        raise SystemExit(f"receiver: expected the spec, got {kind!r}")
    receiver_main(spec, conn, socket.socket(fileno=handoff_fd))
