"""The commands of ``aiodicomnet``, as coroutines returning an exit code."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .._dimse.bridge import run_in_thread
from ..archive import Archive
from ..client import Client
from ..config import Config, ConfigError, NodeEntry
from ..errors import DicomError, IncompleteRetrieve
from ..fanout import echo_all
from ..nodes import AnyNode, Node, WebNode
from ..query import LEVELS, UNIQUE_KEYS, Query, Single, UIDList
from ..results import InstanceOutcome, Progress
from ..server import StorageServer
from ..storage import DiskStorage, ReceivedInstance
from ..timeouts import Timeouts
from ..tls import server_context
from ._cohort import cmd_cohort
from ._output import Output, format_size, plural, text_of
from ._parser import UsageError, build_query, resolve_node, tls_options, with_tls

if TYPE_CHECKING:
    from ..archive_web import DicomWebServer

__all__ = ["COMMANDS", "Context", "Partial", "exit_code_for"]


class Partial(DicomError):
    """Some instances were not stored or retrieved (exit code 6)."""


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
    from ..errors import AssociationRejected, ConnectError, QueryError, StatusError

    if isinstance(exc, (UsageError, ConfigError, QueryError)):
        return 2
    if isinstance(exc, ConnectError):  # ConnectTimeout too
        return 3
    if isinstance(exc, AssociationRejected):
        return 4
    if isinstance(exc, StatusError):
        return 5
    if isinstance(exc, (Partial, IncompleteRetrieve)):
        return 6
    if isinstance(exc, DicomError):
        return 7
    return 1


@dataclass
class Context:
    """What every command gets: its arguments, the configuration and the output."""

    args: argparse.Namespace
    config: Config
    output: Output

    @property
    def ae_title(self) -> str:
        """Our AE title: ``-aet``, else the configured one."""
        aet: str | None = getattr(self.args, "aet", None)
        return aet or self.config.local.ae_title

    @property
    def timeouts(self) -> Timeouts:
        seconds: float | None = getattr(self.args, "timeout", None)
        if seconds is None:
            return Timeouts()
        return Timeouts().with_(connect=seconds, acse=seconds, dimse=seconds)

    def node(self, spec: str) -> AnyNode:
        node = resolve_node(spec, self.config, getattr(self.args, "aec", None))
        return with_tls(node, self.args)

    def client(self) -> Client:
        try:
            return Client(self.ae_title, timeouts=self.timeouts)
        except ValueError as exc:
            raise UsageError(f"-aet: {exc}") from None

    def directory(self, given: str | None) -> Path:
        """Where received files go: the option, else the configured storage, else ``.``."""
        if given:
            return Path(given).expanduser()
        return self.config.local.storage or Path.cwd()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# -- echo ------------------------------------------------------------------------------


async def _echo_many(ctx: Context, specs: list[tuple[str, AnyNode]]) -> int:
    """C-ECHO every node at once; one line (or JSON object) per node, in order."""
    async with ctx.client() as client:
        # Each node within its own timeouts (ctx.timeouts), not an overall one.
        results = await echo_all(client, [node for _, node in specs], node_timeout=None)

    code = 0
    for (name, node), result in zip(specs, results, strict=True):
        rtt, exc = result.value, result.error
        record: dict[str, object] = (
            {"node": name, "url": node.url, "ok": exc is None}
            if isinstance(node, WebNode)
            else {
                "node": name,
                "ae_title": node.ae_title,
                "host": node.host,
                "port": node.port,
                "ok": exc is None,
            }
        )
        if exc is None and rtt is not None:
            record["rtt_ms"] = round(rtt * 1000, 3)
            verb = "QIDO-RS" if isinstance(node, WebNode) else "C-ECHO"
            ctx.output.line(f"ok    {node}  {verb} in {_ms(rtt)}")
        elif exc is not None:
            record["error"] = str(exc)
            record["exit_code"] = exit_code_for(exc)
            code = code or exit_code_for(exc)
            if len(specs) == 1 and not ctx.output.json_mode:
                raise exc
            ctx.output.line(f"FAIL  {exc}")
            if ctx.output.json_mode:
                ctx.output.error(f"aiodicomnet: error: {exc}")
        ctx.output.emit(record)
    return code


async def cmd_echo(ctx: Context) -> int:
    specs = [(spec, ctx.node(spec)) for spec in ctx.args.nodes]
    return await _echo_many(ctx, specs)


# -- find ------------------------------------------------------------------------------


def _query(ctx: Context, *, defaults: bool) -> Query:
    return build_query(ctx.args.keys, ctx.args.level, ctx.args.model, defaults=defaults)


async def cmd_find(ctx: Context) -> int:
    node = ctx.node(ctx.args.node)
    query = _query(ctx, defaults=ctx.args.defaults)
    identifier = query.to_dataset()
    keywords = [
        elem.keyword
        for elem in identifier
        if elem.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet")
    ]
    found = []
    count = 0
    limit: int | None = ctx.args.limit
    started = time.perf_counter()
    async with ctx.client() as client, client.find(node, query) as results:
        async for ds in results:
            if ctx.output.json_mode:
                ctx.output.emit(ds.to_json_dict())
            else:
                found.append(ds)
            count += 1
            if limit is not None and count >= limit:
                break
    elapsed = time.perf_counter() - started
    level = query.level.lower()
    ctx.output.datasets(f"{plural(len(found), level)} on {node} ({_ms(elapsed)})", keywords, found)
    return 0


# -- retrieve ---------------------------------------------------------------------------


def _chain(query: Query) -> tuple[str, ...]:
    levels = LEVELS if query.model == "PATIENT_ROOT" else LEVELS[1:]
    return tuple(levels[: levels.index(query.level) + 1])


def _is_direct(query: Query) -> bool:
    """Does the query name what to retrieve by unique keys alone?"""
    unique = {UNIQUE_KEYS[level] for level in _chain(query)}  # type: ignore[index]
    own = query.keys.get(query.unique_key)
    return set(query.keys) <= unique and isinstance(own, (Single, UIDList))


async def _targets(ctx: Context, client: Client, node: AnyNode, query: Query) -> list[Query]:
    """The retrieve requests for a query: itself, or one per C-FIND match."""
    if _is_direct(query):
        return [query]
    unique = [UNIQUE_KEYS[level] for level in _chain(query)]  # type: ignore[index]
    found = await client.find(node, query.returning(*unique))
    targets: list[Query] = []
    seen: set[tuple[str, ...]] = set()
    for ds in found:
        values = tuple(text_of(ds.get(keyword)) for keyword in unique)
        if not values[-1] or values in seen:
            continue
        seen.add(values)
        keys = {k: v for k, v in zip(unique, values, strict=True) if v}
        targets.append(Query(query.level, keys, model=query.model, defaults=False))
    what = plural(len(targets), query.level.lower())
    ctx.output.note(f"{what} on {node} match; retrieving {'it' if len(targets) == 1 else 'them'}")
    return targets


@dataclass
class _Tally:
    received: int = 0
    size: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    offset: int = 0  # sub-operations of the requests already finished

    def finish(self, final: Progress | None) -> None:
        if final is not None:
            self.completed += final.completed
            self.failed += final.failed
            self.warning += final.warning
            self.offset += final.completed + final.failed + final.warning


async def cmd_retrieve(ctx: Context) -> int:
    args = ctx.args
    node = ctx.node(args.node)
    query = _query(ctx, defaults=False)
    out = ctx.output
    tally = _Tally()
    started = time.perf_counter()
    via = "C-MOVE" if args.move_to or args.via == "move" else "C-GET"
    if isinstance(node, WebNode):
        if args.move_to:
            raise UsageError("--move-to: a DICOMweb node retrieves with WADO-RS only")
        via = "WADO-RS"
    directory = ctx.directory(args.output)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(ctx.client())
        targets = await _targets(ctx, client, node, query)
        if not targets:
            out.line(f"nothing on {node} matches")
            return 0
        bar = stack.enter_context(out.bar(f"{via} from {_label(node)}"))
        final: Progress | None = None
        incomplete: list[IncompleteRetrieve] = []

        def on_progress(progress: Progress) -> None:
            nonlocal final
            if progress.done:
                final = progress
            total = progress.total
            if total is not None:
                bar.update(total=tally.offset + total)
            if args.move_to:
                done = progress.completed + progress.failed + progress.warning
                bar.update(completed=tally.offset + done)

        def on_instance(instance: ReceivedInstance) -> None:
            tally.received += 1
            tally.size += instance.size
            bar.update(advance=1, size=instance.size)
            out.emit(
                {
                    "type": "instance",
                    "sop_instance_uid": str(instance.sop_instance_uid),
                    "sop_class_uid": str(instance.sop_class_uid),
                    "study_instance_uid": instance.study_instance_uid,
                    "series_instance_uid": instance.series_instance_uid,
                    "path": str(instance.path) if instance.path else None,
                    "size": instance.size,
                }
            )

        if args.move_to and isinstance(node, Node):
            for target in targets:
                final = None
                async for progress in client.move(node, target, args.move_to):
                    on_progress(progress)
                tally.finish(final)
        else:
            storage = DiskStorage(directory)
            server: StorageServer | None = None
            if via == "C-MOVE" and isinstance(node, Node):
                port = args.port if args.port is not None else ctx.config.local.port
                server = StorageServer(
                    ctx.ae_title,
                    ctx.config.local.host,
                    port,
                    storage=storage,
                    stream=False,
                    timeouts=ctx.timeouts,
                )
                try:
                    await stack.enter_async_context(server)
                except OSError as exc:
                    raise OSError(
                        f"cannot listen on port {port} for C-MOVE: {exc.strerror or exc}"
                    ) from None
            for target in targets:
                final = None
                if server is not None:
                    operation = client.retrieve(node, target, via=server, on_progress=on_progress)
                elif isinstance(node, WebNode):
                    operation = client.retrieve(
                        node, target, storage=storage, on_progress=on_progress
                    )
                else:
                    operation = client.get(node, target, storage=storage, on_progress=on_progress)
                try:
                    async with operation as instances:
                        async for instance in instances:
                            on_instance(instance)
                except IncompleteRetrieve as exc:
                    incomplete.append(exc)  # reported at the end; go on with the rest
                tally.finish(final)
    elapsed = time.perf_counter() - started
    summary: dict[str, object] = {
        "type": "result",
        "node": str(node),
        "via": via,
        "requests": len(targets),
        "received": tally.received,
        "bytes": tally.size,
        "completed": tally.completed,
        "failed": tally.failed,
        "warning": tally.warning,
        "seconds": round(elapsed, 3),
    }
    if args.move_to:
        summary["destination"] = args.move_to
        out.line(
            f"{node} sent {plural(tally.completed, 'instance')} to {args.move_to} "
            f"by C-MOVE in {_ms(elapsed)}"
        )
    else:
        summary["directory"] = str(directory)
        out.line(
            f"Retrieved {plural(tally.received, 'instance')} ({format_size(tally.size)}) "
            f"from {node} by {via} in {_ms(elapsed)} into {directory}"
        )
    if not args.move_to:
        summary["missing"] = sum(max(0, e.expected - e.failed - e.received) for e in incomplete)
    out.emit(summary)
    if len(incomplete) == 1:
        raise Partial(str(incomplete[0]))
    if tally.failed or incomplete:
        missing = summary.get("missing", 0)
        raise Partial(
            f"retrieve incomplete: {plural(tally.failed, 'sub-operation')} failed"
            + (f", {missing} never arrived" if missing else "")
        )
    return 0


# -- store ------------------------------------------------------------------------------


def _count_files(paths: list[Path]) -> int:
    return sum(
        sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 1 for path in paths
    )


def _check_paths(texts: list[str]) -> list[Path]:
    paths = [Path(text).expanduser() for text in texts]
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path}")
    return paths


async def cmd_store(ctx: Context) -> int:
    node = ctx.node(ctx.args.node)
    paths = await run_in_thread(_check_paths, ctx.args.paths)
    out = ctx.output
    total = await run_in_thread(_count_files, paths)
    started = time.perf_counter()

    async with ctx.client() as client:
        verb = "STOW-RS" if isinstance(node, WebNode) else "C-STORE"
        with out.bar(f"{verb} to {_label(node)}", total, sizes=False) as bar:

            def on_progress(outcome: InstanceOutcome) -> None:
                bar.update(advance=1)
                out.emit(
                    {
                        "type": "instance",
                        "sop_instance_uid": outcome.sop_instance_uid,
                        "sop_class_uid": outcome.sop_class_uid,
                        "source": str(outcome.source) if outcome.source else None,
                        "status": outcome.status,
                        "ok": outcome.ok,
                        "error": None if outcome.ok else outcome.meaning,
                    }
                )

            result = await client.store(node, paths, on_progress=on_progress)
    elapsed = time.perf_counter() - started
    failed = result.failed
    out.line(
        f"Stored {len(result.succeeded)} of {plural(len(result), 'instance')} on {node} "
        f"in {_ms(elapsed)}"
    )
    for outcome in failed:
        what = str(outcome.source) if outcome.source else outcome.sop_instance_uid
        status = "" if outcome.status is None else f"0x{outcome.status:04X} "
        out.note(f"  not stored: {what}: {status}{outcome.meaning}")
    out.emit(
        {
            "type": "result",
            "node": str(node),
            "stored": len(result.succeeded),
            "failed": len(failed),
            "seconds": round(elapsed, 3),
        }
    )
    if failed:
        raise Partial(f"{len(failed)} of {plural(len(result), 'instance')} not stored on {node}")
    return 0


# -- serve ------------------------------------------------------------------------------


async def _stop_on_signals(scope: anyio.CancelScope, stopped: list[int]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            stopped.append(signum)
            scope.cancel()
            return


async def cmd_serve(ctx: Context) -> int:
    args, out, config = ctx.args, ctx.output, ctx.config
    directory = ctx.directory(args.output)
    port = args.port if args.port is not None else config.local.port
    host = args.host or config.local.host
    allowed = args.allow or None
    if args.dicomweb and not args.archive:
        raise UsageError("--dicomweb needs --archive (it serves the archive's index over HTTP)")
    if args.dicomweb and importlib.util.find_spec("hypercorn") is None:
        raise UsageError("--dicomweb needs hypercorn: pip install 'aiodicomnet[web]'")
    try:
        if args.archive:
            destinations: dict[str, tuple[str, int] | Node] = {
                entry.ae_title: (entry.host, entry.port)
                for entry in config.nodes.values()
                if not entry.is_web
            }
            for entry in config.nodes.values():
                tls_node = entry.node if entry.tls else None  # its TLS context, built now
                if isinstance(tls_node, Node):
                    destinations[entry.ae_title] = tls_node
            for text in args.dest or []:
                try:
                    dest = Node.parse(text)
                except ValueError as exc:
                    raise UsageError(f"--dest: {exc}") from None
                destinations[dest.ae_title] = dest.address
            server: StorageServer = Archive(
                ctx.ae_title,
                directory,
                host,
                port,
                destinations=destinations,
                stream=True,
                allowed_calling_aets=allowed,
                tls=_server_tls(args),
            )
        else:
            server = StorageServer(
                ctx.ae_title,
                host,
                port,
                storage=DiskStorage(directory),
                allowed_calling_aets=allowed,
                tls=_server_tls(args),
            )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stopped: list[int] = []
    count = 0
    try:
        await server.__aenter__()
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    web_server: contextlib.AbstractAsyncContextManager[DicomWebServer] | None = None
    try:
        web_url: str | None = None
        if args.dicomweb:
            assert isinstance(server, Archive)
            web_server = server.dicomweb(host, args.http_port)
            try:
                web_url = (await web_server.__aenter__()).url
            except OSError as exc:
                web_server = None
                raise OSError(
                    f"cannot listen on {host}:{args.http_port} (HTTP): {exc.strerror or exc}"
                ) from None
        kind = "an archive (Q/R SCP)" if args.archive else "a Storage SCP"
        also = f"; DICOMweb (QIDO-RS, WADO-RS, STOW-RS) at {web_url}" if web_url else ""
        out.note(
            f"{server.ae_title} listening on {host}:{server.port} as {kind}, "
            f"storing into {directory}{also}; Ctrl-C stops"
        )
        listening: dict[str, object] = {
            "type": "listening",
            "ae_title": server.ae_title,
            "host": host,
            "port": server.port,
            "directory": str(directory),
            "archive": bool(args.archive),
        }
        if web_url:
            listening["dicomweb_url"] = web_url
        out.emit(listening)
        async with anyio.create_task_group() as tg:
            if threading.current_thread() is threading.main_thread() and os.name == "posix":
                tg.start_soon(_stop_on_signals, tg.cancel_scope, stopped)
            async for instance in server:
                count += 1
                out.line(
                    f"received {instance.sop_instance_uid} from {instance.calling_ae}"
                    f" -> {instance.path}"
                )
                out.emit(
                    {
                        "type": "instance",
                        "sop_instance_uid": str(instance.sop_instance_uid),
                        "sop_class_uid": str(instance.sop_class_uid),
                        "calling_ae": instance.calling_ae,
                        "patient_id": instance.patient_id,
                        "study_instance_uid": instance.study_instance_uid,
                        "series_instance_uid": instance.series_instance_uid,
                        "path": str(instance.path) if instance.path else None,
                        "size": instance.size,
                    }
                )
                if args.count is not None and count >= args.count:
                    break
            tg.cancel_scope.cancel()
    finally:
        try:
            if web_server is not None:
                # Left in no new cancel scope: the HTTP server's task group was entered
                # in this one (its own exit shields what must finish).
                await web_server.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await server.__aexit__(None, None, None)
    why = "signal" if stopped else "count"
    out.note(
        f"stopped {'on a signal' if stopped else 'after --count'}: "
        f"{plural(count, 'instance')} received"
    )
    out.emit({"type": "stopped", "reason": why, "received": count})
    return 0


# -- nodes ------------------------------------------------------------------------------


def _label(node: AnyNode) -> str:
    """A short name for a progress bar."""
    return node.name or (node.url if isinstance(node, WebNode) else node.ae_title)


def _server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """serve's TLS context (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``), if any."""
    if args.tls_cert is None:
        if args.tls_key is not None or args.tls_client_ca is not None:
            raise UsageError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    try:
        return server_context(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--tls-cert: {exc}") from None


def _node_record(entry: NodeEntry) -> dict[str, object]:
    """A configured node as a JSON record."""
    if entry.is_web:
        return {"name": entry.name, "url": entry.url, "description": entry.description}
    return {
        "name": entry.name,
        "ae_title": entry.ae_title,
        "host": entry.host,
        "port": entry.port,
        "description": entry.description,
        "tls": entry.tls,
    }


async def cmd_nodes(ctx: Context) -> int:
    action: str = ctx.args.action
    config, out = ctx.config, ctx.output
    if action == "list":
        entries = [config.nodes[name] for name in sorted(config.nodes)]
        for entry in entries:
            out.emit(_node_record(entry))
        local = config.local
        out.table(
            f"{plural(len(entries), 'node')} in {config.path}",
            ["Name", "AE title", "Host", "Port", "Description"],
            [
                [e.name, e.ae_title, e.host, str(e.port), e.description or ""]
                if not e.is_web
                else [e.name, "(DICOMweb)", e.url or "", "", e.description or ""]
                for e in entries
            ],
        )
        out.line(
            f"local AE: {local.ae_title} on {local.host}:{local.port}, "
            f"storage {local.storage or '(current directory)'}"
        )
        return 0
    if action == "add":
        web = {
            key: value
            for key in ("username", "password_env", "token_env", "cert", "concurrency")
            if (value := getattr(ctx.args, key, None)) is not None
        }
        if getattr(ctx.args, "ca", None) is not None:
            web["verify"] = ctx.args.ca
        if getattr(ctx.args, "insecure", False):
            web["verify"] = False
        web.update(tls_options(ctx.args))
        entry = config.add_node(
            ctx.args.name,
            ctx.args.address,
            description=ctx.args.description,
            replace=ctx.args.force,
            **web,
        )
        path = config.save()
        out.line(f"added {entry.name}: {entry.address} to {path}")
        out.emit({**_node_record(entry), "path": str(path)})
        return 0
    if action == "remove":
        entry = config.remove_node(ctx.args.name)
        path = config.save()
        out.line(f"removed {entry.name} ({entry.address}) from {path}")
        out.emit({"name": entry.name, "removed": True, "path": str(path)})
        return 0
    if action == "echo":
        names: list[str] = ctx.args.names or sorted(config.nodes)
        if not names:
            raise UsageError(f"no nodes configured in {config.path} (aiodicomnet nodes add ...)")
        specs = [(name, ctx.node(name)) for name in names]
        return await _echo_many(ctx, specs)
    if action == "local":
        local = config.local
        changed = False
        if ctx.args.aet is not None:
            try:
                local.ae_title = Node(ctx.args.aet, "localhost", 1).ae_title
            except ValueError as exc:
                raise UsageError(f"-aet: {exc}") from None
            changed = True
        if ctx.args.port is not None:
            local.port, changed = ctx.args.port, True
        if ctx.args.host is not None:
            local.host, changed = ctx.args.host, True
        if ctx.args.storage is not None:
            local.storage, changed = _absolute(ctx.args.storage), True
        if changed:
            config.save()
        out.line(
            f"local AE: {local.ae_title} on {local.host}:{local.port}, "
            f"storage {local.storage or '(current directory)'}"
            + (f" (saved to {config.path})" if changed else "")
        )
        out.emit(
            {
                "ae_title": local.ae_title,
                "host": local.host,
                "port": local.port,
                "storage": str(local.storage) if local.storage else None,
                "path": str(config.path),
            }
        )
        return 0
    raise UsageError(f"unknown nodes action {action!r}")  # pragma: no cover - argparse


def _absolute(text: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(text)))


# -- demo -------------------------------------------------------------------------------


async def cmd_demo(ctx: Context) -> int:
    from ..demo import tour

    out = ctx.output
    report = await tour(out=out.line, directory=ctx.args.dir)
    for step in report.steps:
        out.emit(
            {
                "step": step.name,
                "ok": step.ok,
                "seconds": round(step.seconds, 4),
                "detail": step.detail,
            }
        )
    if report.error is not None:
        raise report.error
    return 0


COMMANDS: dict[str, Callable[[Context], Awaitable[int]]] = {
    "echo": cmd_echo,
    "find": cmd_find,
    "retrieve": cmd_retrieve,
    "store": cmd_store,
    "serve": cmd_serve,
    "nodes": cmd_nodes,
    "demo": cmd_demo,
    "cohort": cmd_cohort,
}
