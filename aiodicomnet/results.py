"""Values that operations return: store outcomes and retrieve progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import status as _status
from .errors import DicomError

__all__ = ["InstanceOutcome", "OnOutcome", "OutcomeLog", "Progress", "StoreResult"]


@dataclass(frozen=True)
class InstanceOutcome:
    """What happened to one instance of a C-STORE.

    Attributes:
        sop_instance_uid: the instance's SOP Instance UID ("" if unreadable).
        sop_class_uid: its SOP Class UID ("" if unreadable).
        status: the DIMSE status the peer answered, or ``None`` if it was never
            sent (unreadable file, no accepted presentation context, association lost).
        source: the file path, or ``None`` for a Dataset.
        error: why it was not sent, when ``status`` is ``None``.
    """

    sop_instance_uid: str
    sop_class_uid: str
    status: int | None
    source: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Success (0x0000) or a warning (the instance was stored)."""
        return self.status is not None and _status.category(self.status) in ("Success", "Warning")

    @property
    def meaning(self) -> str:
        """The status in words (PS3.4 Table B.2-1), or the error."""
        if self.status is None:
            return self.error or "not sent"
        return _status.describe(self.status, "C-STORE")[1]


@dataclass
class StoreResult:
    """The outcome of :meth:`Client.store`: one :class:`InstanceOutcome` per item."""

    outcomes: list[InstanceOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every instance was stored (success or warning)."""
        return all(o.ok for o in self.outcomes)

    @property
    def succeeded(self) -> list[InstanceOutcome]:
        """Instances that were stored."""
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[InstanceOutcome]:
        """Instances that were not stored."""
        return [o for o in self.outcomes if not o.ok]

    def __len__(self) -> int:
        return len(self.outcomes)


#: Called with each :class:`InstanceOutcome` as it is known.
OnOutcome = Callable[[InstanceOutcome], object]


class OutcomeLog:
    """A store in progress, over any transport: its outcomes, each reported as it
    comes, and the errors that lost whole batches.

    :meth:`finish` returns the :class:`StoreResult`, or raises the first error
    with that result as its ``partial`` (an outcome for every instance either way).
    """

    def __init__(self, on_progress: OnOutcome | None = None) -> None:
        self.result = StoreResult([])
        self.errors: list[DicomError] = []
        self._on_progress = on_progress

    def record(self, outcome: InstanceOutcome) -> None:
        self.result.outcomes.append(outcome)
        if self._on_progress is not None:
            self._on_progress(outcome)

    def finish(self) -> StoreResult:
        if self.errors:
            self.errors[0].partial = self.result
            raise self.errors[0]
        return self.result


@dataclass(frozen=True)
class Progress:
    """Sub-operation counts of a C-MOVE or C-GET (PS3.4 C.4.2.1.5 / C.4.3.1.5).

    The final response (``done`` true) carries the final counts and status.

    Attributes:
        remaining, completed, failed, warning: the sub-operation counters
            (``remaining`` is ``None`` when the peer did not send it).
        status: the DIMSE status of this response.
        done: whether this is the final response.
        failed_instances: SOP Instance UIDs the peer listed as failed (final
            response, Failed SOP Instance UID List).
    """

    remaining: int | None
    completed: int
    failed: int
    warning: int
    status: int
    done: bool = False
    failed_instances: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Final and fully successful: status 0x0000, no failed sub-operation."""
        return self.done and self.status == _status.SUCCESS and self.failed == 0

    @property
    def total(self) -> int | None:
        """remaining + completed + failed + warning, when remaining is known."""
        if self.remaining is None:
            return None
        return self.remaining + self.completed + self.failed + self.warning

    @property
    def meaning(self) -> str:
        """The status in words."""
        return _status.describe(self.status, "C-MOVE")[1]
