"""The argument parser of ``aiodicomnet`` and the parsing of nodes and query keys."""

from __future__ import annotations

import argparse
import re
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from .. import __version__
from ..config import Config, UnknownNode
from ..nodes import AnyNode, Node, WebNode
from ..query import LEVELS, Query
from ..tls import client_context
from ._cohort import add_arguments as add_cohort_arguments

__all__ = [
    "EXIT_CODES",
    "UsageError",
    "build_parser",
    "parse_key",
    "resolve_node",
    "tls_options",
    "with_tls",
]

#: (code, meaning) for the help epilog and the documentation.
EXIT_CODES = (
    (0, "success"),
    (1, "error outside DICOM (file system, port in use, unexpected error)"),
    (2, "usage error: bad arguments, unknown node, bad query key, bad config file"),
    (3, "not reachable: no TCP connection (refused, unreachable, connect timeout)"),
    (4, "association rejected by the peer (A-ASSOCIATE-RJ)"),
    (5, "the peer answered with a failure status (C-FIND/C-MOVE/C-GET/C-ECHO)"),
    (6, "partial: one or more instances were not stored or not retrieved"),
    (7, "other DICOM error: abort, no contexts accepted, ACSE/DIMSE timeout"),
    (130, "interrupted (Ctrl-C), except for serve, where it is the way to stop"),
    (141, "standard output closed early (for example by | head)"),
)

EPILOG = (
    "exit codes:\n"
    + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)
    + "\n\nnodes are names from the config file (aiodicomnet nodes list), AET@host:port,\n"
    "or the URL of a DICOMweb service (https://host/dicom-web).\n"
    "config file: --config PATH, else $AIODICOMNET_CONFIG, else the user config directory."
)

