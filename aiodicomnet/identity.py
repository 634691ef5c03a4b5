"""User Identity negotiation (PS3.7 D.3.3.7): who the user behind an association is.

A client says who it is when it asks for an association, per node::

    pacs = Node("PACS", "pacs.example.org", 11112,
                identity=UserIdentity.password("alice", "secret", positive_response=True))

and a server decides, in a hook, whether to accept that identity
(:class:`~aiodicomnet.StorageServer` ``identify=``), seeing it as an
:class:`IdentityOffer`.  The five kinds of PS3.7 Table D.3-14: a username, a
username and passcode, a Kerberos service ticket, a SAML assertion, a JSON
Web Token.

``positive_response=True`` asks the acceptor to confirm the identity; this
library then *requires* the confirmation: an acceptor that accepts the
association without one (it does not support the negotiation, PS3.7
D.3.3.7.2) is left at once with :class:`~aiodicomnet.errors.IdentityNotConfirmed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["IDENTITY_KINDS", "IdentityOffer", "UserIdentity"]

#: User Identity Type values (PS3.7 Table D.3-14) and their names.
IDENTITY_KINDS = {
    1: "username",
    2: "username and passcode",
    3: "Kerberos service ticket",
    4: "SAML assertion",
    5: "JSON Web Token",
}

_MAX_FIELD = 0xFFFF  # a two-byte length (PS3.7 Table D.3-14)


def _field(value: str | bytes, what: str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if not isinstance(data, bytes):
        raise ValueError(f"{what} must be str or bytes, not {type(value).__name__}")
    if not data:
        raise ValueError(f"{what} is empty")
    if len(data) > _MAX_FIELD:
        raise ValueError(f"{what} is {len(data)} bytes; the negotiation carries at most 65535")
    return data


@dataclass(frozen=True)
class UserIdentity:
    """The identity a client offers in its A-ASSOCIATE-RQ.

    Build one with :meth:`username`, :meth:`password`, :meth:`kerberos`,
    :meth:`saml` or :meth:`jwt`.  Its ``repr`` shows the kind and the user
    name, never a passcode, ticket, assertion or token.

    Attributes:
        kind: the User Identity Type, 1 to 5 (:data:`IDENTITY_KINDS`).
        primary: the Primary Field (username, ticket, assertion or token).
        secondary: the Secondary Field (the passcode, kind 2 only).
        positive_response: ask the acceptor to confirm, and require it.
    """

    kind: int
    primary: bytes = field(repr=False)
    secondary: bytes = field(default=b"", repr=False)
    positive_response: bool = False

    def __post_init__(self) -> None:
        if self.kind not in IDENTITY_KINDS:
            raise ValueError(f"User Identity Type {self.kind!r} is not one of 1-5")
        _field(self.primary, "the primary field")
        if self.kind == 2:
            _field(self.secondary, "the passcode")
        elif self.secondary:
            raise ValueError("only a username and passcode identity has a secondary field")

    @classmethod
    def username(cls, name: str, *, positive_response: bool = False) -> UserIdentity:
        """A username (UTF-8), with no passcode."""
        return cls(1, _field(name, "the username"), positive_response=positive_response)

    @classmethod
    def password(cls, name: str, passcode: str, *, positive_response: bool = False) -> UserIdentity:
        """A username and passcode (both UTF-8)."""
        return cls(
            2,
            _field(name, "the username"),
            _field(passcode, "the passcode"),
            positive_response=positive_response,
        )

    @classmethod
    def kerberos(cls, ticket: bytes, *, positive_response: bool = False) -> UserIdentity:
        """A Kerberos service ticket, passed through as given (RFC 1510 encoding)."""
        return cls(3, _field(ticket, "the Kerberos ticket"), positive_response=positive_response)

    @classmethod
    def saml(cls, assertion: str | bytes, *, positive_response: bool = False) -> UserIdentity:
        """A SAML assertion (its XML)."""
        return cls(4, _field(assertion, "the SAML assertion"), positive_response=positive_response)

    @classmethod
    def jwt(cls, token: str | bytes, *, positive_response: bool = False) -> UserIdentity:
        """A JSON Web Token (RFC 7519, its compact form)."""
        return cls(5, _field(token, "the JSON Web Token"), positive_response=positive_response)

    @property
    def kind_name(self) -> str:
        """The kind in words: ``"username and passcode"``, ``"JSON Web Token"``, ..."""
        return IDENTITY_KINDS[self.kind]

    def __repr__(self) -> str:
        who = f", user={self.primary.decode('utf-8', 'replace')!r}" if self.kind in (1, 2) else ""
        return f"UserIdentity({self.kind_name}{who}, positive_response={self.positive_response})"


@dataclass(frozen=True)
class IdentityOffer:
    """What a server's ``identify`` hook sees of an association request.

    Attributes:
        kind: the User Identity Type (1-5), or ``None`` when the request offers none.
        primary: the Primary Field (``b""`` when none).
        secondary: the Secondary Field (the passcode of kind 2; ``b""`` otherwise).
        positive_response: whether the requestor asked for a confirmation.
        calling_ae: the requestor's AE title.
        address: the requestor's IP address.
    """

    kind: int | None
    primary: bytes = field(repr=False)
    secondary: bytes = field(repr=False)
    positive_response: bool
    calling_ae: str
    address: str

    @property
    def username(self) -> str | None:
        """The username of kinds 1 and 2 (decoded as UTF-8), else None."""
        if self.kind not in (1, 2):
            return None
        return self.primary.decode("utf-8", "replace")

    @property
    def passcode(self) -> str | None:
        """The passcode of kind 2 (decoded as UTF-8), else None."""
        return self.secondary.decode("utf-8", "replace") if self.kind == 2 else None
