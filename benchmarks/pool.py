"""Association reuse: many small operations, one after the other.

Per run, a worker does ``N`` C-ECHOs, then ``N`` small C-FINDs (STUDY level,
3 matches, a few return keys), one at a time, against one peer:

* aiodicomnet ``Client(pool=PoolConfig())``: ``await client.echo(node)`` and
  ``await client.find(node, query)``; the association opened for the first
  operation is kept and reused by the next ones;
* aiodicomnet ``Client(pool=PoolConfig(reuse=False))`` (no pooling): an association per
  operation;
* raw pynetdicom as its examples write it: ``AE.associate``, then
  ``send_c_echo()`` (``send_c_find()``), then ``release()``, for each
  operation (defaults: Nagle on);
* raw pynetdicom on one association for all ``N``, for reference: the best
  a pynetdicom user gets by keeping the association themselves.

Each phase (echoes, finds) starts with no association open: aiodicomnet's
phases use a new ``Client`` each and are timed from the first call to the
end of the ``async with Client`` block (the pooled association released);
raw pynetdicom's are timed from the first ``associate`` to the last
``release``. The figure is time / N.

Peers: an aiodicomnet ``Archive`` (pynetdicom Q/R SCP with its SQLite
index, in a process of its own) and Orthanc (``TCP_NODELAY=1``), holding the
same 3 studies.
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
    log,
    median,
    run_worker,
    start_archive,
    start_orthanc,
)

#: pooled aiodicomnet must be this many times faster than raw pynetdicom
#: opening an association per operation.
TARGET = 5.0

#: The C-FIND: STUDY level, matching the 3 studies of one patient.
STUDIES = 3
PATIENT_ID = "POOL00"
KEYS = {
    "PatientID": PATIENT_ID,
    "PatientName": "",
    "StudyInstanceUID": "",
    "StudyDate": "",
    "StudyDescription": "",
    "AccessionNumber": "",
}

NAMES = {
    "pooled": "aiodicomnet Client(pool=PoolConfig())",
    "unpooled": "aiodicomnet Client(pool=PoolConfig(reuse=False))",
    "raw": "raw pynetdicom, associate/send/release per operation",
    "raw_one": "raw pynetdicom, one association for all (reference)",
}
OPS = {"echo": "C-ECHO", "find": "C-FIND"}


def name(kind: str, peer: str, op: str | None = None) -> str:
    return f"{NAMES[kind]} [{peer}]" + (f" {OPS[op]}" if op else "")


def run(ws: Workspace, s: Settings) -> Section:
    n = s.pool_ops
    section = Section(
        "pool",
        "Association reuse (many small operations, one at a time)",
        f"Per run: {n} C-ECHOs, then {n} C-FINDs (STUDY level, {STUDIES} matches, "
        f"{len(KEYS) - 1} return keys), one after the other, each phase starting with no "
        "association open; ms per operation = phase time / N (association set-up and "
        "release included). Peers: aiodicomnet's embedded `Archive` (a pynetdicom Q/R SCP "
        "with a SQLite index, in a process of its own) and Orthanc 1.10 (`TCP_NODELAY=1`), "
        "both holding the same 3 small studies.",
        columns=(("lost", "lost responses", "sum"),),
    )
    files = ws.studies("pool", patients=1, studies=STUDIES, series=1, instances=2)
    peers: dict[str, tuple[int, str]] = {}
    archive = None
    orthanc = None
    try:
        archive, archive_port = start_archive(ws, "pool", files)
        peers["Archive"] = (archive_port, "ARCHIVE")
        orthanc = start_orthanc(ws, "pool", files, section)
        if orthanc is not None:
            peers["Orthanc"] = (orthanc.dicom_port, orthanc.ae_title)
        log("pool peers: " + ", ".join(f"{p} on port {port}" for p, (port, _) in peers.items()))

        def worker(kind: str, peer: str) -> dict[str, float]:
            port, called = peers[peer]
            params: dict[str, Any] = {
                "host": HOST, "port": port, "called": called, "n": n, "keys": KEYS,
                "expect": STUDIES,
            }  # fmt: skip
            if kind == "pooled":
                r = run_worker(ws, "pool-adn", timeout=300, pool=True, **params)
            elif kind == "unpooled":
                r = run_worker(ws, "pool-adn", timeout=300, pool=False, **params)
            else:
                r = run_worker(ws, "pool-raw", timeout=300, reuse=kind == "raw_one", **params)
            return {"echo": r["echo"], "find": r["find"], "lost": float(r["lost"])}

        contenders = [
            Contender(name(kind, peer), lambda kind=kind, peer=peer: worker(kind, peer))  # type: ignore[misc]
            for peer in peers
            for kind in NAMES
        ]
        results = interleave(section, s.pool_rounds, contenders)
    finally:
        if orthanc is not None:
            orthanc.stop()
        if archive is not None:
            archive.stop()

    for peer in peers:
        for op in OPS:
            for kind in NAMES:
                fig = section.figure(name(kind, peer, op), "ms per operation")
                fig.values = [v * 1e3 for v in results[name(kind, peer)][op]]
                fig.extra["lost"] = results[name(kind, peer)]["lost"] if op == "echo" else []
    for peer in peers:
        for op in OPS:

            def per_round(a: str, b: str, peer: str = peer, op: str = op) -> list[float]:
                xs, ys = results[name(a, peer)][op], results[name(b, peer)][op]
                return [x / y for x, y in zip(xs, ys, strict=True)]

            faster = per_round("raw", "pooled")
            value = median(faster)
            section.checks.append(
                Check(
                    f"[{peer}] {OPS[op]}: raw pynetdicom new association / aiodicomnet pooled "
                    "(times faster)",
                    value,
                    f">= {TARGET:.0f}x",
                    value >= TARGET,
                    rounds=faster,
                )
            )
            for a, b, label in (
                ("unpooled", "pooled", "aiodicomnet without pooling / pooled (times faster)"),
                ("raw", "unpooled", "raw pynetdicom new association / aiodicomnet without "
                 "pooling"),
                ("pooled", "raw_one", "aiodicomnet pooled / raw pynetdicom one association "
                 "(time ratio)"),
            ):  # fmt: skip
                rounds = per_round(a, b)
                section.checks.append(
                    Check(f"[{peer}] {OPS[op]}: {label}", median(rounds), "", None, rounds=rounds)
                )
    section.notes.append(
        "Lost responses (pynetdicom's reactor race, raw pynetdicom only: aiodicomnet locks "
        "its reactor out) are counted over both phases in the C-ECHO rows; the operation "
        "that lost it is not timed and is done again."
    )
    if "Orthanc" in peers:
        section.notes.append(
            "Raw pynetdicom keeps Nagle's algorithm on: against Orthanc, which does not "
            "acknowledge at once, each C-FIND request (a command PDU, then a data set PDU) "
            "waits for a delayed ACK, about 40 ms. A C-ECHO is a single PDU and does not wait. "
            "The Archive re-arms TCP_QUICKACK after every receive, so it acknowledges at once."
        )
    return section
