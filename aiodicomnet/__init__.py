"""aiodicomnet: asyncio-native DICOM networking over pynetdicom."""

from __future__ import annotations

from .errors import (
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    AssociationTimeout,
    ConnectError,
    ConnectTimeout,
    DicomError,
    DicomTimeout,
    DimseTimeout,
    NegotiationError,
    QueryError,
    StatusError,
    StorageError,
)
from .nodes import Node, validate_ae_title
from .timeouts import Timeouts

__version__ = "0.1.0"

__all__ = [
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "AssociationTimeout",
    "ConnectError",
    "ConnectTimeout",
    "DicomError",
    "DicomTimeout",
    "DimseTimeout",
    "NegotiationError",
    "Node",
    "QueryError",
    "StatusError",
    "StorageError",
    "Timeouts",
    "validate_ae_title",
]