_TAG_RE = re.compile(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?")
_LEVEL_ALIASES = {"INSTANCE": "IMAGE"}


class UsageError(ValueError):
    """A command line that cannot be run as given (exit code 2)."""


def resolve_node(spec: str, config: Config, called_ae: str | None = None) -> AnyNode:
    """A node from a configured name, ``AET@host:port``, ``host:port`` with ``-aec``,
    or a DICOMweb URL (``http://`` or ``https://``).

    ``called_ae`` (``-aec``) replaces the node's AE title.
    """
    node: AnyNode
    if spec in config.nodes:
        node = config.node(spec)
    elif spec.startswith(("http://", "https://")):
        try:
            node = WebNode(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    elif "@" in spec:
        try:
            node = Node.parse(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    elif called_ae is not None and ":" in spec:
        try:
            node = Node.parse(f"{called_ae}@{spec}")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        known = ", ".join(sorted(config.nodes)) or "none configured"
        raise UnknownNode(
            f"unknown node {spec!r}: not a name in {config.path} (known: {known}) nor AET@host:port"
        )
    if called_ae is not None:
        if isinstance(node, WebNode):
            raise UsageError("-aec: a DICOMweb node has no AE title")
        try:
            node = Node(called_ae, node.host, node.port, node.name, tls=node.tls)
        except ValueError as exc:
            raise UsageError(f"-aec: {exc}") from None
    return node


def parse_key(text: str) -> tuple[str, str | list[str] | None]:
    """``-k`` as DCMTK takes it: ``Keyword=Value``, ``(gggg,eeee)=Value``, or a return key.

    An empty value (``-k StudyDescription=``) or no ``=`` at all asks for the key
    to be returned (universal matching). A backslash separates the UIDs of a
    UID list.
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    match = _TAG_RE.fullmatch(name)
    if match:
        tag = int(match[1] + match[2], 16)
        keyword = keyword_for_tag(tag)
        if not keyword:
            raise UsageError(
                f"-k {text}: tag {name} has no keyword (private tags are not supported)"
            )
    else:
        keyword = name
        if tag_for_keyword(keyword) is None:
            raise UsageError(f"-k {text}: {name!r} is not a DICOM keyword (e.g. PatientName)")
    if not sep or not value:
        return keyword, None
    if "\\" in value and dictionary_VR(keyword) == "UI":
        return keyword, [v for v in value.split("\\") if v]
    return keyword, value


def build_query(
    keys: list[str] | None,
    level: str | None,
    model: str | None,
    *,
    default_level: str = "STUDY",
    defaults: bool = True,
) -> Query:
    """The Query of ``-k`` keys, ``-L`` level and ``-P``/``-S`` model.

    ``-k QueryRetrieveLevel=SERIES`` is taken as the level, as findscu does.
    """
    parsed: dict[str, object] = {}
    key_level: str | None = None
    for text in keys or []:
        keyword, value = parse_key(text)
        if keyword == "QueryRetrieveLevel":
            if not isinstance(value, str):
                raise UsageError("-k QueryRetrieveLevel needs a value (PATIENT, STUDY, ...)")
            key_level = value
            continue
        parsed[keyword] = value
    chosen = _level(level) if level else None
    if key_level is not None:
        from_key = _level(key_level)
        if chosen is not None and chosen != from_key:
            raise UsageError(f"-L {chosen} and -k QueryRetrieveLevel={from_key} disagree")
        chosen = from_key
    return Query(chosen or default_level, parsed, model=model, defaults=defaults)


def _level(text: str) -> str:
    name = text.strip().upper()
    name = _LEVEL_ALIASES.get(name, name)
    if name not in LEVELS:
        raise UsageError(f"level {text!r} is not one of {', '.join(LEVELS)}")
    return name


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


_FORMATTER = argparse.RawDescriptionHelpFormatter
_NODE_HELP = "a configured name, AET@host:port, or host:port with -aec"


def _common() -> argparse.ArgumentParser:
    """Options every command takes (also before the command name)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("common options")
    S = argparse.SUPPRESS
    group.add_argument("--config", metavar="PATH", default=S, help="configuration file to use")
    group.add_argument(
        "--json", action="store_true", default=S, help="results as JSON lines (one per line)"
    )
    group.add_argument(
        "--debug", action="store_true", default=S, help="tracebacks and pynetdicom's debug log"
    )
    return parser


def _network() -> argparse.ArgumentParser:
    """Options of the commands that talk to a peer."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("network options")
    group.add_argument(
        "-aet", "--aetitle", dest="aet", metavar="AET", help="our AE title (default: from config)"
    )
    group.add_argument(
        "-aec",
        "--call",
        dest="aec",
        metavar="AET",
        help="the called AE title (overrides the node's)",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="connect, association and DIMSE timeout (default: 10, 30, 60 s)",
    )
    _tls_client_options(parser.add_argument_group("DICOM over TLS (a node given as AET@HOST:PORT)"))
    return parser


def _tls_client_options(group: Any) -> None:
    """``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-no-hostname-check``."""
    group.add_argument("--tls", action="store_true", help="DICOM over TLS (TLS 1.2+, BCP 195)")
    group.add_argument("--tls-ca", metavar="PEM", help="CAs to trust (default: the system's)")
    group.add_argument("--tls-cert", metavar="PEM", help="our certificate, for mutual TLS")
    group.add_argument("--tls-key", metavar="PEM", help="our private key (if not in --tls-cert)")
    group.add_argument(
        "--tls-no-hostname-check",
        dest="tls_check_hostname",
        action="store_false",
        help="do not check that the certificate names the host",
    )


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TLS options given on the command line, as configuration keys (empty: none)."""
    options: dict[str, Any] = {}
    for key in ("tls_ca", "tls_cert", "tls_key"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if getattr(args, "tls", False) or options:
        options["tls"] = True
    if options and not getattr(args, "tls_check_hostname", True):
        options["tls_check_hostname"] = False
    return options


def with_tls(node: AnyNode, args: argparse.Namespace) -> AnyNode:
    """``node`` reached over TLS as the command line says (unchanged without TLS options)."""
    options = tls_options(args)
    if not options:
        return node
    if isinstance(node, WebNode):
        raise UsageError("--tls options: a DICOMweb node uses https:// instead")
    try:
        context = client_context(
            ca=options.get("tls_ca"),
            cert=options.get("tls_cert"),
            key=options.get("tls_key"),
            check_hostname=options.get("tls_check_hostname", True),
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"--tls: {exc}") from None
    return Node(node.ae_title, node.host, node.port, node.name, tls=context)


def _query_options(parser: argparse.ArgumentParser, default_level: str) -> None:
    group = parser.add_argument_group("query")
    group.add_argument(
        "-k",
        "--key",
        dest="keys",
        action="append",
        metavar="KEY=VALUE",
        help="a matching key (repeatable): PatientName=Doe*, StudyDate=20240101-, "
        "StudyInstanceUID=1.2\\1.3; an empty value (StudyDescription=) returns the key",
    )
    group.add_argument(
        "-L",
        "--level",
        metavar="LEVEL",
        help=f"PATIENT, STUDY, SERIES or IMAGE (default: {default_level})",
    )
    models = group.add_mutually_exclusive_group()
    models.add_argument(
        "-P",
        "--patient-root",
        dest="model",
        action="store_const",
        const="PATIENT_ROOT",
        help="Patient Root information model",
    )
    models.add_argument(
        "-S",
        "--study-root",
        dest="model",
        action="store_const",
        const="STUDY_ROOT",
        help="Study Root information model (the default, except at PATIENT level)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``aiodicomnet`` argument parser."""
    common, network = _common(), _network()
    parser = argparse.ArgumentParser(
        prog="aiodicomnet",
        description="DICOM networking from the command line: echo, find, retrieve and store\n"
        "against PACS and other DICOM nodes, receive instances, keep a list of nodes.\n"
        "'aiodicomnet COMMAND --help' describes each command.",
        epilog=EPILOG,
        formatter_class=_FORMATTER,
        parents=[common],
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"aiodicomnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=EPILOG,
            formatter_class=_FORMATTER,
            parents=[common, *parents],
            allow_abbrev=False,
        )

    echo = command("echo", "verify nodes with C-ECHO", network)
    echo.add_argument(
        "nodes", nargs="+", metavar="NODE", help="name, AET@host:port, or host:port with -aec"
    )

    find = command("find", "search a node with C-FIND; a table or --json lines", network)
    find.add_argument("node", metavar="NODE", help=_NODE_HELP)
    _query_options(find, "STUDY")
    find.add_argument(
        "--no-defaults",
        dest="defaults",
        action="store_false",
        help="return only the keys given (not the usual ones for the level)",
    )
    find.add_argument(
        "--limit", type=_positive, metavar="N", help="stop (C-CANCEL) after N results"
    )

    retrieve = command(
        "retrieve",
        "retrieve instances into a directory by C-MOVE (to our own Storage SCP) or C-GET",
        network,
    )
    retrieve.description = (
        "Retrieve instances into a directory by C-MOVE (to our own Storage SCP, which runs\n"
        "for the duration) or by C-GET. When the keys are more than the unique keys of the\n"
        "level (and of the levels above), what matches is found first (C-FIND) and each\n"
        "match is retrieved."
    )
    retrieve.add_argument("node", metavar="NODE", help=_NODE_HELP)
    _query_options(retrieve, "STUDY")
    retrieve.add_argument(
        "--via",
        choices=("move", "get"),
        default="move",
        help="C-MOVE to our Storage SCP (default) or C-GET on our own association",
    )
    retrieve.add_argument(
        "-o",
        "-od",
        "--output",
        metavar="DIR",
        help="where files go: DIR/PatientID/Study/Series/SOP.dcm (default: config storage, or .)",
    )
    retrieve.add_argument(
        "--port",
        type=_port,
        metavar="PORT",
        help="port of our Storage SCP for C-MOVE; the node must know our AE title at it "
        "(default: config local.port)",
    )
    retrieve.add_argument(
        "-aem",
        "--move-to",
        dest="move_to",
        metavar="AET",
        help="C-MOVE to this other AE instead of to ourselves (nothing is received here)",
    )

    store = command("store", "send files and directories (recursively) with C-STORE", network)
    store.add_argument("node", metavar="NODE", help=_NODE_HELP)
    store.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or directories")

    serve = command(
        "serve",
        "receive instances into a directory (Storage SCP), or --archive to also answer "
        "C-FIND/C-MOVE/C-GET; stop with Ctrl-C",
    )
    serve.add_argument("-aet", "--aetitle", dest="aet", metavar="AET", help="our AE title")
    serve.add_argument(
        "--port", type=_port, metavar="PORT", help="port (default: config local.port)"
    )
    serve.add_argument("--host", metavar="ADDRESS", help="address to listen on (default: config)")
    serve.add_argument(
        "-o",
        "-od",
        "--output",
        metavar="DIR",
        help="where files go (default: config storage, or .)",
    )
    serve.add_argument(
        "--archive",
        action="store_true",
        help="embedded PACS: keep an index in DIR and answer C-FIND, C-MOVE and C-GET",
    )
    serve.add_argument(
        "--dicomweb",
        action="store_true",
        help="--archive: also serve QIDO-RS, WADO-RS and STOW-RS over HTTP (needs hypercorn)",
    )
    serve.add_argument(
        "--http-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="--dicomweb: the HTTP port (default 0: a free one, printed)",
    )
    serve.add_argument(
        "--dest",
        action="append",
        metavar="AET@HOST:PORT",
        help="--archive: a C-MOVE destination (repeatable; configured nodes are destinations too)",
    )
    serve.add_argument(
        "--allow",
        action="append",
        metavar="AET",
        help="accept associations only from this calling AE title (repeatable)",
    )
    serve.add_argument(
        "--count", type=_positive, metavar="N", help="stop after receiving N instances"
    )
    serve_tls = serve.add_argument_group("DICOM over TLS")
    serve_tls.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate")
    serve_tls.add_argument("--tls-key", metavar="PEM", help="its private key (if not in the PEM)")
    serve_tls.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="mutual TLS: require client certificates from these CAs",
    )

    nodes = command("nodes", "the configured nodes: list, add, remove, echo; our own AE: local")
    actions = nodes.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return actions.add_parser(
            name,
            help=help,
            description=help,
            formatter_class=_FORMATTER,
            parents=[common, *parents],
            allow_abbrev=False,
        )

    action("list", "list the configured nodes")
    add = action("add", "add a node")
    add.add_argument("name", metavar="NAME", help="a short name: letters, digits, _ . -")
    add.add_argument("address", metavar="AET@HOST:PORT|URL")
    add.add_argument("--user", dest="username", metavar="NAME", help="DICOMweb: HTTP basic user")
    add.add_argument(
        "--password-env", metavar="VAR", help="DICOMweb: the variable holding the password"
    )
    add.add_argument(
        "--token-env", metavar="VAR", help="DICOMweb: the variable holding a bearer token"
    )
    add.add_argument("--ca", metavar="PEM", help="DICOMweb: CA bundle to verify the server")
    add.add_argument("--insecure", action="store_true", help="DICOMweb: no TLS verification")
    add.add_argument("--cert", metavar="PEM", help="DICOMweb: client certificate (and key)")
    add.add_argument("--concurrency", type=int, metavar="N", help="DICOMweb: requests at once")
    _tls_client_options(add.add_argument_group("DICOM over TLS (an AET@HOST:PORT node)"))
    add.add_argument("-d", "--description", metavar="TEXT")
    add.add_argument("-f", "--force", action="store_true", help="replace a node of that name")
    remove = action("remove", "remove a node")
    remove.add_argument("name", metavar="NAME")
    echo_all = action("echo", "C-ECHO every configured node (or those named), at once", network)
    echo_all.add_argument("names", nargs="*", metavar="NAME")
    local = action("local", "show or change our own AE: title, port, host, storage directory")
    local.add_argument("-aet", "--aetitle", dest="aet", metavar="AET")
    local.add_argument("--port", type=_port, metavar="PORT")
    local.add_argument("--host", metavar="ADDRESS")
    local.add_argument("--storage", metavar="DIR")

    demo = command(
        "demo",
        "a tour: an embedded PACS with sample studies, then echo, find, move, get and store",
    )
    demo.add_argument("--dir", metavar="DIR", help="keep the PACS and received files here")

    cohort = command(
        "cohort",
        "pull a de-identified cohort from a CSV list (find, retrieve, de-identify; resumable)",
        network,
    )
    add_cohort_arguments(cohort)
    return parser
