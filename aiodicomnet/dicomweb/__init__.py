"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS): the HTTP transport behind :class:`~aiodicomnet.Client`.

A :class:`~aiodicomnet.WebNode` is just another node: ``client.find``,
``client.retrieve``, ``client.store`` and ``client.echo`` run QIDO-RS,
WADO-RS, STOW-RS and a cheap QIDO-RS search on it, with the same results and
errors as over DIMSE.  The modules:

- :mod:`~aiodicomnet.dicomweb.session`: one node's HTTP client (httpx),
  credentials, concurrency limit, and the translation of HTTP failures into
  :mod:`aiodicomnet.errors`;
- :mod:`~aiodicomnet.dicomweb.qido`, :mod:`~aiodicomnet.dicomweb.wado`,
  :mod:`~aiodicomnet.dicomweb.stow`: the three services;
- :mod:`~aiodicomnet.dicomweb.multipart` (streamed multipart/related) and
  :mod:`~aiodicomnet.dicomweb.dicom_json` (the DICOM JSON model).
"""

from __future__ import annotations

from .transport import WebTransport

__all__ = ["WebTransport"]
