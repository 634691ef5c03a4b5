"""A PACS for the GUI tests, in a process of its own (as a real PACS would be).

    python -m tests.gui.pacs_process DIRECTORY --destination VIEWER=127.0.0.1:11113

Starts an :class:`~aiodicomnet.archive.Archive` on a free port holding the
sample corpus and a big CT series, then prints one JSON line (its port and
the big series' UIDs) and serves until its standard input is closed. Keeping
the PACS out of the test process keeps its threads from competing with the
GUI thread for the GIL: the GUI tests measure the cost of the client side.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
import anyio.to_thread

from aiodicomnet.archive import Archive
from aiodicomnet.samples import make_corpus, make_series

#: The series a retrieve test pulls: long enough to watch a progress bar move.
BIG_SERIES_SIZE = 120


async def serve(directory: str, destinations: dict[str, tuple[str, int]]) -> None:
    corpus = make_corpus()
    big = make_series(
        BIG_SERIES_SIZE,
        patient_id="PATBIG",
        patient_name="Big^Series",
        study_description="CT CHEST",
        series_description="CT CHEST AXIAL",
        rows=64,
        columns=64,
    )
    async with Archive("PACS", directory, destinations=destinations) as archive:
        await archive.add(corpus.datasets + big)
        ready = {
            "ae_title": archive.ae_title,
            "port": archive.port,
            "instances": await archive.count(),
            "big_study_uid": str(big[0].StudyInstanceUID),
            "big_series_uid": str(big[0].SeriesInstanceUID),
        }
        print(json.dumps(ready), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes it


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--destination", action="append", default=[], help="AE=host:port")
    args = parser.parse_args()
    destinations = {}
    for item in args.destination:
        ae, _, address = item.partition("=")
        host, _, port = address.rpartition(":")
        destinations[ae] = (host, int(port))
    anyio.run(serve, args.directory, destinations)


if __name__ == "__main__":
    main()
