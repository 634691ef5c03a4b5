"""Nothing the library starts outlives a closed Client, StorageServer or Archive.

Run in a fresh interpreter: the test session's own helpers (anyio's worker
pool, fixtures' threads) would hide the library's leftovers otherwise.  The
library uses threads of its own, always joined, never anyio's shared worker
pool, whose idle threads live until the event loop ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys, threading

    import anyio

    import aiodicomnet as adn
    from aiodicomnet.samples import make_series


    async def main() -> None:
        series = make_series(3)
        async with adn.Archive("ARCH", sys.argv[1]) as archive:
            await archive.add(series)
            async with adn.StorageServer("RECEIVER") as server:
                async with adn.Client("CLIENT") as client:
                    await client.echo(archive.node)
                    await client.find(archive.node, adn.Query.study())
                    await client.store(server.node, series)
                    async for _ in client.find(archive.node, adn.Query.image()):
                        break  # C-CANCEL
                    query = adn.Query.series(
                        StudyInstanceUID=series[0].StudyInstanceUID,
                        SeriesInstanceUID=series[0].SeriesInstanceUID,
                    )
                    got = await client.get(archive.node, query)
                    assert len(got) == 3, got
                    received = [await anext(server) for _ in series]
                    assert len(received) == 3
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print(json.dumps(left))


    anyio.run(main)
    """
)


def test_no_thread_outlives_client_server_and_archive(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "archive")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    left = json.loads(proc.stdout.strip().splitlines()[-1])
    assert left == [], f"threads still running after every block closed: {left}"
