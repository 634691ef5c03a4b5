"""One small image in each transfer syntax, made by the tools that own them.

:func:`make_held_files` writes a 64x64 16-bit CT image, then converts it with
DCMTK (``dcmconv``, ``dcmcjpeg``, ``dcmcjpls``, ``dcmcrle``) and GDCM
(``gdcmconv --j2k``): every file is an independent implementation's
encoding, and each has its own SOP Instance UID (and its own series) in one
study, so several can sit in one archive or one Orthanc.

:func:`check_received` compares what a peer received with what was sent:
byte for byte (every element, Pixel Data's encoded bytes included) when the
transfer syntax is the same, pixel for pixel when it was converted.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from aiodicomnet.transfer_syntaxes import NATIVE
from tests.data import make_dataset, uid
from tests.peers.dcmtk import DCMTK_ENV
from tests.peers.util import find_binary

__all__ = ["SYNTAXES", "Held", "check_received", "make_held_files"]

#: name -> (transfer syntax, the tool and its flags that make it from Explicit VR LE).
SYNTAXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "explicit-le": (ExplicitVRLittleEndian, ()),
    "implicit-le": (ImplicitVRLittleEndian, ("dcmconv", "+ti")),
    "explicit-be": (ExplicitVRBigEndian, ("dcmconv", "+tb")),
    "deflate": (DeflatedExplicitVRLittleEndian, ("dcmconv", "+td")),
    "jpeg-baseline": (JPEGBaseline8Bit, ("dcmcjpeg", "+eb")),
    "jpeg-lossless": (JPEGLosslessSV1, ("dcmcjpeg", "+e1")),
    "jpeg-ls": (JPEGLSLossless, ("dcmcjpls", "+el")),
    "rle": (RLELossless, ("dcmcrle",)),
    "jpeg2000": (JPEG2000Lossless, ("gdcmconv", "--j2k")),
}

#: Each syntax under its own image storage SOP class, so that a Q/R SCP holds
#: each class in one syntax only (what it accepts can then follow what it holds).
SOP_CLASSES: dict[str, str] = {
    "explicit-le": "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "implicit-le": "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "explicit-be": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image
    "deflate": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "jpeg-baseline": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "jpeg-lossless": "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "jpeg-ls": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
    "rle": "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "jpeg2000": "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
}


@dataclass
class Held:
    """One file: its syntax, path, SOP Instance UID and decoded pixels."""

    name: str
    transfer_syntax: str
    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    pixels: Any
    #: Bytes of the data set after the File Meta Information (dcmconv leaves a
    #: deflated one at an odd length about half the time).
    data_set_length: int

    @property
    def compressed(self) -> bool:
        return self.transfer_syntax not in NATIVE


def make_held_files(directory: Path, patient_id: str) -> dict[str, Held]:
    """Write one file per entry of :data:`SYNTAXES` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = uid()
    held: dict[str, Held] = {}
    for number, (name, (syntax, tool)) in enumerate(SYNTAXES.items(), start=1):
        ds = make_dataset(
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=uid(),
            series_number=number,
            series_description=name,
            rows=64,
            columns=64,
            seed=number,
        )
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[name]
        source = directory / f"{name}.source.dcm"
        ds.save_as(source, enforce_file_format=True)
        target = directory / f"{name}.dcm"
        if tool:
            binary = find_binary(tool[0])
            subprocess.run(
                [binary, *tool[1:], str(source), str(target)],
                env={**os.environ, **DCMTK_ENV},
                check=True,
                capture_output=True,
                timeout=60,
            )
        else:
            source.rename(target)
        made = dcmread(target)
        with open(target, "rb") as f:
            read_preamble(f, False)
            _read_file_meta_info(f)
            data_set_length = target.stat().st_size - f.tell()
        assert made.file_meta.TransferSyntaxUID == syntax, (name, made.file_meta)
        held[name] = Held(
            name=name,
            transfer_syntax=syntax,
            path=target,
            sop_instance_uid=str(made.SOPInstanceUID),
            series_instance_uid=str(made.SeriesInstanceUID),
            study_instance_uid=study_uid,
            pixels=made.pixel_array,
            data_set_length=data_set_length,
        )
    return held


def check_received(received: Dataset | Path, sent: Held, *, syntax: str | None = None) -> None:
    """Assert that ``received`` is ``sent``, in ``syntax``.

    Without ``syntax``: a compressed file must arrive in its own syntax; a
    native one in any native syntax (which of them is the peers' choice).
    Same syntax: every element equal, Pixel Data's encoded bytes included.
    Another syntax: the received syntax is native and its pixels equal those
    decoded from the sent file.
    """
    got = received if isinstance(received, Dataset) else dcmread(received)
    got_syntax = got.file_meta.TransferSyntaxUID
    if syntax is None and not sent.compressed and got_syntax in NATIVE:
        syntax = got_syntax
    expected = UID(syntax or sent.transfer_syntax)
    assert got_syntax == expected, f"{sent.name}: received {got_syntax.name}, not {expected.name}"
    assert str(got.SOPInstanceUID) == sent.sop_instance_uid
    if got_syntax == sent.transfer_syntax:
        original = dcmread(sent.path)
        assert got.PixelData == original.PixelData, f"{sent.name}: pixel data bytes differ"
        for elem in original:
            assert got[elem.tag].value == elem.value, f"{sent.name}: {elem.tag} differs"
    else:
        assert got_syntax in NATIVE
        assert np.array_equal(got.pixel_array, sent.pixels), f"{sent.name}: pixels differ"
