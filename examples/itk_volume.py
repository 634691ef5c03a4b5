#!/usr/bin/env python3
"""Query a PACS for a series by patient, exam date and description; get it as an image
in memory (never on disk); print its geometry.

The ITK user's question, answered with aiodicomnet::

    python examples/itk_volume.py ORTHANC@pacs.example.org:4242 \\
        --patient-id 123 --study-date 20240115 --series-description "AXIAL*"

retrieves by C-GET (``--move`` for C-MOVE to a Storage SCP of ours on
``--port``, which the PACS must know as ``--ae-title``), builds the volume in
memory and, with SimpleITK installed, hands it to ITK as a ``SimpleITK.Image``.

Try it without a PACS::

    python examples/itk_volume.py --demo

``--demo`` serves a generated CT series from an embedded
:class:`~aiodicomnet.archive.Archive` on a free port and queries that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio
from pydicom.uid import generate_uid

import aiodicomnet as adn
from aiodicomnet.imaging import Volume
from aiodicomnet.samples import make_series

DEMO_DESCRIPTION = "DEMO AXIAL"


def describe(volume: Volume) -> str:
    """The geometry of ``volume``, as lines of text."""
    low, high = volume.voxels.min(), volume.voxels.max()
    lines = [
        f"series      {volume.series_instance_uid}",
        f"voxels      {volume.shape} (z, y, x) {volume.voxels.dtype}, values {low} .. {high}",
        f"spacing     {tuple(round(v, 4) for v in volume.spacing)} mm (z, y, x)",
        f"origin      {tuple(round(v, 4) for v in volume.origin)} mm (LPS)",
        "direction   "
        + "; ".join(
            f"{axis}={tuple(round(float(v), 4) for v in row)}"
            for axis, row in zip("zyx", volume.direction, strict=True)
        ),
        f"frame of reference {volume.frame_of_reference_uid or '(none)'}",
    ]
    try:
        image = volume.to_sitk()
    except ImportError:
        lines.append("SimpleITK   not installed (pip install 'aiodicomnet[imaging]')")
    else:
        lines.append(
            f"SimpleITK   size {image.GetSize()} spacing {image.GetSpacing()} "
            f"origin {image.GetOrigin()}"
        )
    return "\n".join(lines)


async def load(args: argparse.Namespace, node: adn.Node) -> Volume:
    keys = {"PatientID": args.patient_id, "StudyDate": args.study_date}
    if args.series_description:
        keys["SeriesDescription"] = args.series_description
    query = adn.Query.series(**{k: v for k, v in keys.items() if v})
    async with adn.Client(args.ae_title) as client:
        if not args.move:
            return await adn.load_volume(client, node, query)
        async with adn.StorageServer(args.ae_title, host="0.0.0.0", port=args.port) as scp:
            return await adn.load_volume(client, node, query, via=scp)


async def demo(args: argparse.Namespace) -> Volume:
    series = make_series(
        40, rows=64, columns=64, patient_id="DEMO01", series_description=DEMO_DESCRIPTION
    )
    frame_of_reference = generate_uid()
    for ds in series:
        ds.FrameOfReferenceUID = frame_of_reference
    with tempfile.TemporaryDirectory(prefix="adn-itk-demo-") as directory:
        async with adn.Archive("DEMOPACS", Path(directory), port=0) as archive:
            await archive.add(series)
            args.patient_id, args.study_date = "DEMO01", series[0].StudyDate
            args.series_description = DEMO_DESCRIPTION
            return await load(args, archive.node)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node", nargs="?", help="the PACS, AET@host:port")
    parser.add_argument("--patient-id", default="")
    parser.add_argument("--study-date", default="", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    parser.add_argument("--series-description", default="", help="wildcards * and ? allowed")
    parser.add_argument("--ae-title", default="ITKVOLUME", help="our AE title")
    parser.add_argument("--move", action="store_true", help="C-MOVE to our Storage SCP")
    parser.add_argument("--port", type=int, default=11112, help="our Storage SCP's port")
    parser.add_argument("--demo", action="store_true", help="query an embedded demo PACS")
    args = parser.parse_args(argv)
    if not args.demo and not args.node:
        parser.error("give the PACS as AET@host:port, or --demo")
    try:
        if args.demo:
            volume = anyio.run(demo, args)
        else:
            volume = anyio.run(load, args, adn.Node.parse(args.node))
    except adn.DicomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe(volume))
    return 0


if __name__ == "__main__":
    sys.exit(main())
