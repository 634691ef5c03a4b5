"""C-ECHO latency on an open association, against storescp with and without Nagle.

Per peer, on one association opened beforehand (5 warm-up echoes, not timed):

* aiodicomnet: ``await Association.echo()``, timed on the event loop (so it
  includes the hop to the owner thread and back); and ``await client.echo()``,
  the public API taking the pooled association each time;
* raw pynetdicom: ``assoc.send_c_echo()`` in a plain loop (defaults, Nagle on);
* against the Nagle-off peer also raw pynetdicom with ``TCP_NODELAY`` set;
* DCMTK ``echoscu --repeat N`` as a reference: whole process time / N, so it
  includes start-up and association set-up (an upper bound).

Peers: DCMTK storescp with ``TCP_NODELAY=1``, and a second one without it
(Nagle on, as Debian's DCMTK ships): there a requestor that delays its ACKs
waits ~40 ms per exchange; aiodicomnet re-arms ``TCP_QUICKACK`` after every
receive.

Also: the CPU one idle open association costs (process CPU time over 2 s with
a pooled association open, minus the same before it was opened).
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
    find_binary,
    interleave,
    median,
    percentile,
    run_tool,
    run_worker,
    start_storescp,
)

#: aiodicomnet's median may exceed raw pynetdicom's by at most this (seconds).
TARGET_EXTRA = 0.3e-3
#: A pooled ``client.echo()`` (the public API on a kept-open association), median.
TARGET_POOLED_MS = 1.0
#: CPU an idle open association may cost, in percent of one core.
TARGET_IDLE_CPU_PCT = 1.0

OFF, ON = "Nagle off", "Nagle on"
NAMES = {
    "adn": "aiodicomnet Association.echo()",
    "client": "aiodicomnet client.echo() (pooled, public API)",
    "raw": "raw pynetdicom send_c_echo() (Nagle on)",
    "raw_nd": "raw pynetdicom send_c_echo() + TCP_NODELAY",
    "dcmtk": "DCMTK echoscu --repeat (whole process / N)",
}


def key(kind: str, peer: str) -> str:
    return f"{NAMES[kind]} [peer: {peer}]"


def run(ws: Workspace, s: Settings) -> Section:
    section = Section(
        "echo",
        "C-ECHO latency on an open association",
        f"{s.echo_count} C-ECHOs (Nagle-off peer) and {s.echo_nagle_count} (Nagle-on peer) "
        "per run on one open association, after 5 untimed warm-up echoes. Per run: median "
        "and 95th percentile per echo; shown: the median of those over rounds.",
        columns=(("p95", "p95 (ms)", "median"), ("lost", "lost responses", "sum")),
    )
    peers: dict[str, Any] = {}
    try:
        for name, nagle in (("nodelay", False), ("nagle", True)):
            proc, port, _ = start_storescp(ws, f"echo-{name}", nagle=nagle)
            peers[name] = (proc, port)

        def worker(kind: str, peer: str, n: int, **params: Any) -> dict[str, float]:
            port = peers[peer][1]
            r = run_worker(
                ws, kind, timeout=120, host=HOST, port=port, called="STORESCP", n=n, **params
            )
            samples = r["samples"]
            return {
                "median": median(samples),
                "p95": percentile(samples, 95),
                "lost": float(r["lost"]),
            }

        def echoscu(peer: str, n: int) -> dict[str, float]:
            argv = [
                find_binary("echoscu"), "--aetitle", "ECHOSCU", "--call", "STORESCP",
                "--repeat", str(n), HOST, str(peers[peer][1]),
            ]  # fmt: skip
            seconds, _ = run_tool(argv, timeout=120)
            return {"median": seconds / n, "p95": float("nan"), "lost": 0.0}

        n, nn = s.echo_count, s.echo_nagle_count
        contenders = [
            Contender(key("adn", OFF), lambda: worker("echo-adn", "nodelay", n)),
            Contender(key("client", OFF), lambda: worker("echo-client", "nodelay", n)),
            Contender(key("raw", OFF), lambda: worker("echo-raw", "nodelay", n)),
            Contender(key("raw_nd", OFF), lambda: worker("echo-raw", "nodelay", n, nodelay=True)),
            Contender(key("dcmtk", OFF), lambda: echoscu("nodelay", n)),
            Contender(key("adn", ON), lambda: worker("echo-adn", "nagle", nn)),
            Contender(key("raw", ON), lambda: worker("echo-raw", "nagle", nn)),
        ]
        results = interleave(section, s.rounds, contenders)
        idle = [worker("idle-cpu", "nodelay", 0)["median"] for _ in range(max(1, s.rounds // 2))]
    finally:
        for proc, _ in peers.values():
            proc.stop()

    for c in contenders:
        fig = section.figure(c.name, "ms")
        fig.values = [v * 1e3 for v in results[c.name]["median"]]
        fig.extra["p95"] = [v * 1e3 for v in results[c.name]["p95"]]
        fig.extra["lost"] = results[c.name]["lost"]

    for peer in (OFF, ON):
        ours = results[key("adn", peer)]["median"]
        raw = results[key("raw", peer)]["median"]
        diffs = [(a - b) * 1e3 for a, b in zip(ours, raw, strict=True)]
        value = median(diffs)
        section.checks.append(
            Check(
                f"peer {peer}: aiodicomnet median - raw pynetdicom median",
                value,
                f"<= +{TARGET_EXTRA * 1e3:.1f} ms",
                value <= TARGET_EXTRA * 1e3,
                unit="ms",
                rounds=diffs,
            )
        )
        per_round = [a / b for a, b in zip(ours, raw, strict=True)]
        section.checks.append(
            Check(
                f"peer {peer}: aiodicomnet / raw pynetdicom (median latency)",
                median(per_round),
                "",
                None,
                rounds=per_round,
            )
        )
    pooled = [v * 1e3 for v in results[key("client", OFF)]["median"]]
    section.checks.append(
        Check(
            "pooled client.echo() median (public API, kept-open association)",
            median(pooled),
            f"<= {TARGET_POOLED_MS:.1f} ms",
            median(pooled) <= TARGET_POOLED_MS,
            unit="ms",
            rounds=pooled,
        )
    )
    idle_pct = [v * 100 for v in idle]
    section.checks.append(
        Check(
            "CPU of one idle open association (% of a core, over 2 s)",
            median(idle_pct),
            f"<= {TARGET_IDLE_CPU_PCT:.0f}%",
            median(idle_pct) <= TARGET_IDLE_CPU_PCT,
            unit="%",
            rounds=idle_pct,
        )
    )
    ours = results[key("adn", OFF)]["median"]
    tuned = results[key("raw_nd", OFF)]["median"]
    diffs = [(a - b) * 1e3 for a, b in zip(ours, tuned, strict=True)]
    section.checks.append(
        Check(
            "peer Nagle off: aiodicomnet median - raw pynetdicom + TCP_NODELAY median",
            median(diffs),
            "",
            None,
            unit="ms",
            rounds=diffs,
        )
    )
    return section
