"""The DICOM JSON Model (PS3.18 F.2) into pydicom Datasets.

pydicom's :meth:`~pydicom.dataset.Dataset.from_json` does the decoding (person
names with their Alphabetic/Ideographic/Phonetic groups, InlineBinary as
base64, every VR); this module adds what a DICOMweb client needs around it:
the body checked to be a JSON array of objects, a malformed one reported as a
:class:`~aiodicomnet.errors.ProtocolError`, and BulkDataURI values kept.

An element sent as a BulkDataURI arrives with an empty value; its URI is in
the dataset's ``bulk_data_uris`` (tag as 8 hex digits -> URI), to fetch if
needed.  Metadata (``/metadata``) of an instance with pixel data is the usual
case.
"""

from __future__ import annotations

import json
from typing import Any

from pydicom.dataset import Dataset

from ..errors import ProtocolError

__all__ = ["datasets_from_json", "parse_json"]


def parse_json(body: bytes, what: str) -> Any:
    """Decode a JSON body (UTF-8); an empty body is an empty list (204-like answers).

    Raises:
        ProtocolError: the body is not JSON.
    """
    if not body.strip():
        return []
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what}: the response is not valid JSON: {exc}") from None


def dataset_from_json(obj: object, what: str) -> Dataset:
    """One DICOM JSON object as a Dataset (see the module documentation).

    Raises:
        ProtocolError: the object is not a DICOM JSON data set.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: expected a DICOM JSON object, not {type(obj).__name__}")
    uris: dict[str, str] = {}

    def keep_uri(tag: str, vr: str, value: str) -> bytes:
        uris[tag.upper()] = value
        return b""

    try:
        ds = Dataset.from_json(obj, bulk_data_uri_handler=keep_uri)
    except Exception as exc:
        raise ProtocolError(f"{what}: malformed DICOM JSON: {exc}") from None
    ds.bulk_data_uris = uris
    return ds


def datasets_from_json(body: bytes, what: str) -> list[Dataset]:
    """A JSON array of DICOM JSON objects (a QIDO-RS or /metadata answer) as Datasets.

    Raises:
        ProtocolError: not JSON, not an array, or an element not a data set.
    """
    doc = parse_json(body, what)
    if not isinstance(doc, list):
        raise ProtocolError(f"{what}: expected a JSON array, not {type(doc).__name__}")
    return [dataset_from_json(obj, what) for obj in doc]
