"""From instances to images and back: series as volumes, masks as DICOM SEG, meshes as DICOM.

Needs the ``imaging`` extra (``pip install 'aiodicomnet[imaging]'``: numpy,
highdicom, decoding plugins, numpy-stl, SimpleITK). Importing this package
does not import them: each name is loaded on first use, and a missing
package raises :class:`~aiodicomnet.imaging.errors.MissingExtra` naming the
extra to install.

* :func:`load_volume`: find a series on a node, retrieve it into memory,
  check every instance arrived, and return its :class:`Volume`;
* :func:`volume_from` / :func:`load_volume_from`: a volume from instances
  you already have (data sets, files, bytes, received instances);
* :func:`segmentation`: a mask aligned with a volume as a DICOM
  Segmentation (binary or fractional, one or several :class:`Segment`);
* :func:`encapsulated_stl`: a triangle mesh as an Encapsulated STL instance
  in the volume's frame of reference;
* :func:`store_segmentation` / :func:`store_surface`: either, built in a
  worker thread and sent to a node with C-STORE.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import MissingExtra

if TYPE_CHECKING:
    from .load import load_volume
    from .seg import Segment, segmentation
    from .send import store_segmentation, store_surface
    from .surface import encapsulated_stl
    from .volume import SliceRef, Volume, load_volume_from, volume_from

__all__ = [
    "Segment",
    "SliceRef",
    "Volume",
    "encapsulated_stl",
    "load_volume",
    "load_volume_from",
    "segmentation",
    "store_segmentation",
    "store_surface",
    "volume_from",
]

_HOME = {
    "load_volume": "load",
    "Segment": "seg",
    "segmentation": "seg",
    "encapsulated_stl": "surface",
    "store_segmentation": "send",
    "store_surface": "send",
    "SliceRef": "volume",
    "Volume": "volume",
    "load_volume_from": "volume",
    "volume_from": "volume",
}

_PIP_NAMES = {"SimpleITK": "SimpleITK", "stl": "numpy-stl"}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{home}")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing.startswith("aiodicomnet") or not missing:
            raise
        raise MissingExtra(
            f"aiodicomnet.imaging.{name}", (_PIP_NAMES.get(missing, missing),)
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value
