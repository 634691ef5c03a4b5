"""Masks and surfaces back to a node in one call: built in a worker thread, then stored.

Recipes over :class:`~aiodicomnet.Client`, like :func:`~aiodicomnet.imaging.load_volume`::

    seg, result = await store_segmentation(client, pacs, volume, volume.voxels > 300, "bone")
    assert result.ok

Building a Segmentation or an Encapsulated STL is CPU work (highdicom
encodes every frame): it runs in a worker thread of its own, so the event
loop, and a GUI driven from it, stays free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from .._dimse.bridge import run_in_thread
from .seg import Segment, segmentation
from .surface import encapsulated_stl
from .volume import Volume

if TYPE_CHECKING:
    from ..client import Client
    from ..nodes import Node
    from ..results import StoreResult

__all__ = ["store_segmentation", "store_surface"]


async def store_segmentation(
    client: Client,
    node: Node,
    volume: Volume,
    mask: Any,
    segments: Segment | str | Sequence[Segment | str],
    **options: Any,
) -> tuple[Dataset, StoreResult]:
    """Build :func:`~aiodicomnet.imaging.segmentation` in a worker thread and C-STORE it.

    ``options`` go to :func:`~aiodicomnet.imaging.segmentation`. Returns the
    Segmentation and the store result (check ``result.ok``: a refusal by the
    node is reported there, as by :meth:`~aiodicomnet.Client.store`).

    Raises:
        MismatchedImage: the mask does not fit the volume (before anything is sent).
        DicomError: the association failed, as :meth:`~aiodicomnet.Client.store` raises.
    """
    seg = await run_in_thread(
        lambda: segmentation(volume, mask, segments, **options), name="aiodicomnet-seg"
    )
    return seg, await client.store(node, [seg])


async def store_surface(
    client: Client,
    node: Node,
    volume: Volume,
    vertices: Any = None,
    faces: Any = None,
    **options: Any,
) -> tuple[Dataset, StoreResult]:
    """Build :func:`~aiodicomnet.imaging.encapsulated_stl` in a worker thread and C-STORE it.

    ``options`` go to :func:`~aiodicomnet.imaging.encapsulated_stl` (``stl=``,
    ``coordinates=``, ...). Returns the instance and the store result.

    Raises:
        MismatchedImage: a bad mesh (before anything is sent).
        DicomError: the association failed, as :meth:`~aiodicomnet.Client.store` raises.
    """
    ds = await run_in_thread(
        lambda: encapsulated_stl(volume, vertices, faces, **options), name="aiodicomnet-stl"
    )
    return ds, await client.store(node, [ds])
