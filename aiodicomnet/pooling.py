"""How a client reuses associations and bounds its load per node: :class:`PoolConfig`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_REUSE", "PoolConfig"]


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
    idle_timeout: float = 30.0
    max_per_node: int = 4

    def __post_init__(self) -> None:
        if self.max_idle_per_node < 0 or self.max_per_node < 1 or self.idle_timeout <= 0:
            raise ValueError(f"invalid pool configuration: {self}")


#: No reuse: every operation opens and releases its own association.
NO_REUSE = PoolConfig(reuse=False)
