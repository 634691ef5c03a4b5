"""Volumes from compressed series: files compressed by DCMTK (dcmcjpeg, dcmcjpls,
dcmcrle) and GDCM (gdcmconv), decoded through pydicom's pixel data plugins.

Lossless syntaxes must give back the phantom exactly; lossy ones must stay
close to it, and match SimpleITK (GDCM) reading the very same files. Without
the decoding plugins, the error names the extra to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from aiodicomnet.imaging import volume_from
from tests.data import write_files
from tests.peers.util import dcmtk_binary, missing
from tests.test_imaging_data import phantom_ct, phantom_hu, sitk_series

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (12, 24, 20)


def _tool(name: str) -> str:
    found = dcmtk_binary(name) if name.startswith("dcm") else shutil.which(name)
    if found is None:
        missing(f"{name} is not installed (DCMTK, or Debian libgdcm-tools for gdcmconv)")
    return found


def compress(sources: Sequence[Path], target: Path, tool: str, args: Sequence[str]) -> list[Path]:
    """Each file of ``sources`` through ``tool`` into ``target``."""
    binary = _tool(tool)
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources:
        dst = target / src.name
        argv = [binary, *args, str(src), str(dst)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
        out.append(dst)
    return out


def eight_bit(series: list[Dataset]) -> list[Dataset]:
    """The phantom in 8 bits (what JPEG baseline can hold): HU = 16 * stored - 1024."""
    for ds in series:
        stored = np.frombuffer(ds.PixelData, dtype=np.uint16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.RescaleSlope, ds.RescaleIntercept = 16, -1024
        ds.PixelData = (stored // 16).astype(np.uint8).tobytes()
    return series


# (tool, arguments, transfer syntax it writes, lossless, 8-bit source)
CASES = {
    "jpeg-lossless-sv1": ("dcmcjpeg", ["+e1"], "1.2.840.10008.1.2.4.70", True, False),
    "jpeg-lossless": ("dcmcjpeg", ["+el"], "1.2.840.10008.1.2.4.57", True, False),
    "jpeg-extended": ("dcmcjpeg", ["+ee"], "1.2.840.10008.1.2.4.51", False, False),
    "jpeg-baseline": ("dcmcjpeg", ["+eb"], "1.2.840.10008.1.2.4.50", False, True),
    "jpeg-ls": ("dcmcjpls", [], "1.2.840.10008.1.2.4.80", True, False),
    "rle": ("dcmcrle", [], "1.2.840.10008.1.2.5", True, False),
    "jpeg2000-gdcm": ("gdcmconv", ["--j2k"], "1.2.840.10008.1.2.4.90", True, False),
    "jpeg-ls-gdcm": ("gdcmconv", ["--jpegls"], "1.2.840.10008.1.2.4.80", True, False),
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, list[Path]]:
    """The phantom as uncompressed files, in 12 bits (False) and in 8 bits (True)."""
    base = tmp_path_factory.mktemp("plain")
    return {
        False: write_files(base / "12", phantom_ct()),
        True: write_files(base / "8", eight_bit(phantom_ct())),
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_compressed_series_becomes_the_volume(
    case: str, plain: dict[bool, list[Path]], tmp_path: Path
) -> None:
    tool, args, syntax, lossless, eight = CASES[case]
    files = compress(plain[eight], tmp_path / case, tool, args)
    assert dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    volume = volume_from(files)
    expected = volume_from(plain[eight]).voxels
    if lossless:
        assert np.array_equal(volume.voxels, expected)
        if not eight:
            assert np.array_equal(volume.voxels, phantom_hu(*SHAPE))
    else:
        error = np.abs(volume.voxels.astype(np.float64) - expected)
        step = 16 if eight else 1  # one stored unit in HU
        assert error.mean() < 4 * step, error.mean()
    # SimpleITK's series reader (GDCM's decoders) on the same compressed files.
    voxels, spacing, origin, _ = sitk_series(tmp_path / case)
    if lossless:
        assert np.array_equal(volume.voxels, voxels)
    else:
        # Two JPEG decoders may round a sample differently: within one stored unit.
        step = 16 if eight else 1
        assert np.abs(volume.voxels.astype(np.float64) - voxels).max() <= step
    assert np.allclose(volume.to_sitk().GetSpacing(), spacing, atol=1e-4)
    assert np.allclose(volume.to_sitk().GetOrigin(), origin, atol=1e-4)


def test_without_decoders_the_error_names_the_extra(
    plain: dict[bool, list[Path]], tmp_path: Path
) -> None:
    files = compress(plain[False], tmp_path / "jpeg", "dcmcjpeg", ["+e1"])
    program = textwrap.dedent(
        f"""
        import sys
        for name in ("pylibjpeg", "libjpeg", "openjpeg", "rle", "gdcm", "jpeg_ls", "PIL"):
            sys.modules[name] = None  # as if not installed
        from aiodicomnet.imaging import volume_from
        from aiodicomnet.imaging.errors import MissingExtra
        try:
            volume_from({[str(f) for f in files]!r})
        except MissingExtra as exc:
            assert "aiodicomnet[imaging]" in str(exc), exc
            assert "JPEG Lossless" in str(exc), exc
            print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"
