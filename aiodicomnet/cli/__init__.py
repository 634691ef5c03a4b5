"""The ``aiodicomnet`` command line (also ``python -m aiodicomnet``).

::

    aiodicomnet [--config PATH] [--json] [--debug] COMMAND ...

    echo NODE...                        C-ECHO
    find NODE [-k KEY=VALUE]... [-L LEVEL] [-P|-S] [--limit N]
    retrieve NODE [-k KEY=VALUE]... [--via move|get] [-o DIR] [--port PORT] [-aem AET]
    store NODE PATH...                  files and directories
    serve [-aet AET] [--port PORT] [-o DIR] [--archive] [--count N]
    nodes list | add NAME AET@HOST:PORT | remove NAME | echo [NAME...] | local
    demo [--dir DIR]                    the tour

A NODE is a name from the configuration file (:mod:`aiodicomnet.config`) or
``AET@host:port``. Network commands also take ``-aet`` (our AE title),
``-aec`` (the called AE title) and ``--timeout``. See ``docs/cli.md`` and
``aiodicomnet --help`` for the exit codes.

:func:`main` runs a command line in-process and returns its exit code; it
never calls :func:`sys.exit` (the console script does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence

import anyio

from ..config import Config
from ..errors import DicomError
from ._commands import COMMANDS, Context, exit_code_for
from ._output import Output
from ._parser import EXIT_CODES, UsageError, build_parser

__all__ = ["EXIT_CODES", "exit_code_for", "main"]

_EXPECTED = (DicomError, UsageError, ValueError, OSError)


@contextlib.contextmanager
def _logging(debug: bool) -> Iterator[None]:
    """Log to stderr while a command runs; put the loggers back as they were after."""
    names = ("aiodicomnet", "pynetdicom") if debug else ("aiodicomnet",)
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], BaseException):
            exc = inner[0]
        else:
            return exc


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


async def _run(ctx: Context) -> int:
    return await COMMANDS[ctx.args.command](ctx)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aiodicomnet`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    debug = bool(getattr(args, "debug", False))
    output = Output(json_mode=bool(getattr(args, "json", False)))
    prog = f"aiodicomnet {args.command}"
    with _logging(debug):
        try:
            config = Config.load(getattr(args, "config", None))
            return anyio.run(_run, Context(args, config, output))
        except KeyboardInterrupt:
            output.error(f"{prog}: interrupted")
            return 130
        except BaseException as raised:
            error = _unwrap(raised)
            if isinstance(error, KeyboardInterrupt):
                output.error(f"{prog}: interrupted")
                return 130
            if not isinstance(error, Exception):
                raise
            if isinstance(error, BrokenPipeError):
                # The reader of our output went away (``| head``): stop quietly.
                _silence_stdout()
                return 141
            if debug or not isinstance(error, _EXPECTED):
                traceback.print_exception(type(raised), raised, raised.__traceback__)
            output.error(f"{prog}: error: {error}")
            return exit_code_for(error)
