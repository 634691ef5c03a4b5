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

from . import mpps, tls
from .archive import Archive
from .browse import BrowseTree, browse
from .client import Client, Operation
from .commitment import CommitFailure, CommitResult
from .errors import (
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    AssociationTimeout,
    AuthError,
    CommitmentTimeout,
    ConnectError,
    ConnectTimeout,
    DicomError,
    DicomTimeout,
    DimseTimeout,
    HttpError,
    IdentityNotConfirmed,
    ImagingError,
    IncompleteRetrieve,
    NegotiationError,
    NotFound,
    ProtocolError,
    QueryError,
    ServerError,
    StatusError,
    StorageError,
    TlsError,
)
from .fanout import FindAllResult, NodeResult, NodeResults, echo_all, find_all
from .identity import IdentityOffer, UserIdentity
from .imaging.load import load_volume
from .nodes import AnyNode, Node, WebNode, validate_ae_title
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
from .storage import (
    CallbackStorage,
    DiskStorage,
    IncomingInstance,
    MemoryStorage,
    ReceivedInstance,
    Storage,
)
from .timeouts import Timeouts
from .worklist import WorklistQuery

__version__ = "0.1.0"

__all__ = [
    "AnyNode",
    "Archive",
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "AssociationTimeout",
    "AuthError",
    "BrowseTree",
    "CallbackStorage",
    "Client",
    "CommitFailure",
    "CommitResult",
    "CommitmentTimeout",
    "ConnectError",
    "ConnectTimeout",
    "DateRange",
    "DateTimeRange",
    "DicomError",
    "DicomTimeout",
    "DimseTimeout",
    "DiskStorage",
    "FindAllResult",
    "HttpError",
    "IdentityNotConfirmed",
    "IdentityOffer",
    "ImagingError",
    "IncomingInstance",
    "IncompleteRetrieve",
    "InstanceOutcome",
    "MemoryStorage",
    "NegotiationError",
    "Node",
    "NodeResult",
    "NodeResults",
    "NotFound",
    "Operation",
    "PoolConfig",
    "Progress",
    "ProtocolError",
    "Query",
    "QueryError",
    "ReceivedInstance",
    "SequenceMatch",
    "ServerError",
    "Single",
    "StatusError",
    "Storage",
    "StorageError",
    "StorageServer",
    "StoreResult",
    "TimeRange",
    "Timeouts",
    "TlsError",
    "UIDList",
    "Universal",
    "UserIdentity",
    "WebNode",
    "Wildcard",
    "WorklistQuery",
    "browse",
    "echo_all",
    "find_all",
    "load_volume",
    "mpps",
    "tls",
    "validate_ae_title",
]
