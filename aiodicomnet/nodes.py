"""Remote application entities (:class:`Node`) and AE title validation."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Node", "validate_ae_title"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_ae_title(title: str) -> str:
    """Check an AE title (PS3.5 Table 6.2-1, VR AE) and return it without padding.

    An AE title has 1 to 16 characters from the default character repertoire,
    no backslash, no control characters, and is not only spaces. Leading and
    trailing spaces are not significant and are removed.

    Raises:
        ValueError: naming the bad title and what is wrong with it.
    """
    if not isinstance(title, str):
        raise ValueError(f"AE title must be a str, not {type(title).__name__}: {title!r}")
    if len(title) > 16:
        raise ValueError(f"AE title {title!r} is longer than 16 characters")
    if "\\" in title:
        raise ValueError(f"AE title {title!r} contains a backslash")
    if _CONTROL.search(title):
        raise ValueError(f"AE title {title!r} contains a control character")
    if not title.isascii():
        raise ValueError(f"AE title {title!r} contains non-ASCII characters")
    stripped = title.strip(" ")
    if not stripped:
        raise ValueError(f"AE title {title!r} is empty or only spaces")
    return stripped


@dataclass(frozen=True)
class Node:
    """A remote DICOM application entity: AE title, host and port.

    Args:
        ae_title: the peer's AE title (the Called AE Title we send).
        host: host name or IP address (IPv6 without brackets).
        port: TCP port.
        name: an optional display name (defaults to the AE title).
    """

    ae_title: str
    host: str
    port: int
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title))
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"Node host must be a non-empty string, not {self.host!r}")
        if self.host.startswith("[") or any(c.isspace() for c in self.host):
            raise ValueError(
                f"Node host {self.host!r}: give the address without brackets or spaces"
            )
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"Node port must be an int, not {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"Node port {self.port} is outside 1-65535")

    @classmethod
    def parse(cls, text: str, *, name: str | None = None) -> Node:
        """Parse ``"AET@host:port"`` (``"AET@[::1]:104"`` for IPv6).

        Raises:
            ValueError: when the text is not of that form or a part is invalid.
        """
        aet, sep, rest = text.rpartition("@")
        if not sep:
            raise ValueError(f"node {text!r} is not of the form AET@host:port")
        if rest.startswith("["):
            host, bracket, port_text = rest[1:].partition("]")
            if not bracket or not port_text.startswith(":"):
                raise ValueError(f"node {text!r}: expected AET@[ipv6]:port")
            port_text = port_text[1:]
        else:
            host, colon, port_text = rest.rpartition(":")
            if not colon:
                raise ValueError(f"node {text!r} has no port (AET@host:port)")
            if ":" in host:  # "AET@fe80::1" must not read as host "fe80:", port 1
                raise ValueError(f"node {text!r}: an IPv6 address needs brackets, AET@[ipv6]:port")
        if not port_text.isdigit() or not port_text.isascii():
            raise ValueError(f"node {text!r}: port {port_text!r} is not a number")
        return cls(aet, host, int(port_text), name)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        label = f"{self.ae_title}@{host}:{self.port}"
        return f"{self.name} ({label})" if self.name and self.name != self.ae_title else label
