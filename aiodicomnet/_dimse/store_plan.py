"""A C-STORE of many instances: planned, spread over associations, one outcome each.

Planning runs in a worker thread and reads only the File Meta Information of
files, so neither pixel data nor whole data sets are loaded to plan.  Sending
keeps one promise above all: every instance handed in ends in exactly one
:class:`~aiodicomnet.InstanceOutcome` (stored, refused, or not sent and why),
whatever fails and wherever (negotiation, a lost association, a timeout).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext

from ..errors import DicomError, NegotiationError
from ..nodes import Node
from ..results import InstanceOutcome, OnOutcome, OutcomeLog, StoreResult
from . import contexts as _cx
from .association import Association, SendItem, StoreItem, not_sent
from .bridge import run_in_thread
from .connector import Connector
from .wire import read_file_to_send

__all__ = ["StoreSource", "flatten", "plan_store", "send_all"]

#: What :meth:`Client.store` accepts: items, paths as strings, or an iterable of them.
StoreSource = StoreItem | str | Iterable[StoreItem | str]


def flatten(items: StoreSource) -> list[StoreItem]:
    if isinstance(items, (Dataset, Path, str)):
        items = [items]
    return [Path(i) if isinstance(i, str) else i for i in items]


def plan_store(
    items: list[StoreItem],
) -> tuple[dict[tuple[str, str], list[SendItem]], list[InstanceOutcome]]:
    """Group what to send by (SOP class, transfer syntax); report what cannot be sent.

    Runs in a worker thread: reads only the File Meta Information of files
    (once: the association sends from what is read here).
    """
    plan: dict[tuple[str, str], list[SendItem]] = {}
    rejected: list[InstanceOutcome] = []

    def add(key: tuple[str, str], item: SendItem) -> None:
        plan.setdefault(key, []).append(item)

    for item in items:
        if isinstance(item, Dataset):
            if "SOPClassUID" not in item or "SOPInstanceUID" not in item:
                rejected.append(not_sent(item, "dataset has no SOP Class/Instance UID"))
                continue
            meta = getattr(item, "file_meta", None)
            if meta is None or "TransferSyntaxUID" not in meta:
                item = with_transfer_syntax(item)
            add((str(item.SOPClassUID), str(item.file_meta.TransferSyntaxUID)), item)
            continue
        paths = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        for path in paths:
            try:
                held = read_file_to_send(path)
            except ValueError as exc:
                rejected.append(not_sent(path, str(exc)))
                continue
            add((held.sop_class_uid, held.transfer_syntax), held)
    return plan, rejected


def with_transfer_syntax(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` whose file meta names its transfer syntax."""
    copied = copy.copy(ds)
    meta = FileMetaDataset(getattr(ds, "file_meta", None) or FileMetaDataset())
    implicit = getattr(ds, "original_encoding", (False, True))[0]
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    copied.file_meta = meta
    return copied


async def send_all(
    connector: Connector,
    node: Node,
    items: StoreSource,
    *,
    associations: int,
    on_progress: OnOutcome | None,
) -> StoreResult:
    """Send ``items`` (see :meth:`Client.store <aiodicomnet.Client.store>`).

    Raises:
        DicomError: the first association error or timeout; its ``partial``
            holds the :class:`StoreResult` with an outcome for every instance.
    """
    if associations < 1:
        raise ValueError(f"associations must be at least 1, not {associations}")
    plan, rejected = await run_in_thread(plan_store, flatten(items))
    log = OutcomeLog(on_progress)
    for outcome in rejected:
        log.record(outcome)

    async def send(group: list[PresentationContext], batch: list[SendItem]) -> None:
        try:
            await _send_batch(connector, node, group, batch, log.record)
        except DicomError as exc:
            log.errors.append(exc)

    for group, keys in _cx.store_context_groups(plan.keys()):
        batch = [item for key in keys for item in plan[key]]
        if not batch:
            continue
        n = min(associations, len(batch))
        size = -(-len(batch) // n)
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(send, group, batch[i * size : (i + 1) * size])
    return log.finish()


async def _send_batch(
    connector: Connector,
    node: Node,
    group: list[PresentationContext],
    batch: list[SendItem],
    record: OnOutcome,
) -> None:
    """Send ``batch`` on one association; every item gets exactly one outcome.

    The association yields one outcome per item in order, so when it fails
    the items from ``batch[done]`` on have none yet: they are recorded as not
    stored, the first one as "sent, no response" when it was in flight.  A
    peer that accepts none of the proposed contexts is not an error of the
    whole call: each instance is reported as not sent, with the reason.
    """
    done = 0

    def start(assoc: Association) -> Any:
        return assoc.store(batch)

    try:
        async with aclosing(connector.stream(node, group, start)) as outcomes:
            async for outcome in outcomes:
                record(outcome)
                done += 1
    except NegotiationError as exc:
        for item in batch[done:]:
            record(not_sent(item, f"not sent: {exc.message}"))
    except BaseException as exc:
        reason = exc.message if isinstance(exc, DicomError) else type(exc).__name__
        if done < len(batch) and getattr(exc, "unanswered", False):
            record(not_sent(batch[done], f"sent, but no C-STORE response: {reason}"))
            done += 1
        for item in batch[done:]:
            record(not_sent(item, f"not sent: {reason}"))
        raise
