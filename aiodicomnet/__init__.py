"""aiodicomnet: asyncio-native DICOM networking over pynetdicom.

::

    import aiodicomnet as adn

    pacs = adn.Node("ORTHANC", "pacs.example.org", 4242)
    async with adn.Client("MYAE") as client:
        await client.echo(pacs)
        async for study in client.find(pacs, adn.Query.study(PatientID="123")):
            print(study.StudyInstanceUID)
"""

from __future__ import annotations

from .archive import Archive
from .client import Client, Operation
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
    IncompleteRetrieve,
    NegotiationError,
    QueryError,
    StatusError,
    StorageError,
)
from .nodes import Node, validate_ae_title
from .pooling import PoolConfig
from .query import (
    DateRange,
    DateTimeRange,
    Query,
    SequenceMatch,
    Single,
    TimeRange,
    UIDList,
    Universal,
    Wildcard,
)
from .results import InstanceOutcome, Progress, StoreResult
from .server import StorageServer
from .storage import CallbackStorage, DiskStorage, MemoryStorage, ReceivedInstance, Storage
from .timeouts import Timeouts

__version__ = "0.1.0"

__all__ = [
    "Archive",
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "AssociationTimeout",
    "CallbackStorage",
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "DateRange",
    "DateTimeRange",
    "DicomError",
    "DicomTimeout",
    "DimseTimeout",
    "DiskStorage",
    "IncompleteRetrieve",
    "InstanceOutcome",
    "MemoryStorage",
    "NegotiationError",
    "Node",
    "Operation",
    "PoolConfig",
    "Progress",
    "Query",
    "QueryError",
    "ReceivedInstance",
    "SequenceMatch",
    "Single",
    "StatusError",
    "Storage",
    "StorageError",
    "StorageServer",
    "StoreResult",
    "TimeRange",
    "Timeouts",
    "UIDList",
    "Universal",
    "Wildcard",
    "validate_ae_title",
]
