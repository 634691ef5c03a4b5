"""Node configuration: our own AE and the remote nodes, in a TOML file.

What a desktop viewer calls its "DICOM server" and "DICOM nodes" settings::

    [local]
    ae_title = "INVESALIUS"     # our AE title (calling AE, Storage SCP AE)
    port = 11112                # where our Storage SCP listens (C-MOVE destination)
    host = "0.0.0.0"            # the address it listens on
    storage = "~/DICOM"         # where received instances go (optional)

    [nodes.pacs]
    ae_title = "ORTHANC"
    host = "pacs.example.org"
    port = 4242
    description = "Radiology PACS"   # optional
    # tls = true                     # DICOM over TLS (PS3.15 BCP 195 profile), with
    # tls_ca = "/etc/ssl/hospital-ca.pem"      # the CAs to trust (default: the system's),
    # tls_cert = "~/.config/aiodicomnet/me.pem" # our certificate and key for mutual TLS,
    # tls_key = "~/.config/aiodicomnet/me.key"
    # tls_check_hostname = false     # when the certificate does not name the host

    [nodes.cloud]                    # a DICOMweb node: a url instead of ae_title/host/port
    url = "https://pacs.example.org/dicom-web"
    username = "alice"               # HTTP basic, with the password from ...
    password_env = "PACS_PASSWORD"   # ... this environment variable (never the file)
    # token_env = "PACS_TOKEN"       # or a bearer token from the environment
    # verify = "/etc/ssl/hospital-ca.pem"   # a CA bundle, or false
    # cert = "~/.config/aiodicomnet/client.pem"   # a client certificate
    # concurrency = 4                # requests at once

The file is ``config.toml`` in the user's configuration directory
(``platformdirs.user_config_dir("aiodicomnet")``, for example
``~/.config/aiodicomnet/config.toml`` on Linux), or the file named by the
environment variable ``AIODICOMNET_CONFIG``, or an explicit path. A missing
file reads as the defaults; :meth:`Config.save` creates it (atomically:
written to a temporary file in the same directory, then renamed). Saving
rewrites the whole file, so comments in it are not kept.

Every value is checked when the file is read; a malformed file or a bad value
raises :class:`ConfigError`, whose message names the file, the key and what
was expected::

    config.toml: nodes.pacs.port: expected an integer 1-65535, got "abc"

::

    from aiodicomnet.config import Config

    config = Config.load()
    config.add_node("pacs", "ORTHANC@pacs.example.org:4242", description="Radiology PACS")
    config.add_node("cloud", "https://pacs.example.org/dicom-web", username="alice",
                    password_env="PACS_PASSWORD")
    config.save()
    node = config.node("pacs")            # an aiodicomnet.Node, ready for a Client
    web = config.node("cloud")            # an aiodicomnet.WebNode

Secrets are never written to the file: a password or token is named by the
environment variable that holds it, read when :meth:`Config.node` is called.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ._files import atomic_write
from .nodes import AnyNode, Node, WebNode, validate_ae_title
from .tls import client_context

__all__ = [
    "DEFAULT_AE_TITLE",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ENV_VAR",
    "Config",
    "ConfigError",
    "LocalAE",
    "NodeEntry",
    "UnknownNode",
    "default_path",
]

#: The environment variable naming the configuration file.
ENV_VAR = "AIODICOMNET_CONFIG"
DEFAULT_AE_TITLE = "AIODICOMNET"
DEFAULT_PORT = 11112
DEFAULT_HOST = "0.0.0.0"

# tomllib is in the standard library from 3.11; tomli is the same parser for 3.10.
# Imported by name so that type checking does not depend on which one is present.
_toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
_toml_loads: Callable[[str], dict[str, Any]] = _toml.loads
_TOMLDecodeError: type[ValueError] = _toml.TOMLDecodeError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_LOCAL_KEYS = ("ae_title", "port", "host", "storage")
_TLS_KEYS = ("tls", "tls_ca", "tls_cert", "tls_key", "tls_check_hostname")
_NODE_KEYS = ("ae_title", "host", "port", "description", *_TLS_KEYS)
_WEB_KEYS = (
    "url",
    "description",
    "username",
    "password_env",
    "token_env",
    "verify",
    "cert",
    "concurrency",
)


class ConfigError(ValueError):
    """The configuration file is malformed or holds a bad value.

    Attributes:
        path: the file, when there is one.
        key: the dotted key at fault (``"nodes.pacs.port"``), when there is one.
    """

    def __init__(self, message: str, *, path: Path | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.message = message
        parts = [str(p) for p in (path, key) if p is not None]
        super().__init__(": ".join([*parts, message]))


class UnknownNode(ConfigError, KeyError):
    """No node of that name is configured."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def default_path() -> Path:
    """The configuration file to use: ``$AIODICOMNET_CONFIG``, else the user's one."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("aiodicomnet")) / "config.toml"


def _got(value: object) -> str:
    """A value as the message shows it: TOML-like (strings in double quotes)."""
    if isinstance(value, Path):
        value = str(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        return repr(value)


def check_name(name: object) -> str:
    """A node name: 1-64 letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit.

    Raises:
        ConfigError: for anything else.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            "expected a node name of letters, digits, '_', '.', '-' "
            f"(1-64, starting with a letter or digit), got {_got(name)}"
        )
    return name


