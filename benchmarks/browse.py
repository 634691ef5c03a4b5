"""Browse: a PACS browser's patients -> studies -> series tree, concurrent vs sequential.

An aiodicomnet ``Archive`` (in a process of its own) and Orthanc hold S
studies (10 patients) of 4 series of 3 small instances each. Per peer, a
worker builds the tree of ``Query.study()`` (every study), timed from
creating the ``Client`` to the end of its ``async with`` block:

* ``client.browse(node, Query.study())`` with ``PoolConfig(max_per_node=4)``:
  one STUDY C-FIND, then one SERIES C-FIND per study, at most 4 at once, on
  pooled associations;
* the same tree walked one C-FIND at a time (the studies, then each study's
  series, one study after the other; an IMAGE C-FIND per series only where
  the peer does not give Number of Series Related Instances, as ``browse``
  does) with the same client configuration;
* that sequential walk with no pooling (``PoolConfig(reuse=False)``): an
  association per C-FIND, what a plain loop over a non-pooling client does;
* ``browse`` with no pooling: concurrency without reuse (for reference).

Every run returns a digest of its tree (patients, studies, series and their
counts) and how many C-FINDs it sent; per peer, all must be equal.
"""

from __future__ import annotations

from typing import Any

from .common import (
    HOST,
    Check,
    Contender,
    Section,
    Settings,
    Workspace,
    interleave,
    median,
    run_worker,
    start_archive,
    start_orthanc,
)

PATIENTS = 10
SERIES = 4
INSTANCES = 3
MAX_PER_NODE = 4

NAMES = {
    "browse": f"client.browse(), PoolConfig(max_per_node={MAX_PER_NODE})",
    "walk": f"sequential walk, PoolConfig(max_per_node={MAX_PER_NODE})",
    "walk_unpooled": "sequential walk, no pooling",
    "browse_unpooled": f"client.browse(), no pooling (max_per_node={MAX_PER_NODE})",
}


def run(ws: Workspace, s: Settings) -> Section:
    studies = s.browse_studies
    per_patient = -(-studies // PATIENTS)
    files = ws.studies(
        f"browse{studies}",
        patients=PATIENTS,
        studies=per_patient,
        series=SERIES,
        instances=INSTANCES,
    )
    studies = PATIENTS * per_patient
    section = Section(
        "browse",
        "Browse tree (patients -> studies -> series), concurrent vs sequential",
        f"{studies} studies of {PATIENTS} patients, {SERIES} series of {INSTANCES} small "
        "instances each, held by aiodicomnet's `Archive` (a pynetdicom Q/R SCP with a SQLite "
        "index, in a process of its own) and by Orthanc 1.10 (`TCP_NODELAY=1`). Seconds to "
        "build the tree of `Query.study()` (every study): 1 STUDY C-FIND, then 1 SERIES "
        "C-FIND per study (and 1 IMAGE C-FIND per series whose number of instances the peer "
        "does not report), from creating the `Client` to the end of its `async with` block.",
    )
    peers: dict[str, tuple[int, str]] = {}
    archive = None
    orthanc = None
    digests: dict[str, set[str]] = {}
    finds: dict[str, set[int]] = {}
    expected = (studies, studies * SERIES, studies * SERIES * INSTANCES)

    def worker(peer: str, how: str, pool: bool) -> dict[str, float]:
        port, called = peers[peer]
        r: dict[str, Any] = run_worker(
            ws, "browse-adn", timeout=300, host=HOST, port=port, called=called,
            how=how, pool=pool, max_per_node=MAX_PER_NODE,
        )  # fmt: skip
        got = (r["studies"], r["series"], r["instances"])
        if got != expected:
            raise RuntimeError(f"{peer}, {how}: tree of {got} (studies, series, instances); "
                               f"expected {expected}")  # fmt: skip
        digests.setdefault(peer, set()).add(r["digest"])
        finds.setdefault(peer, set()).add(r["finds"])
        return {"seconds": r["seconds"]}

    modes = {
        "browse": ("browse", True),
        "walk": ("walk", True),
        "walk_unpooled": ("walk", False),
        "browse_unpooled": ("browse", False),
    }
    try:
        archive, archive_port = start_archive(ws, "browse", files)
        peers["Archive"] = (archive_port, "ARCHIVE")
        orthanc = start_orthanc(ws, "browse", files, section)
        if orthanc is not None:
            peers["Orthanc"] = (orthanc.dicom_port, orthanc.ae_title)
        contenders = [
            Contender(
                f"{NAMES[key]} [{peer}]",
                lambda peer=peer, how=how, pool=pool: worker(peer, how, pool),  # type: ignore[misc]
            )
            for peer in peers
            for key, (how, pool) in modes.items()
        ]
        results = interleave(section, s.rounds, contenders)
    finally:
        if orthanc is not None:
            orthanc.stop()
        if archive is not None:
            archive.stop()
    for peer, found in digests.items():
        if len(found) != 1 or len(finds[peer]) != 1:
            raise RuntimeError(
                f"{peer}: the runs differ: {len(found)} trees, C-FINDs sent {finds[peer]}"
            )

    for peer in peers:
        seconds = {key: results[f"{label} [{peer}]"]["seconds"] for key, label in NAMES.items()}
        for key, label in NAMES.items():
            section.figure(f"{label} [{peer}]", "s").values = seconds[key]

        def check(a: str, b: str, label: str, seconds: dict[str, list[float]] = seconds,
                  peer: str = peer) -> None:  # fmt: skip
            rounds = [x / y for x, y in zip(seconds[a], seconds[b], strict=True)]
            section.checks.append(Check(f"[{peer}] {label}", median(rounds), "", None,
                                        rounds=rounds))  # fmt: skip

        check("walk", "browse", "sequential walk (pooled) / browse (times faster)")
        check("walk_unpooled", "browse", "sequential walk without pooling / browse (times faster)")
        check("walk_unpooled", "walk", "sequential walk: without pooling / pooled")
        check("browse_unpooled", "browse", "browse: without pooling / pooled")
    same = len({d for found in digests.values() for d in found}) == 1
    section.notes.append(
        f"Every run built the same tree ({studies} studies, {studies * SERIES} series, "
        f"{studies * SERIES * INSTANCES} instances): one digest per peer over all runs"
        + (", and the same for both peers." if same and len(peers) > 1 else ".")
    )
    section.notes.append(
        "C-FINDs per tree: "
        + ", ".join(f"{peer} {', '.join(map(str, sorted(n)))}" for peer, n in finds.items())
        + f" (the studies, one per study: {studies + 1}; more if a peer does not report "
        "Number of Series Related Instances)."
    )
    return section
