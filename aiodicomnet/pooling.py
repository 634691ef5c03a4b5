"""How a client reuses associations and bounds its load per node: :class:`PoolConfig`.

Reuse is on by default, with a short idle timeout.  The evidence
(docs/benchmarks.md, "association reuse"): opening an association costs
5-20 ms on loopback and far more across a network, while a C-ECHO or a small
C-FIND costs about a millisecond, so a pooled C-FIND against Orthanc ran
11x faster than one association per operation, and a browse tree 3x.  The
cost of reuse is an idle association held open; the pool keeps it short
(``idle_timeout``, 5 s: long enough for the bursts a browser or a fan-out
makes, short enough that a peer serving one association at a time, such as
DCMTK's ``storescp`` without ``--fork``, is not held for long), and never
lets one of its own idle associations block a new one to the same node (it
releases those first).  ``PoolConfig(reuse=False)`` restores one
association per operation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_POOL", "NO_REUSE", "PoolConfig"]


@dataclass(frozen=True)
class PoolConfig:
    """How a :class:`~aiodicomnet.Client` reuses associations.

    Attributes:
        reuse: keep idle associations for reuse (off: one association per
            operation, released at its end).
        max_idle_per_node: idle associations kept per node.
        idle_timeout: seconds an idle association is kept before it releases itself.
        max_per_node: operations running at once against one node.
    """

    reuse: bool = True
    max_idle_per_node: int = 2
    idle_timeout: float = 5.0
    max_per_node: int = 4

    def __post_init__(self) -> None:
        if self.max_idle_per_node < 0 or self.max_per_node < 1 or self.idle_timeout <= 0:
            raise ValueError(f"invalid pool configuration: {self}")


#: No reuse: every operation opens and releases its own association.
NO_REUSE = PoolConfig(reuse=False)

#: What a :class:`~aiodicomnet.Client` uses when given no ``pool``.
DEFAULT_POOL = PoolConfig()
