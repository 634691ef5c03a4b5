"""The :class:`Operation` returned by multi-response services (find, move, get, retrieve)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from contextlib import aclosing
from typing import Any, Generic, TypeVar

from .errors import DicomError

__all__ = ["Operation", "as_list", "last"]

T = TypeVar("T")
R = TypeVar("R")


class Operation(Generic[T, R]):
    """A running (or not yet started) multi-response operation.

    * ``async for item in op`` yields items as responses arrive;
    * ``await op`` runs it to the end and returns its result;
    * ``async with op as items:`` closes it deterministically on exit.

    When awaited, an error raised midway carries what had arrived before it
    in its ``partial`` attribute (a list of items).

    The operation starts when first iterated or awaited; an Operation can be
    consumed once.
    """

    def __init__(
        self,
        start: Callable[[], AsyncGenerator[T, None]],
        finish: Callable[[list[T]], R],
    ) -> None:
        self._start = start
        self._finish = finish
        self._gen: AsyncGenerator[T, None] | None = None

    def __aiter__(self) -> AsyncIterator[T]:
        if self._gen is not None:
            raise RuntimeError("this operation is already running; it can be consumed once")
        self._gen = self._start()
        gen = self._gen
        self._gen = _CONSUMED  # do not keep a reference: break must finalize it
        return gen

    async def __aenter__(self) -> AsyncGenerator[T, None]:
        if self._gen is not None:
            raise RuntimeError("this operation is already running; it can be consumed once")
        self._gen = self._start()
        return self._gen

    async def __aexit__(self, *exc_info: object) -> None:
        if self._gen is not None and self._gen is not _CONSUMED:
            await self._gen.aclose()

    async def _run(self) -> R:
        items: list[T] = []
        try:
            async with aclosing(self.__aiter__()) as gen:  # type: ignore[type-var]
                async for item in gen:
                    items.append(item)
        except DicomError as exc:
            # What arrived before the error (for example the instances of an
            # incomplete retrieve) stays reachable.
            if exc.partial is None:
                exc.partial = items
            raise
        return self._finish(items)

    def __await__(self) -> Generator[Any, None, R]:
        return self._run().__await__()


_CONSUMED: Any = object()  # marks an Operation whose generator was handed out


def last(items: list[T]) -> T:
    """The final item (a C-MOVE's final progress)."""
    return items[-1]


def as_list(items: list[T]) -> list[T]:
    """All items."""
    return items
