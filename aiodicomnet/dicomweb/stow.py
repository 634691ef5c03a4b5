"""STOW-RS: instances sent as streamed multipart/related bodies, one outcome each.

What :meth:`Client.store <aiodicomnet.Client.store>` accepts (Datasets, files,
directories) is planned as for C-STORE (file meta only), then sent in
batches (at most :data:`BATCH_INSTANCES` instances or :data:`BATCH_BYTES`
bytes per request).  A batch's body is written as it is sent: each file is
read when its turn comes, so memory holds one instance at a time, not the
batch.  The body's length is computed first and sent as Content-Length, as
not every server accepts a chunked upload.

The response (PS3.18 10.5.3) gives each instance's fate:
ReferencedSOPSequence items were stored (with a WarningReason, a warning),
FailedSOPSequence items were not (their FailureReason is the status, as in
C-STORE).  An instance the response does not mention was stored if the
answer is 200 OK, otherwise not (0x0110, processing failure: a server that
cannot parse an instance cannot name it).  Every instance ends in exactly one
:class:`~aiodicomnet.InstanceOutcome`, whatever fails.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from .._dimse.association import SendItem, StoreItem, not_sent
from .._dimse.bridge import run_in_thread
from .._dimse.store_plan import StoreSource, flatten, plan_store
from ..errors import DicomError, HttpError, ProtocolError
from ..results import InstanceOutcome, OnOutcome, OutcomeLog, StoreResult
from .dicom_json import dataset_from_json, parse_json
from .multipart import closing, part_header
from .session import Session

__all__ = ["BATCH_BYTES", "BATCH_INSTANCES", "store"]

#: Instances per STOW-RS request at most.
BATCH_INSTANCES = 100
#: Bytes per STOW-RS request at most (a single larger instance goes alone).
BATCH_BYTES = 256 * 1024 * 1024

_DICOM = "application/dicom"
_PROCESSING_FAILURE = 0x0110


class _Entry:
    """One instance to send: its identity and how to get its Part 10 bytes."""

    __slots__ = ("data", "item", "path", "size", "sop_class", "sop_instance")

    def __init__(self, item: SendItem) -> None:
        self.item = item
        self.path: Path | None = None
        self.data: bytes | None = None
        if isinstance(item, Dataset):
            buffer = io.BytesIO()
            dcmwrite(buffer, item, enforce_file_format=True)
            self.data = buffer.getvalue()
            self.size = len(self.data)
            self.sop_class = str(item.SOPClassUID)
            self.sop_instance = str(item.SOPInstanceUID)
        else:  # its File Meta Information was read when the store was planned
            self.path = item.path
            self.size = item.path.stat().st_size
            self.sop_class = item.sop_class_uid
            self.sop_instance = item.sop_instance_uid

    def read(self) -> bytes:  # in a worker thread
        if self.data is not None:
            return self.data
        assert self.path is not None
        data = self.path.read_bytes()
        if len(data) != self.size:
            raise OSError(f"{self.path} changed size while being sent")
        return data


def _entries_in_thread(items: list[StoreItem]) -> tuple[list[_Entry], list[InstanceOutcome]]:
    plan, rejected = plan_store(items)
    entries: list[_Entry] = []
    for group in plan.values():
        for item in group:
            try:
                entries.append(_Entry(item))
            except Exception as exc:
                rejected.append(not_sent(item, f"cannot be read: {exc}"))
    return entries, rejected


def _batches(entries: list[_Entry]) -> list[list[_Entry]]:
    batches: list[list[_Entry]] = []
    current: list[_Entry] = []
    size = 0
    for entry in entries:
        if current and (len(current) >= BATCH_INSTANCES or size + entry.size > BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.size
    if current:
        batches.append(current)
    return batches


def _outcome(entry: _Entry, status: int | None, error: str | None = None) -> InstanceOutcome:
    return InstanceOutcome(
        entry.sop_instance, entry.sop_class, status, source=entry.path, error=error
    )


async def store(
    session: Session,
    items: StoreSource,
    *,
    concurrency: int = 1,
    on_progress: OnOutcome | None = None,
) -> StoreResult:
    """Send ``items`` with STOW-RS to the session's node; one outcome per instance.

    ``concurrency`` batches are sent at once (each also takes one of the
    node's slots).

    Raises:
        DicomError: the first error that lost a whole batch (no connection,
            an HTTP error status, a timeout); its ``partial`` holds the
            :class:`StoreResult` with an outcome for every instance.
    """
    if concurrency < 1:
        raise ValueError(f"associations must be at least 1, not {concurrency}")
    entries, rejected = await run_in_thread(_entries_in_thread, flatten(items))
    log = OutcomeLog(on_progress)
    record, errors = log.record, log.errors
    for outcome in rejected:
        record(outcome)
    batches = _batches(entries)
    limiter = anyio.CapacityLimiter(concurrency)

    async def send(batch: list[_Entry]) -> None:
        async with limiter:
            if errors:  # an earlier batch failed: do not go on sending
                for entry in batch:
                    record(_outcome(entry, None, f"not sent: {errors[0].message}"))
                return
            try:
                outcomes = await _send_batch(session, batch)
            except DicomError as exc:
                errors.append(exc)
                for entry in batch:
                    record(_outcome(entry, None, f"sent, no STOW-RS answer: {exc.message}"))
                return
            for outcome in outcomes:
                record(outcome)

    async with anyio.create_task_group() as tg:
        for batch in batches:
            tg.start_soon(send, batch)
    return log.finish()


async def _send_batch(session: Session, batch: list[_Entry]) -> list[InstanceOutcome]:
    node = session.node
    url = f"{node.service_url('stow')}/studies"
    boundary = f"adn-{secrets.token_hex(16)}".encode()
    length = sum(len(part_header(boundary, _DICOM, first=i == 0)) for i in range(len(batch)))
    length += sum(entry.size for entry in batch) + len(closing(boundary))

    async def body() -> AsyncIterator[bytes]:
        for i, entry in enumerate(batch):
            yield part_header(boundary, _DICOM, first=i == 0)
            yield await run_in_thread(entry.read)
        yield closing(boundary)

    headers = {
        "Content-Type": f'multipart/related; type="{_DICOM}"; boundary={boundary.decode()}',
        "Content-Length": str(length),
        "Accept": "application/dicom+json",
    }
    try:
        response, answer = await session.request(
            "POST", url, headers=headers, body=body, keep=(400, 409)
        )
    except OSError as exc:  # a file that could not be read midway
        raise ProtocolError(f"STOW-RS {url}: {exc}", node=node) from exc
    what = f"STOW-RS {url}"
    if response.status_code in (400, 409) and not answer.strip():
        raise HttpError(response.status_code, url, "", node=node)
    try:
        ds = await run_in_thread(_answer, answer, what)  # decoding: not on the loop
    except ProtocolError as exc:
        if response.status_code >= 400:
            raise HttpError(
                response.status_code, url, answer[:300].decode(errors="replace"), node=node
            ) from None
        exc.node = node
        raise
    return _outcomes(batch, ds, response.status_code)


def _answer(body: bytes, what: str) -> Dataset:
    """The STOW-RS response body as a Dataset (in a worker thread)."""
    doc = parse_json(body, what)
    if isinstance(doc, list):  # some servers wrap the one answer in an array
        doc = doc[0] if doc else {}
    return dataset_from_json(doc, what) if doc else Dataset()


def _outcomes(batch: list[_Entry], answer: Dataset, http_status: int) -> list[InstanceOutcome]:
    stored: dict[str, int] = {}
    for item in answer.get("ReferencedSOPSequence", []):
        warning = item.get("WarningReason")
        stored[str(item.get("ReferencedSOPInstanceUID", ""))] = (
            int(warning) if warning not in (None, "") else 0x0000
        )
    failed: dict[str, int] = {}
    for item in answer.get("FailedSOPSequence", []):
        reason = item.get("FailureReason")
        code = int(reason) if reason not in (None, "") else _PROCESSING_FAILURE
        failed[str(item.get("ReferencedSOPInstanceUID", ""))] = code or _PROCESSING_FAILURE
    outcomes = []
    for entry in batch:
        uid = entry.sop_instance
        if uid in failed:
            outcomes.append(_outcome(entry, failed[uid]))
        elif uid in stored:
            outcomes.append(_outcome(entry, stored[uid]))
        elif http_status == 200 and not failed:
            # 200 OK: every instance was stored (PS3.18 10.5.3.1), listed or not.
            outcomes.append(_outcome(entry, 0x0000))
        else:
            # ReferencedSOPSequence lists every instance stored: this one was not
            # (a server that cannot parse an instance cannot name it either).
            outcomes.append(
                _outcome(
                    entry,
                    _PROCESSING_FAILURE,
                    f"HTTP {http_status}: not among the instances the server stored",
                )
            )
    return outcomes
