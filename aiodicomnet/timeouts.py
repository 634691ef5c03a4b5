"""The :class:`Timeouts` value: every network timeout in one place."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Timeouts"]


@dataclass(frozen=True)
class Timeouts:
    """Timeouts, in seconds, for one association (``None`` waits forever).

    Attributes:
        connect: TCP connection set-up.
        acse: waiting for A-ASSOCIATE-AC/RJ and A-RELEASE-RP.
        dimse: waiting for each DIMSE response (each pending C-FIND/C-MOVE/C-GET
            response restarts it).
        network: an association with no traffic at all is aborted after this.
        cancel: after a C-CANCEL, how long to wait for the peer's final response
            before aborting the association.
    """

    connect: float | None = 10.0
    acse: float | None = 30.0
    dimse: float | None = 60.0
    network: float | None = 120.0
    cancel: float = 5.0

    def __post_init__(self) -> None:
        for name in ("connect", "acse", "dimse", "network", "cancel"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(
                    f"Timeouts.{name} must be a positive number or None, not {value!r}"
                )

    @classmethod
    def all(cls, seconds: float) -> Timeouts:
        """The same value for every timeout."""
        return cls(seconds, seconds, seconds, seconds, seconds)

    def with_(self, **changes: Any) -> Timeouts:
        """A copy with some timeouts changed."""
        return replace(self, **changes)
