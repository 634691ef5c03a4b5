"""Planning a C-STORE: what to send, grouped by (SOP class, transfer syntax).

Runs in a worker thread; reads only the File Meta Information of files, so
neither pixel data nor whole data sets are loaded to plan.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..results import InstanceOutcome
from .association import Association, StoreItem

__all__ = ["StoreSource", "flatten", "plan_store"]

#: What :meth:`Client.store` accepts: items, paths as strings, or an iterable of them.
StoreSource = StoreItem | str | Iterable[StoreItem | str]


def flatten(items: StoreSource) -> list[StoreItem]:
    if isinstance(items, (Dataset, Path, str)):
        items = [items]
    return [Path(i) if isinstance(i, str) else i for i in items]


def plan_store(
    items: list[StoreItem],
) -> tuple[dict[tuple[str, str], list[StoreItem]], list[InstanceOutcome]]:
    """Group what to send by (SOP class, transfer syntax); report what cannot be sent.

    Runs in a worker thread: reads only the file meta information of files.
    """
    plan: dict[tuple[str, str], list[StoreItem]] = {}
    rejected: list[InstanceOutcome] = []

    def add(key: tuple[str, str], item: StoreItem) -> None:
        plan.setdefault(key, []).append(item)

    for item in items:
        if isinstance(item, Dataset):
            if "SOPClassUID" not in item or "SOPInstanceUID" not in item:
                rejected.append(
                    Association._not_sent(item, "dataset has no SOP Class/Instance UID")
                )
                continue
            meta = getattr(item, "file_meta", None)
            if meta is None or "TransferSyntaxUID" not in meta:
                item = with_transfer_syntax(item)
            add((str(item.SOPClassUID), str(item.file_meta.TransferSyntaxUID)), item)
            continue
        paths = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        for path in paths:
            try:
                meta = read_file_meta_info(path)
                key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            except Exception as exc:
                rejected.append(Association._not_sent(path, f"not a DICOM Part 10 file: {exc}"))
                continue
            add(key, path)
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
