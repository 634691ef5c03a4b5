"""DICOM over TLS: :class:`ssl.SSLContext` helpers following the BCP 195 profile of PS3.15.

Every role takes a standard :class:`ssl.SSLContext`: a :class:`~aiodicomnet.Node`
(``Node(..., tls=context)``) for the client and an Archive's C-MOVE
destinations, and ``StorageServer(..., tls=context)`` /
``Archive(..., tls=context)`` for the server side.  Any context works; the two
helpers here build one with the defaults of the *BCP 195 TLS Secure Transport
Connection Profile* (PS3.15 B.9, which follows IETF BCP 195, RFC 7525 /
RFC 9325):

* TLS 1.2 or later only (``minimum_version``): SSL 3, TLS 1.0 and 1.1 are
  refused;
* for TLS 1.2, only ephemeral key exchange (ECDHE, DHE: forward secrecy) with
  authenticated encryption (AES-GCM, ChaCha20-Poly1305): :data:`BCP195_CIPHERS`;
  no RC4, 3DES, CBC, NULL, export or anonymous suites.  TLS 1.3 suites are
  all AEAD and are left as OpenSSL has them;
* no TLS compression (CRIME), no renegotiation by the client;
* the peer's certificate verified against ``ca`` (the system's trust store
  when none is given), and its host name checked by a client unless
  ``check_hostname=False`` (DICOM peers are often reached by an IP address
  their certificate does not name; PS3.15 leaves host name checking to the
  site).

A server asks for a client certificate only when given ``client_ca``
(mutual TLS: ``verify_mode = CERT_REQUIRED``, a client without a certificate
signed by that CA is refused during the handshake).
"""

from __future__ import annotations

import os
import ssl

__all__ = ["BCP195_CIPHERS", "client_context", "describe_error", "server_context"]

#: TLS 1.2 cipher suites allowed (OpenSSL syntax): the BCP 195 recommended
#: suites (ECDHE/DHE with AES-GCM) plus ChaCha20-Poly1305, for RSA and ECDSA keys.
BCP195_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    ]
)

Path = str | os.PathLike[str]


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def client_context(
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    password: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A context for requesting associations (the client, an Archive's C-MOVE).

    Args:
        ca: a PEM file of the certificate authorities to trust for the peer's
            certificate (default: the system's trust store).
        cert: our certificate (PEM; it may hold the key too), for a peer that
            requires client certificates (mutual TLS).
        key: our private key (PEM), if not in ``cert``.
        password: the key's password, if it is encrypted.
        check_hostname: check that the peer's certificate names the node's
            host (a DNS name or IP address in its subjectAltName).

    Raises:
        FileNotFoundError, ssl.SSLError: a file is missing or not a usable PEM.
    """
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else os.fspath(ca)
    )
    context.check_hostname = check_hostname
    if cert is not None:
        context.load_cert_chain(cert, key, password)
    elif key is not None:
        raise ValueError("a TLS key without its certificate (give cert=)")
    return _profile(context)


def server_context(
    *,
    cert: Path,
    key: Path | None = None,
    password: str | None = None,
    client_ca: Path | None = None,
) -> ssl.SSLContext:
    """A context for accepting associations (StorageServer, Archive).

    Args:
        cert: our certificate (PEM, the chain up to the CA; it may hold the key too).
        key: our private key (PEM), if not in ``cert``.
        password: the key's password, if it is encrypted.
        client_ca: require a client certificate signed by one of these CAs
            (PEM): mutual TLS.  Without it clients are not asked for one.

    Raises:
        FileNotFoundError, ssl.SSLError: a file is missing or not a usable PEM.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key, password)
    if client_ca is not None:
        context.load_verify_locations(cafile=os.fspath(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return _profile(context)


def describe_error(exc: BaseException) -> str:
    """What failed in a TLS handshake, in words, from the exception ``ssl`` raised."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {why}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE") or (
            "PACKET_LENGTH_TOO_LONG" in reason
        ):
            return f"the peer does not speak TLS on this port ({reason})"
        if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION"):
            return f"no TLS version in common (we need TLS 1.2 or later: {reason})"
        if reason in ("NO_SHARED_CIPHER", "SSLV3_ALERT_HANDSHAKE_FAILURE"):
            return f"no cipher suite in common, or the peer refused the handshake ({reason})"
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":  # we are the server
            return f"the client sent no client certificate and one is required ({reason})"
        if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
            return f"the peer requires a client certificate and we sent none ({reason})"
        if reason in ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE"):
            return f"the peer refused our certificate ({reason})"
        if reason == "SSLV3_ALERT_CERTIFICATE_EXPIRED":
            return f"the peer refused our certificate as expired ({reason})"
        if isinstance(exc, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
            return "the peer closed the connection during the TLS handshake"
        return f"TLS handshake failed: {reason or exc}"
    if isinstance(exc, TimeoutError):
        return "the TLS handshake timed out"
    if isinstance(exc, ConnectionError):
        return f"the peer closed the connection during the TLS handshake ({exc})"
    return f"TLS handshake failed: {exc}"
