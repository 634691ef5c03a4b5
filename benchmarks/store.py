"""Store throughput: C-STORE of a CT series into DCMTK storescp.

Contenders, each sending the same files on one association to the same
storescp (``TCP_NODELAY=1``, writing to tmpfs):

* aiodicomnet ``Client.store(node, paths)``;
* raw pynetdicom, ``send_c_store(path)`` in a loop as its documentation
  writes it (``AE.associate`` defaults: max PDU 16382, Nagle on);
* the same with ``max_pdu=0``, as aiodicomnet asks for;
* the same with ``max_pdu=0`` and ``TCP_NODELAY`` set from an
  ``EVT_CONN_OPEN`` handler: the best a pynetdicom user gets without
  private API, so the ratio against it is aiodicomnet's own overhead;
* DCMTK storescu (``TCP_NODELAY=1``), timed as a whole process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import (
    HOST,
    MB,
    Check,
    Contender,
    Section,
    Settings,
    Workspace,
    count_files,
    empty_dir,
    find_binary,
    interleave,
    median,
    run_tool,
    run_worker,
    start_storescp,
    total_bytes,
)

#: aiodicomnet's throughput against DCMTK storescu's on the same files.
DCMTK_TARGET = 0.5
TARGET = 0.95


def run(ws: Workspace, s: Settings) -> Section:
    files = ws.ct_series(s.store_slices)
    size = total_bytes(files)
    section = Section(
        "store",
        "Store throughput (C-STORE SCU -> DCMTK storescp)",
        f"{len(files)} CT slices, 512x512 16-bit, {size / MB:.0f} MB, Explicit VR Little Endian, "
        "sent on one association to DCMTK storescp (`TCP_NODELAY=1`, default transfer syntax "
        "preferences, writing every file to tmpfs). MB/s = bytes of the files / time from "
        "association request to release.",
    )
    proc, port, received = start_storescp(ws, "store")
    common: dict[str, Any] = {"host": HOST, "port": port, "called": "STORESCP"}
    common["files"] = str(files[0].parent)

    def finish(seconds: float, sent: int | None = None, ok: int | None = None) -> dict[str, float]:
        got = count_files(received)
        empty_dir(received)
        if got != len(files) or (ok is not None and ok != sent):
            raise RuntimeError(f"storescp received {got} of {len(files)} files (ok={ok})")
        return {"mbps": size / MB / seconds}

    def worker(name: str, **params: Any) -> dict[str, float]:
        r = run_worker(ws, name, timeout=300, **common, **params)
        return finish(r["seconds"], r["sent"], r["ok"])

    def storescu() -> dict[str, float]:
        argv = [
            find_binary("storescu"),
            "--aetitle", "STORESCU", "--call", "STORESCP",
            HOST, str(port),
            "--scan-directories", str(Path(common["files"])),
        ]  # fmt: skip
        seconds, _ = run_tool(argv, timeout=300)
        return finish(seconds)

    adn = "aiodicomnet Client.store"
    raw = "raw pynetdicom (defaults: max PDU 16382, Nagle on)"
    raw0 = "raw pynetdicom, max_pdu=0 (as aiodicomnet)"
    raw_nd = "raw pynetdicom, max_pdu=0 + TCP_NODELAY"
    dcmtk = "DCMTK storescu (TCP_NODELAY=1)"
    contenders = [
        Contender(adn, lambda: worker("store-adn")),
        Contender(raw, lambda: worker("store-raw")),
        Contender(raw0, lambda: worker("store-raw", max_pdu=0)),
        Contender(raw_nd, lambda: worker("store-raw", max_pdu=0, nodelay=True)),
        Contender(dcmtk, storescu),
    ]
    try:
        results = interleave(section, s.rounds, contenders, retries=2)
    finally:
        proc.stop()

    for c in contenders:
        fig = section.figure(c.name, "MB/s")
        fig.values = results[c.name]["mbps"]
    mbps = {c.name: results[c.name]["mbps"] for c in contenders}

    def ratio_check(other: str, target: float | None, label: str) -> None:
        per_round = [a / b for a, b in zip(mbps[adn], mbps[other], strict=True)]
        value = median(per_round)
        section.checks.append(
            Check(
                f"aiodicomnet / {label}",
                value,
                f">= {target:.2f}" if target is not None else "",
                None if target is None else value >= target,
                rounds=per_round,
            )
        )

    ratio_check(raw, TARGET, "raw pynetdicom (defaults)")
    ratio_check(raw0, TARGET, "raw pynetdicom, max_pdu=0")
    ratio_check(raw_nd, TARGET, "raw pynetdicom, max_pdu=0 + TCP_NODELAY")
    ratio_check(dcmtk, DCMTK_TARGET, "DCMTK storescu")
    section.notes.append(
        "storescp's maximum PDU is its default, 16384 bytes, so every sender "
        "sends 16 KiB P-DATA PDUs whatever its own max_pdu; max_pdu only sets "
        "what the sender accepts (small C-STORE responses here)."
    )
    return section


def run_parallel(ws: Workspace, s: Settings) -> Section:
    """``Client.store(..., associations=N)`` into a forking storescp: what N buys."""
    files = ws.ct_series(s.store_slices)
    size = total_bytes(files)
    section = Section(
        "store-parallel",
        "Store over several associations (Client.store associations=N)",
        f"The same {len(files)} slices ({size / MB:.0f} MB) sent by `Client.store(node, paths, "
        "associations=N)`, split over N associations at once, to DCMTK storescp with `--fork` "
        "(a process per association, `TCP_NODELAY=1`, writing to tmpfs).",
    )
    proc, port, received = start_storescp(ws, "store-parallel", extra=["--fork"])
    common: dict[str, Any] = {"host": HOST, "port": port, "called": "STORESCP"}
    common["files"] = str(files[0].parent)

    def worker(n: int) -> dict[str, float]:
        r = run_worker(ws, "store-adn", timeout=300, associations=n, **common)
        got = count_files(received)
        empty_dir(received)
        if got != len(files) or r["ok"] != r["sent"]:
            raise RuntimeError(f"storescp received {got} of {len(files)} files (ok={r['ok']})")
        return {"mbps": size / MB / r["seconds"]}

    counts = (1, 2, 4)
    names = {n: f"aiodicomnet Client.store, associations={n}" for n in counts}
    contenders = [Contender(names[n], lambda n=n: worker(n)) for n in counts]  # type: ignore[misc]
    try:
        results = interleave(section, s.rounds, contenders, retries=2)
    finally:
        proc.stop()
    mbps = {n: results[names[n]]["mbps"] for n in counts}
    for n in counts:
        section.figure(names[n], "MB/s").values = mbps[n]
    for n in counts[1:]:
        per_round = [a / b for a, b in zip(mbps[n], mbps[1], strict=True)]
        section.checks.append(
            Check(
                f"associations={n} / associations=1",
                median(per_round),
                "",
                None,
                rounds=per_round,
            )
        )
    section.notes.append(
        "All associations are sent from one Python process and share its GIL: what "
        "several associations win is the overlap of one's waiting (pynetdicom's polling "
        "threads, the peer's work) with another's encoding, not parallel encoding."
    )
    return section
