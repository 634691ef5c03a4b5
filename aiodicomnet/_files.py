"""The one atomic file write: a temporary file in the target's directory, then a rename.

A reader of the final name sees the old file or the new one, never half of one;
a write that fails (disk full, an exception in ``write``, cancellation) leaves
no temporary file behind. Used by the storage policies, the Archive's import
and the configuration file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def atomic_write(
    final: Path,
    write: Callable[[BinaryIO], None],
    *,
    fsync: bool = False,
    permissions: int | None = None,
    commit: Callable[[Path, Path], None] | None = None,
) -> None:
    """Write ``final`` through a hidden temporary file in its directory, then rename.

    Args:
        final: the file to (re)place; its parent directories are created.
        write: writes the content to the binary file object it is given.
        fsync: flush the file, and after the rename its directory, to stable
            storage (slower; survives a power loss).
        permissions: ``chmod`` the file to these bits before it gets its name
            (otherwise ``0o666`` less the umask).
        commit: moves the finished temporary file to ``final``; by default
            :func:`os.replace`, which replaces whatever is there. A caller that must not replace
            something passes its own (which raises to refuse: the temporary
            file is then removed).
    """
    directory = final.parent
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = directory / f".{final.name}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(tmp, _FLAGS, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        with open(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if permissions is not None:
            with contextlib.suppress(OSError):
                os.chmod(tmp, permissions)
        (commit or os.replace)(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync and hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