def _check_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"expected an integer 1-65535, got {_got(value)}")
    return value


def _check_local_port(value: object) -> int:
    # 0 is allowed here: listen on a port chosen by the system.
    if value == 0 and isinstance(value, int) and not isinstance(value, bool):
        return 0
    try:
        return _check_port(value)
    except ConfigError:
        raise ConfigError(f"expected an integer 0-65535, got {_got(value)}") from None


def _check_ae(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"expected an AE title (a string of 1-16 characters), got {_got(value)}")
    try:
        return validate_ae_title(value)
    except ValueError as exc:
        raise ConfigError(f"expected an AE title: {exc}") from None


def _check_host(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigError(f"expected a host name or IP address, got {_got(value)}")
    return value


def _check_text(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {_got(value)}")
    return value


@dataclass
class LocalAE:
    """Our own application entity.

    Attributes:
        ae_title: our AE title (the calling AE title, and our Storage SCP's).
        port: where our Storage SCP listens (0: any free port).
        host: the address it listens on (``"0.0.0.0"``: every interface).
        storage: where received instances go; ``None`` for the current directory.
    """

    ae_title: str = DEFAULT_AE_TITLE
    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    storage: Path | None = None

    def __post_init__(self) -> None:
        _checked(None, "local.ae_title", _check_ae, self.ae_title)
        _checked(None, "local.port", _check_local_port, self.port)
        _checked(None, "local.host", _check_host, self.host)
        self.ae_title = validate_ae_title(self.ae_title)


@dataclass
class NodeEntry:
    """A remote node as configured: name, AE title, host, port, description.

    A DICOMweb node has a ``url`` instead (AE title, host and port are then
    empty), and optionally its credentials (``username`` with the password
    in the environment variable ``password_env``, or a bearer token in
    ``token_env``), a CA bundle or ``False`` as ``verify``, a client
    certificate ``cert`` and a ``concurrency``.

    A DIMSE node reached over TLS has ``tls`` set, and optionally ``tls_ca``
    (the CAs to trust; default the system's), ``tls_cert`` and ``tls_key``
    (ours, for mutual TLS) and ``tls_check_hostname`` (default true); see
    :func:`aiodicomnet.tls.client_context`.
    """

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    description: str | None = None
    url: str | None = None
    username: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    verify: bool | str = True
    cert: str | None = None
    concurrency: int | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_check_hostname: bool = True

    def __post_init__(self) -> None:
        check_name(self.name)
        base = f"nodes.{_toml_key(self.name)}"
        if self.url is not None:
            self._check_web(base)
            return
        self.ae_title = _checked(None, f"{base}.ae_title", _check_ae, self.ae_title)
        _checked(None, f"{base}.host", _check_host, self.host)
        _checked(None, f"{base}.port", _check_port, self.port)
        if self.description is not None:
            _checked(None, f"{base}.description", _check_text, self.description)
        for key in ("tls_ca", "tls_cert", "tls_key"):
            if getattr(self, key) is not None:
                _checked(None, f"{base}.{key}", _check_text, getattr(self, key))
                self.tls = True
        if self.tls_key is not None and self.tls_cert is None:
            raise ConfigError("a TLS key needs its certificate (tls_cert)", key=f"{base}.tls_key")

    def _check_web(self, base: str) -> None:
        try:
            WebNode(self.url or "", concurrency=self.concurrency or 4)
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"{base}.url") from None
        for key in ("username", "password_env", "token_env", "cert"):
            value = getattr(self, key)
            if value is not None:
                _checked(None, f"{base}.{key}", _check_text, value)
        if self.token_env is not None and self.username is not None:
            raise ConfigError("give username (basic) or token_env (bearer), not both", key=base)
        if self.password_env is not None and self.username is None:
            raise ConfigError("password_env needs a username", key=f"{base}.password_env")

    @property
    def is_web(self) -> bool:
        """Whether this is a DICOMweb node (it has a ``url``)."""
        return self.url is not None

    @property
    def node(self) -> AnyNode:
        """The node to pass to a Client (named after the entry): a
        :class:`~aiodicomnet.nodes.Node`, or a :class:`~aiodicomnet.nodes.WebNode`
        with its credentials read from the environment now.

        Raises:
            ConfigError: an environment variable it names is not set.
        """
        if self.url is None:
            return Node(self.ae_title, self.host, self.port, self.name, tls=self._tls_context())
        auth: Any = None
        if self.username is not None:
            auth = (self.username, self._secret(self.password_env) if self.password_env else "")
        elif self.token_env is not None:
            auth = self._secret(self.token_env)
        cert = str(Path(self.cert).expanduser()) if self.cert else None
        verify = (
            str(Path(self.verify).expanduser()) if isinstance(self.verify, str) else self.verify
        )
        return WebNode(
            self.url,
            auth=auth,
            verify=verify,
            cert=cert,
            name=self.name,
            concurrency=self.concurrency or 4,
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None

        def path(value: str | None) -> str | None:
            return None if value is None else str(Path(value).expanduser())

        try:
            return client_context(
                ca=path(self.tls_ca),
                cert=path(self.tls_cert),
                key=path(self.tls_key),
                check_hostname=self.tls_check_hostname,
            )
        except (OSError, ValueError) as exc:  # a missing file, a PEM that is not one
            raise ConfigError(
                f"cannot set up TLS: {exc}", key=f"nodes.{_toml_key(self.name)}"
            ) from None

    def _secret(self, variable: str) -> str:
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(
                f"environment variable {variable} (the node's secret) is not set",
                key=f"nodes.{_toml_key(self.name)}",
            )
        return value

    @property
    def address(self) -> str:
        """``AET@host:port``, or the URL of a DICOMweb node."""
        if self.url is not None:
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def _checked(path: Path | None, key: str, check: Callable[[object], Any], value: object) -> Any:
    try:
        return check(value)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path, key=key) from None


@dataclass
class Config:
    """The configuration: :attr:`local` (our AE) and :attr:`nodes` (name -> entry).

    Attributes:
        path: the file it was loaded from and is saved to.
    """

    local: LocalAE = field(default_factory=LocalAE)
    nodes: dict[str, NodeEntry] = field(default_factory=dict)
    path: Path = field(default_factory=default_path)

    # -- reading -------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Config:
        """Read ``path`` (default: :func:`default_path`); a missing file gives the defaults.

        Raises:
            ConfigError: the file is not valid TOML, or a key or value is wrong.
        """
        file = Path(path).expanduser() if path is not None else default_path()
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path=file)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text: {exc}", path=file) from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", path=file) from None
        return cls.from_toml(text, path=file)

    @classmethod
    def from_toml(cls, text: str, *, path: Path | None = None) -> Config:
        """Parse configuration text (``path`` names it in messages and is kept)."""
        try:
            data = _toml_loads(text)
        except _TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", path=path) from None
        return cls.from_dict(data, path=path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: Path | None = None) -> Config:
        """Build from parsed TOML (``{"local": {...}, "nodes": {name: {...}}}``)."""
        _unknown(path, None, data, ("local", "nodes"))
        local_data = _table(path, "local", data.get("local", {}))
        _unknown(path, "local", local_data, _LOCAL_KEYS)
        local = LocalAE()
        if "ae_title" in local_data:
            local.ae_title = _checked(path, "local.ae_title", _check_ae, local_data["ae_title"])
        if "port" in local_data:
            local.port = _checked(path, "local.port", _check_local_port, local_data["port"])
        if "host" in local_data:
            local.host = _checked(path, "local.host", _check_host, local_data["host"])
        if "storage" in local_data:
            raw = _checked(path, "local.storage", _check_text, local_data["storage"])
            if not raw:
                raise ConfigError('expected a directory, got ""', path=path, key="local.storage")
            storage = Path(raw).expanduser()
            if not storage.is_absolute() and path is not None:
                storage = path.parent / storage  # relative to the configuration file
            local.storage = storage
        nodes: dict[str, NodeEntry] = {}
        for name, entry in _table(path, "nodes", data.get("nodes", {})).items():
            key = f"nodes.{_toml_key(name)}"
            _checked(path, key, check_name, name)
            values = _table(path, key, entry)
            if "url" in values:
                nodes[name] = _web_entry(path, key, name, values)
                continue
            _unknown(path, key, values, _NODE_KEYS)
            for required in ("ae_title", "host", "port"):
                if required not in values:
                    raise ConfigError(
                        "missing (every node needs ae_title, host and port)",
                        path=path,
                        key=f"{key}.{required}",
                    )
            description = values.get("description")
            nodes[name] = NodeEntry(
                name,
                _checked(path, f"{key}.ae_title", _check_ae, values["ae_title"]),
                _checked(path, f"{key}.host", _check_host, values["host"]),
                _checked(path, f"{key}.port", _check_port, values["port"]),
                None
                if description is None
                else _checked(path, f"{key}.description", _check_text, description),
                **_tls_options(path, key, values),
            )
        return cls(local=local, nodes=nodes, path=path or default_path())

    # -- nodes ---------------------------------------------------------------------

    def node(self, name: str) -> AnyNode:
        """The configured node ``name`` as a :class:`~aiodicomnet.nodes.Node`
        (or :class:`~aiodicomnet.nodes.WebNode`).

        Raises:
            UnknownNode: no node has that name.
            ConfigError: a DICOMweb node's secret is not in the environment.
        """
        entry = self.nodes.get(name)
        if entry is None:
            known = ", ".join(sorted(self.nodes)) or "none"
            raise UnknownNode(f"no node named {name!r} in {self.path} (known: {known})")
        return entry.node

    def add_node(
        self,
        name: str,
        node: AnyNode | str,
        *,
        description: str | None = None,
        replace: bool = False,
        **web: Any,
    ) -> NodeEntry:
        """Add (or with ``replace``, replace) the node ``name``; call :meth:`save` to keep it.

        ``node`` is a :class:`~aiodicomnet.nodes.Node`, ``"AET@host:port"``, or
        the URL of a DICOMweb service (``"https://..."``); for the latter, ``web``
        takes the options of :class:`NodeEntry` (``username``, ``password_env``,
        ``token_env``, ``verify``, ``cert``, ``concurrency``).

        Raises:
            ConfigError: a bad name or address, or the name exists and not ``replace``.
        """
        check_name(name)
        if isinstance(node, WebNode):
            node = node.url
        if isinstance(node, str) and node.startswith(("http://", "https://")):
            if name in self.nodes and not replace:
                raise ConfigError(f"a node named {name!r} exists already", key=f"nodes.{name}")
            unknown = set(web) - set(_WEB_KEYS)
            if unknown:
                raise ConfigError(f"unknown DICOMweb option(s): {', '.join(sorted(unknown))}")
            entry = NodeEntry(name, description=description, url=node, **web)
            self.nodes[name] = entry
            return entry
        tls_options = {k: v for k, v in web.items() if k in _TLS_KEYS}
        web = {k: v for k, v in web.items() if k not in _TLS_KEYS}
        if web:
            raise ConfigError(f"{', '.join(sorted(web))}: options of a DICOMweb node (a URL)")
        if isinstance(node, str):
            try:
                node = Node.parse(node)
            except ValueError as exc:
                raise ConfigError(str(exc), key=f"nodes.{_toml_key(name)}") from None
        if name in self.nodes and not replace:
            raise ConfigError(f"a node named {name!r} exists already", key=f"nodes.{name}")
        entry = NodeEntry(name, node.ae_title, node.host, node.port, description, **tls_options)
        self.nodes[name] = entry
        return entry

    def remove_node(self, name: str) -> NodeEntry:
        """Remove the node ``name`` and return it; call :meth:`save` to keep the change.

        Raises:
            UnknownNode: no node has that name.
        """
        self.node(name)
        return self.nodes.pop(name)

    # -- writing -------------------------------------------------------------------

    def to_toml(self) -> str:
        """The configuration as TOML text."""
        local = self.local
        lines = [
            "# aiodicomnet configuration (rewritten by `aiodicomnet nodes ...`)",
            "",
            "[local]",
            f"ae_title = {_toml_string(local.ae_title)}",
            f"port = {int(local.port)}",
            f"host = {_toml_string(local.host)}",
        ]
        if local.storage is not None:
            lines.append(f"storage = {_toml_string(str(local.storage))}")
        for name in sorted(self.nodes):
            entry = self.nodes[name]
            if entry.url is not None:
                lines += ["", f"[nodes.{_toml_key(name)}]", *_web_lines(entry)]
                continue
            lines += [
                "",
                f"[nodes.{_toml_key(name)}]",
                f"ae_title = {_toml_string(entry.ae_title)}",
                f"host = {_toml_string(entry.host)}",
                f"port = {int(entry.port)}",
            ]
            if entry.description is not None:
                lines.append(f"description = {_toml_string(entry.description)}")
            lines += _tls_lines(entry)
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the file atomically (``path`` also becomes :attr:`path`); return its path.

        The text goes to a temporary file in the same directory, flushed to
        disk, then renamed over the old file: a reader sees the old or the new
        file, never half of one. Parent directories are created.
        """
        if path is not None:
            self.path = Path(path).expanduser()
        target = self.path
        text = self.to_toml()
        # Never write what we could not read back.
        Config.from_toml(text, path=target)
        data = text.encode("utf-8")

        def write(f: BinaryIO) -> None:
            f.write(data)

        atomic_write(target, write, fsync=True, permissions=0o644)
        return target


def _table(path: Path | None, key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {_got(value)}", path=path, key=key)
    return value


def _unknown(
    path: Path | None, key: str | None, table: Mapping[str, Any], known: tuple[str, ...]
) -> None:
    for name in table:
        if name not in known:
            where = f"{key}.{_toml_key(name)}" if key else _toml_key(name)
            raise ConfigError(
                f"unknown key (expected one of {', '.join(known)})", path=path, key=where
            )


def _toml_key(key: str) -> str:
    """A TOML key: bare when it can be, else a quoted string."""
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _web_entry(path: Path | None, key: str, name: str, values: Mapping[str, Any]) -> NodeEntry:
    """A DICOMweb node's table (it has ``url``)."""
    _unknown(path, key, values, _WEB_KEYS)
    checked: dict[str, Any] = {}
    for option in ("url", "description", "username", "password_env", "token_env", "cert"):
        if option in values:
            checked[option] = _checked(path, f"{key}.{option}", _check_text, values[option])
    if "verify" in values:
        verify = values["verify"]
        if not isinstance(verify, (bool, str)):
            raise ConfigError(
                f"expected true, false or a CA bundle path, got {_got(verify)}",
                path=path,
                key=f"{key}.verify",
            )
        checked["verify"] = verify
    if "concurrency" in values:
        value = values["concurrency"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise ConfigError(
                f"expected an integer 1-64, got {_got(value)}", path=path, key=f"{key}.concurrency"
            )
        checked["concurrency"] = value
    try:
        return NodeEntry(name, **checked)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path, key=exc.key or key) from None


