"""The one-call scenario: a series on a node, found, retrieved into memory, as a volume.

A recipe over :class:`~aiodicomnet.Client`, like :func:`~aiodicomnet.browse`
(the client never imports it)::

    volume = await adn.load_volume(
        client, pacs, adn.Query.series(PatientID="123", StudyDate="20240115",
                                       SeriesDescription="AXIAL*")
    )

Importing this module needs nothing beyond aiodicomnet itself: numpy is
looked for when :func:`load_volume` starts (its absence raises
:class:`~aiodicomnet.imaging.errors.MissingExtra` naming the extra, before
anything goes on the wire) and imported in the worker thread that builds the
volume, never on the event loop.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from .._dimse.bridge import run_in_thread
from ..errors import IncompleteRetrieve, QueryError
from ..query import Query, QueryLike
from ..storage import MemoryStorage, ReceivedInstance
from .errors import AmbiguousSeries, MissingExtra, SeriesNotFound

if TYPE_CHECKING:
    from ..client import Client
    from ..nodes import Node
    from ..results import Progress
    from ..server import StorageServer
    from .volume import Volume

__all__ = ["load_volume"]


def _check_numpy() -> None:
    """Raise :class:`MissingExtra` now if numpy is missing, without importing it here:
    a first import of numpy takes a few hundred milliseconds, not to be spent on the
    event loop (the volume, and so the import, is made in a worker thread)."""
    try:
        found = importlib.util.find_spec("numpy") is not None
    except (ValueError, ImportError):  # a None entry in sys.modules: blocked
        found = False
    if not found:
        raise MissingExtra("loading a volume", ("numpy",))


def _build(instances: list[ReceivedInstance], dtype: Any, spacing_tolerance: float) -> Volume:
    """The volume, in the worker thread (imports included)."""
    from .volume import volume_from

    return volume_from(instances, dtype=dtype, spacing_tolerance=spacing_tolerance)


def _describe(ds: Dataset) -> str:
    parts = [
        str(ds.get(k, "")) for k in ("SeriesNumber", "Modality", "SeriesDescription") if ds.get(k)
    ]
    return (
        f"{ds.get('SeriesInstanceUID', '?')} ({' '.join(parts)})"
        if parts
        else str(ds.get("SeriesInstanceUID", "?"))
    )


async def load_volume(
    client: Client,
    node: Node,
    query: QueryLike | str,
    *,
    via: StorageServer | str = "get",
    dtype: Any = None,
    spacing_tolerance: float = 0.01,
    on_progress: Callable[[Progress], object] | None = None,
) -> Volume:
    """Find one series on ``node``, retrieve it into memory, and return it as a volume.

    1. C-FIND at SERIES level with ``query``: exactly one series must match;
    2. C-FIND at IMAGE level for that series: the SOP Instance UIDs expected;
    3. retrieve the series (``via="get"``: C-GET into a
       :class:`~aiodicomnet.MemoryStorage`; ``via=server``: C-MOVE to that
       running :class:`~aiodicomnet.StorageServer`, whose storage should be
       a ``MemoryStorage`` for nothing to touch the disk);
    4. check every expected instance arrived, then build the
       :class:`~aiodicomnet.imaging.Volume` in a worker thread.

    Args:
        client: the client to query and retrieve with.
        node: the PACS.
        query: a SERIES-level :class:`~aiodicomnet.Query` (any keys the node
            supports, e.g. PatientID, StudyDate, SeriesDescription), a raw
            identifier Dataset at SERIES level, or a Series Instance UID.
        via: ``"get"`` or a running StorageServer (C-MOVE to it).
        dtype, spacing_tolerance: as for :func:`~aiodicomnet.imaging.volume_from`.
        on_progress: receives each C-GET/C-MOVE response's Progress.

    Raises:
        MissingExtra: numpy (the ``imaging`` extra) is not installed; raised
            before anything is sent.
        QueryError: a query not at SERIES level.
        SeriesNotFound, AmbiguousSeries: no series, or more than one, matches.
        IncompleteRetrieve: instances the IMAGE-level C-FIND listed did not
            arrive (or the peer reported failed sub-operations).
        ImagingError: the instances do not make a volume (see
            :mod:`aiodicomnet.imaging.errors`).
        DicomError: any network failure, as the client raises it.
    """
    _check_numpy()
    if isinstance(query, str):
        query = Query.series(SeriesInstanceUID=query)
    elif isinstance(query, Dataset):
        query = Query.from_dataset(query)
    if query.level != "SERIES":
        raise QueryError(f"load_volume needs a SERIES-level query, not {query.level}")
    found = await client.find(
        node,
        query.returning(
            "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription"
        ),
    )
    found = [ds for ds in found if ds.get("SeriesInstanceUID")]
    if not found:
        raise SeriesNotFound(f"{node}: no series matches {query}")
    if len({str(ds.SeriesInstanceUID) for ds in found}) > 1:
        listed = "; ".join(_describe(ds) for ds in found[:5])
        raise AmbiguousSeries(
            f"{node}: {len(found)} series match {query}: {listed}"
            + (" ..." if len(found) > 5 else ""),
            series=tuple(found),
        )
    series = found[0]
    study_uid, series_uid = str(series.get("StudyInstanceUID", "")), str(series.SeriesInstanceUID)
    keys: dict[str, Any] = {"SeriesInstanceUID": series_uid}
    if study_uid:
        keys["StudyInstanceUID"] = study_uid
    images = await client.find(
        node, Query.image(**keys, defaults=False).returning("SOPInstanceUID", "SOPClassUID")
    )
    expected = {str(ds.SOPInstanceUID) for ds in images if ds.get("SOPInstanceUID")}
    if not expected:
        raise SeriesNotFound(f"{node}: series {series_uid} lists no instances")

    instances: list[ReceivedInstance] = []
    classes = sorted({str(ds.SOPClassUID) for ds in images if ds.get("SOPClassUID")}) or None
    retrieve = client.retrieve(
        node,
        Query.series(**keys, defaults=False),
        via=via,
        storage=MemoryStorage(),
        sop_classes=classes,
        on_progress=on_progress,
    )
    async with retrieve as arriving:
        async for instance in arriving:
            if instance.sop_instance_uid in expected:
                instances.append(instance)
    arrived = {i.sop_instance_uid for i in instances}
    if not expected <= arrived:
        raise IncompleteRetrieve(len(expected), len(expected & arrived), node=node)
    return await run_in_thread(
        _build, instances, dtype, spacing_tolerance, name="aiodicomnet-volume"
    )
