"""Imports of the packages the ``imaging`` extra brings, failing with :class:`MissingExtra`."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtra

__all__ = ["require"]


def require(module: str, purpose: str, *, package: str | None = None) -> ModuleType:
    """Import ``module``; if it is not installed raise :class:`MissingExtra` naming the extra.

    ``package`` is its pip name when that differs (``SimpleITK``, ``numpy-stl``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(purpose, (package or module,)) from exc