def _tls_options(path: Path | None, key: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The TLS settings of a DIMSE node's table, checked."""
    options: dict[str, Any] = {}
    for option in ("tls", "tls_check_hostname"):
        if option in values:
            if not isinstance(values[option], bool):
                raise ConfigError(
                    f"expected true or false, got {_got(values[option])}",
                    path=path,
                    key=f"{key}.{option}",
                )
            options[option] = values[option]
    for option in ("tls_ca", "tls_cert", "tls_key"):
        if option in values:
            options[option] = _checked(path, f"{key}.{option}", _check_text, values[option])
    return options


def _tls_lines(entry: NodeEntry) -> list[str]:
    if not entry.tls:
        return []
    lines = ["tls = true"]
    for option in ("tls_ca", "tls_cert", "tls_key"):
        value = getattr(entry, option)
        if value is not None:
            lines.append(f"{option} = {_toml_string(value)}")
    if not entry.tls_check_hostname:
        lines.append("tls_check_hostname = false")
    return lines


def _web_lines(entry: NodeEntry) -> list[str]:
    lines = [f"url = {_toml_string(entry.url or '')}"]
    for option in ("description", "username", "password_env", "token_env", "cert"):
        value = getattr(entry, option)
        if value is not None:
            lines.append(f"{option} = {_toml_string(value)}")
    if entry.verify is not True:
        verify = entry.verify
        lines.append(f"verify = {_toml_string(verify) if isinstance(verify, str) else 'false'}")
    if entry.concurrency is not None:
        lines.append(f"concurrency = {int(entry.concurrency)}")
    return lines
