"""DICOM over TLS in every role, against DCMTK's TLS tools and Orthanc's DICOM TLS.

Certificates are made here with trustme (a CA, a server certificate for
127.0.0.1 and localhost, a client certificate; a second CA nobody trusts; an
expired and a wrong-host certificate).  Real peers: DCMTK ``storescp``,
``storescu`` and ``echoscu`` with ``+tls``, and an Orthanc of its own with
``DicomTlsEnabled`` (mutual TLS: it requires a client certificate).  Our own
StorageServer and Archive serve TLS where the fault is on the server side
(an expired or wrong-host certificate).
"""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import trustme

import aiodicomnet as adn
from aiodicomnet import Archive, Client, Node, Query, StorageServer, Timeouts, TlsError
from aiodicomnet.cli import main
from aiodicomnet.config import Config, ConfigError
from tests.data import make_series, write_files
from tests.peers.dcmtk import StoreScp, dcmtk_tool
from tests.peers.orthanc import OrthancServer
from tests.peers.util import free_port, wait_for_port

HOST = "127.0.0.1"
SHORT = Timeouts(connect=10, acse=10, dimse=30, network=30)


@dataclass
class Pki:
    """PEM files for one test module: a CA, a server and a client certificate, and faulty ones."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA nobody here trusts
    stranger_cert: Path  # a client certificate (and key) signed by other_ca
    expired_cert: Path  # both certificate and key
    wrong_host_cert: Path  # for other.example.org only; certificate and key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    key_type = trustme.KeyType.RSA  # what DCMTK's and Orthanc's defaults all accept
    server = ca.issue_cert(HOST, "localhost", key_type=key_type)
    client = ca.issue_cert("adn-client.example.org", common_name="ADNCLIENT", key_type=key_type)
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = ca.issue_cert(
        HOST,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
        key_type=key_type,
    )
    wrong_host = ca.issue_cert("other.example.org", key_type=key_type)
    paths = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
        stranger_cert=directory / "stranger.pem",
        expired_cert=directory / "expired.pem",
        wrong_host_cert=directory / "wrong-host.pem",
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    other = trustme.CA()
    other.cert_pem.write_to_path(str(paths.other_ca))
    stranger = other.issue_cert("stranger.example.org", key_type=key_type)
    stranger.private_key_and_cert_chain_pem.write_to_path(str(paths.stranger_cert))
    expired.private_key_and_cert_chain_pem.write_to_path(str(paths.expired_cert))
    wrong_host.private_key_and_cert_chain_pem.write_to_path(str(paths.wrong_host_cert))
    return paths


def client_tls(pki: Pki, *, cert: bool = True, **kwargs: Any) -> ssl.SSLContext:
    if cert:
        kwargs.update(cert=pki.client_cert, key=pki.client_key)
    return adn.tls.client_context(ca=kwargs.pop("ca", pki.ca), **kwargs)


def server_tls(pki: Pki, *, mutual: bool = False) -> ssl.SSLContext:
    return adn.tls.server_context(
        cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca if mutual else None
    )


def dcmtk_tls_args(pki: Pki) -> list[str]:
    """DCMTK options: TLS with our client certificate, trusting our CA."""
    return ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]


@pytest.fixture(scope="module")
def tls_storescp(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[StoreScp]:
    """DCMTK storescp over TLS, requiring a client certificate signed by our CA."""
    scp = StoreScp(
        tmp_path_factory.mktemp("tls-storescp"),
        ae_title="TLSSCP",
        extra_args=[
            "+tls", str(pki.server_key), str(pki.server_cert),
            "+cf", str(pki.ca),
            "--require-peer-cert",
        ],
    )  # fmt: skip
    with scp:
        yield scp


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[OrthancServer]:
    """An Orthanc of its own with DICOM TLS on, requiring client certificates."""
    server = OrthancServer(
        tmp_path_factory.mktemp("tls-orthanc"),
        ae_title="TLSORTHANC",
        config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.server_cert),
            "DicomTlsPrivateKey": str(pki.server_key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
        },
    )
    with server:
        yield server


def files(directory: Path, n: int = 3) -> tuple[list[Path], set[str], str]:
    """``n`` generated instances of one study written to ``directory``: paths, UIDs, study."""
    directory.mkdir(parents=True, exist_ok=True)
    datasets = make_series(n)
    uids = {str(ds.SOPInstanceUID) for ds in datasets}
    return write_files(directory, datasets), uids, str(datasets[0].StudyInstanceUID)


# -- the helpers -----------------------------------------------------------------------


def test_contexts_follow_the_bcp195_profile(pki: Pki) -> None:
    client = client_tls(pki)
    server = server_tls(pki, mutual=True)
    for context in (client, server):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_COMPRESSION
        names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert names and all(("GCM" in n or "CHACHA20" in n) and "DHE" in n for n in names)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert server_tls(pki).verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="without its certificate"):
        adn.tls.client_context(key=pki.client_key)
    with pytest.raises(ValueError, match=r"ssl\.SSLContext"):
        Node("X", HOST, 104, tls="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers > 1 with tls"):
        StorageServer("X", tls=server, workers=2)


# -- our client -> DCMTK storescp +tls ---------------------------------------------------


@pytest.mark.dcmtk
async def test_store_to_dcmtk_over_mutual_tls(
    tls_storescp: StoreScp, pki: Pki, tmp_path: Path, no_leaks: Any
) -> None:
    paths, uids, _ = files(tmp_path)
    node = Node("TLSSCP", HOST, tls_storescp.port, tls=client_tls(pki))
    async with Client("ADNTLS", timeouts=SHORT) as client:
        await client.echo(node)
        result = await client.store(node, paths)
    assert result.ok and {o.sop_instance_uid for o in result.succeeded} == uids
    received = {p.name.split(".", 1)[1].removesuffix(".dcm") for p in tls_storescp.received_files()}
    assert uids <= received


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # DCMTK sends its chain with the CA: the unknown root is the complaint
        ("wrong-ca", "certificate verify failed: self-signed certificate in certificate chain"),
        # TLS 1.3: the refusal arrives as an alert after our side of the handshake
        ("no-client-cert", "the peer requires a client certificate and we sent none"),
    ],
)
async def test_dcmtk_tls_refusals_are_tls_errors(
    tls_storescp: StoreScp, pki: Pki, kind: str, expected: str, no_leaks: Any
) -> None:
    if kind == "wrong-ca":
        context = client_tls(pki, ca=pki.other_ca)
    else:
        context = client_tls(pki, cert=False)
    node = Node("TLSSCP", HOST, tls_storescp.port, tls=context)
    async with Client("ADNTLS", timeouts=SHORT) as client:
        with pytest.raises(TlsError, match=expected) as info:
            await client.echo(node)
    assert info.value.node == node
    async with Client("ADNTLS", timeouts=SHORT) as client:  # the peer is still fine
        await client.echo(Node("TLSSCP", HOST, tls_storescp.port, tls=client_tls(pki)))


@pytest.mark.dcmtk
async def test_plain_client_to_dcmtk_tls_port(tls_storescp: StoreScp, no_leaks: Any) -> None:
    async with Client("ADNTLS", timeouts=SHORT) as client:
        with pytest.raises(adn.AssociationError) as info:
            await client.echo(Node("TLSSCP", HOST, tls_storescp.port))
    assert not isinstance(info.value, adn.DicomTimeout)


@pytest.mark.dcmtk
async def test_tls_client_to_plain_dcmtk_port(storescp: StoreScp, pki: Pki, no_leaks: Any) -> None:
    node = Node(storescp.ae_title, HOST, storescp.port, tls=client_tls(pki))
    async with Client("ADNTLS", timeouts=SHORT) as client:
        with pytest.raises(TlsError):
            await client.echo(node)
        await client.echo(storescp.node)  # the plain peer took no harm


# -- faulty server certificates (our own TLS server presents them) -----------------------


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ("expired_cert", "certificate verify failed: certificate has expired"),
        ("wrong_host_cert", "certificate verify failed: IP address mismatch"),
    ],
)
async def test_bad_server_certificates(pki: Pki, cert: str, expected: str, no_leaks: Any) -> None:
    context = adn.tls.server_context(cert=getattr(pki, cert))
    async with (
        StorageServer("BADCERT", tls=context, timeouts=SHORT) as server,
        Client("ADNTLS", timeouts=SHORT) as client,
    ):
        node = Node("BADCERT", HOST, server.port, tls=client_tls(pki))
        with pytest.raises(TlsError, match=expected) as info:
            await client.echo(node)
        assert info.value.reason == "CERTIFICATE_VERIFY_FAILED"
        if cert == "wrong_host_cert":  # without the host name check it is accepted
            relaxed = client_tls(pki, check_hostname=False)
            await client.echo(Node("BADCERT", HOST, server.port, tls=relaxed))


# -- DCMTK -> our StorageServer / Archive over TLS ---------------------------------------


@pytest.mark.dcmtk
async def test_storescu_over_mutual_tls_to_our_server(
    pki: Pki, tmp_path: Path, no_leaks: Any
) -> None:
    paths, uids, _ = files(tmp_path)
    async with StorageServer("ADNSCP", tls=server_tls(pki, mutual=True), timeouts=SHORT) as server:
        done = await anyio.to_thread.run_sync(
            lambda: dcmtk_tool(
                "storescu", *dcmtk_tls_args(pki), "-aec", "ADNSCP", HOST, str(server.port), *paths
            )
        )
        assert done.returncode == 0, done.stderr
        got = set()
        for _ in uids:
            got.add((await server.__anext__()).sop_instance_uid)
    assert got == uids


@pytest.mark.dcmtk
async def test_our_server_refuses_what_is_not_tls_or_has_no_certificate(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture, no_leaks: Any
) -> None:
    paths, _, _ = files(tmp_path, 1)
    caplog.set_level(logging.INFO, logger="aiodicomnet.server")
    async with StorageServer(
        "ADNSCP", tls=server_tls(pki, mutual=True), timeouts=SHORT, stream=False
    ) as server:
        port = str(server.port)
        plain = await anyio.to_thread.run_sync(
            lambda: dcmtk_tool("storescu", "-aec", "ADNSCP", HOST, port, *paths)
        )
        anonymous = await anyio.to_thread.run_sync(
            lambda: dcmtk_tool(
                "storescu", "+tla", "+cf", str(pki.ca), "-aec", "ADNSCP", HOST, port, *paths
            )
        )
        # and the server still serves a proper TLS client
        async with Client("ADNTLS", timeouts=SHORT) as client:
            await client.echo(Node("ADNSCP", HOST, server.port, tls=client_tls(pki)))
    assert plain.returncode != 0 and anonymous.returncode != 0
    text = caplog.text
    assert "does not speak TLS" in text
    assert "the client sent no client certificate" in text


async def test_a_stalled_handshake_is_closed_at_the_acse_timeout(
    pki: Pki, caplog: pytest.LogCaptureFixture, no_leaks: Any
) -> None:
    caplog.set_level(logging.INFO, logger="aiodicomnet.server")
    timeouts = Timeouts(connect=5, acse=0.5, dimse=5, network=5)
    async with StorageServer("ADNSCP", tls=server_tls(pki), timeouts=timeouts) as server:

        def connect_and_wait() -> bytes:
            with socket.create_connection((HOST, server.port), timeout=30) as sock:
                return sock.recv(1)  # nothing sent: the server must close

        assert await anyio.to_thread.run_sync(connect_and_wait) == b""
        async with Client("ADNTLS", timeouts=SHORT) as client:  # others still get in
            await client.echo(Node("ADNSCP", HOST, server.port, tls=client_tls(pki)))
    assert "did not finish the TLS handshake" in caplog.text


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_server_refuses_tls_below_1_2(
    pki: Pki, caplog: pytest.LogCaptureFixture, no_leaks: Any
) -> None:
    caplog.set_level(logging.INFO, logger="aiodicomnet.server")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki.ca)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    async with StorageServer("ADNSCP", tls=server_tls(pki), timeouts=SHORT) as server:

        def handshake() -> None:
            with (
                socket.create_connection((HOST, server.port), timeout=30) as raw,
                old.wrap_socket(raw, server_hostname=HOST),
            ):
                pass

        with pytest.raises(ssl.SSLError):
            await anyio.to_thread.run_sync(handshake)
    assert "no TLS version in common" in caplog.text


async def test_plain_client_to_our_tls_server(
    pki: Pki, caplog: pytest.LogCaptureFixture, no_leaks: Any
) -> None:
    """Our TLS server answers plain DICOM with a TLS alert in clear: the client says why."""
    caplog.set_level(logging.INFO, logger="aiodicomnet.server")
    async with (
        StorageServer("ADNSCP", tls=server_tls(pki), timeouts=SHORT) as server,
        Client("ADNTLS", timeouts=SHORT) as client,
    ):
        with pytest.raises(TlsError, match="expects DICOM over TLS on this port"):
            await client.echo(Node("ADNSCP", HOST, server.port))
        await client.echo(Node("ADNSCP", HOST, server.port, tls=client_tls(pki)))
    assert "the peer does not speak TLS on this port" in caplog.text


async def test_our_server_refuses_a_client_certificate_of_another_ca(
    pki: Pki, caplog: pytest.LogCaptureFixture, no_leaks: Any
) -> None:
    caplog.set_level(logging.INFO, logger="aiodicomnet.server")
    stranger = adn.tls.client_context(ca=pki.ca, cert=pki.stranger_cert)
    async with (
        StorageServer("ADNSCP", tls=server_tls(pki, mutual=True), timeouts=SHORT) as server,
        Client("ADNTLS", timeouts=SHORT) as client,
    ):
        with pytest.raises(TlsError, match="the peer refused our certificate") as info:
            await client.echo(Node("ADNSCP", HOST, server.port, tls=stranger))
        assert info.value.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert "certificate verify failed" in caplog.text


async def test_a_peer_that_never_answers_the_handshake(pki: Pki, no_leaks: Any) -> None:
    """A listening socket nobody accepts from: TCP connects, the handshake gets no answer."""
    timeouts = Timeouts(connect=0.5, acse=5, dimse=5, network=5)
    with socket.create_server((HOST, 0)) as silent:
        node = Node("SILENT", HOST, silent.getsockname()[1], tls=client_tls(pki))
        async with Client("ADNTLS", timeouts=timeouts) as client:
            with pytest.raises(TlsError, match="the TLS handshake timed out") as info:
                await client.echo(node)
    assert info.value.reason is None


async def test_tls_client_to_our_plain_server(
    pki: Pki, caplog: pytest.LogCaptureFixture, no_leaks: Any
) -> None:
    caplog.set_level(logging.INFO, logger="aiodicomnet.server")
    async with (
        StorageServer("ADNSCP", timeouts=SHORT) as server,
        Client("ADNTLS", timeouts=SHORT) as client,
    ):
        with pytest.raises(TlsError, match="does not speak TLS"):
            await client.echo(Node("ADNSCP", HOST, server.port, tls=client_tls(pki)))
        await client.echo(server.node)
    assert "opened a TLS handshake on a port without TLS" in caplog.text


@pytest.mark.dcmtk
async def test_echoscu_and_archive_move_over_tls(pki: Pki, tmp_path: Path, no_leaks: Any) -> None:
    paths, uids, study = files(tmp_path / "in")
    async with (
        StorageServer("ADNDEST", tls=server_tls(pki, mutual=True), timeouts=SHORT) as dest,
        Archive(
            "ARCHIVE",
            tmp_path / "archive",
            tls=server_tls(pki, mutual=True),
            timeouts=SHORT,
            destinations={"ADNDEST": Node("ADNDEST", HOST, dest.port, tls=client_tls(pki))},
        ) as archive,
        Client("ADNTLS", timeouts=SHORT) as client,
    ):
        port = str(archive.port)
        echo = await anyio.to_thread.run_sync(
            lambda: dcmtk_tool("echoscu", *dcmtk_tls_args(pki), "-aec", "ARCHIVE", HOST, port)
        )
        assert echo.returncode == 0, echo.stderr
        node = Node("ARCHIVE", HOST, archive.port, tls=client_tls(pki))
        assert (await client.store(node, paths)).ok
        got = await client.retrieve(node, Query.study(StudyInstanceUID=study), via=dest)
        assert {i.sop_instance_uid for i in got} == uids
        # a destination that needs TLS but is reached without it fails the C-MOVE
        archive.add_destination("ADNDEST", Node("ADNDEST", HOST, dest.port))
        with pytest.raises(adn.DicomError):
            await client.retrieve(node, Query.study(StudyInstanceUID=study), via=dest)


@pytest.mark.dcmtk
async def test_archive_moves_to_dcmtk_storescp_over_mutual_tls(
    tls_storescp: StoreScp, pki: Pki, tmp_path: Path, no_leaks: Any
) -> None:
    paths, uids, study = files(tmp_path / "in")
    destination = Node("TLSSCP", HOST, tls_storescp.port, tls=client_tls(pki))
    async with (
        Archive("ARCHIVE", tmp_path / "archive", timeouts=SHORT) as archive,
        Client("ADNTLS", timeouts=SHORT) as client,
    ):
        archive.add_destination("TLSSCP", destination)
        assert (await client.store(archive.node, paths)).ok
        final = await client.move(archive.node, Query.study(StudyInstanceUID=study), "TLSSCP")
        assert final.done and final.completed == len(uids) and not final.failed
    received = {p.name.split(".", 1)[1].removesuffix(".dcm") for p in tls_storescp.received_files()}
    assert uids <= received


# -- Orthanc's DICOM TLS -------------------------------------------------------------------


@pytest.mark.orthanc
async def test_orthanc_over_mutual_tls(
    tls_orthanc: OrthancServer, pki: Pki, tmp_path: Path, no_leaks: Any
) -> None:
    paths, uids, study = files(tmp_path)
    node = Node("TLSORTHANC", HOST, tls_orthanc.dicom_port, tls=client_tls(pki))
    async with (
        StorageServer("ADNTLSDEST", tls=server_tls(pki, mutual=True), timeouts=SHORT) as scp,
        Client("ADNTLS", timeouts=SHORT) as client,
    ):
        tls_orthanc.rest(
            "PUT",
            "/modalities/adntlsdest",
            {"AET": "ADNTLSDEST", "Host": HOST, "Port": scp.port, "UseDicomTls": True},
        )
        await client.echo(node)
        assert (await client.store(node, paths)).ok
        found = await client.find(node, Query.study(StudyInstanceUID=study))
        assert [str(ds.StudyInstanceUID) for ds in found] == [study]
        got = await client.retrieve(node, Query.study(StudyInstanceUID=study), via=scp)
        assert {i.sop_instance_uid for i in got} == uids
        assert all(i.calling_ae == "TLSORTHANC" for i in got)
        # Orthanc requires a client certificate
        bare = Node("TLSORTHANC", HOST, tls_orthanc.dicom_port, tls=client_tls(pki, cert=False))
        with pytest.raises(TlsError):
            await client.echo(bare)
        # and speaks nothing but TLS on its DICOM port
        with pytest.raises(adn.AssociationError):
            await client.echo(Node("TLSORTHANC", HOST, tls_orthanc.dicom_port))


async def test_nothing_listening_is_a_connect_error_not_a_tls_error(no_leaks: Any) -> None:
    node = Node("NOBODY", HOST, free_port(), tls=adn.tls.client_context())
    async with Client("ADNTLS", timeouts=SHORT) as client:
        with pytest.raises(adn.ConnectError) as info:
            await client.echo(node)
    assert not isinstance(info.value, TlsError)


# -- configuration file and command line ---------------------------------------------------


def test_config_round_trips_tls_nodes(pki: Pki, tmp_path: Path) -> None:
    config = Config.from_toml(
        f"""
        [nodes.pacs]
        ae_title = "TLSSCP"
        host = "127.0.0.1"
        port = 2762
        tls_ca = "{pki.ca}"
        tls_cert = "{pki.client_cert}"
        tls_key = "{pki.client_key}"
        tls_check_hostname = false

        [nodes.plain]
        ae_title = "PLAIN"
        host = "127.0.0.1"
        port = 104
        """
    )
    entry = config.nodes["pacs"]
    assert entry.tls and not entry.tls_check_hostname
    node = config.node("pacs")
    assert isinstance(node, Node) and node.tls is not None
    assert not node.tls.check_hostname and node.tls.verify_mode == ssl.CERT_REQUIRED
    assert isinstance(config.node("plain"), Node) and config.node("plain").tls is None
    again = Config.from_toml(config.to_toml())
    assert again.nodes["pacs"] == entry and not again.nodes["plain"].tls
    # the command line's nodes add writes the same keys
    config.add_node("other", "OTHER@127.0.0.1:2762", tls=True, tls_ca=str(pki.ca))
    assert "tls = true" in config.to_toml()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('tls = "yes"', "tls: expected true or false"),
        ('tls_key = "k.pem"', "tls_key: a TLS key needs its certificate"),
        ('tls_ca = "/nonexistent/ca.pem"', "cannot set up TLS"),
    ],
)
def test_config_tls_errors_name_the_key(table: str, message: str) -> None:
    text = f'[nodes.pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 2762\n{table}\n'
    with pytest.raises(ConfigError, match=message):
        Config.from_toml(text).node("pacs")


@pytest.mark.dcmtk
def test_cli_echo_and_nodes_add_over_tls(
    tls_storescp: StoreScp,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AIODICOMNET_CONFIG", str(tmp_path / "config.toml"))
    spec = f"TLSSCP@{HOST}:{tls_storescp.port}"
    tls = ["--tls-ca", pki.ca, "--tls-cert", pki.client_cert, "--tls-key", pki.client_key]
    assert main(["echo", spec, *map(str, tls)]) == 0
    assert main(["echo", spec, "--tls-ca", str(pki.ca), "--timeout", "10"]) == 3  # no client cert
    assert "TLS" in capsys.readouterr().err
    assert main(["nodes", "add", "scp", spec, *map(str, tls)]) == 0
    assert main(["echo", "scp"]) == 0


@pytest.mark.dcmtk
def test_cli_serve_over_mutual_tls(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIODICOMNET_CONFIG", str(tmp_path / "config.toml"))
    assert main(["serve", "--tls-key", str(pki.server_key)]) == 2  # a key without certificate
    paths, _, _ = files(tmp_path / "send", 2)
    port = free_port()
    serve = [
        "serve", "-aet", "ADNSERVE", "--port", str(port), "--host", HOST,
        "-o", str(tmp_path / "in"), "--count", "2",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca),
    ]  # fmt: skip
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(main(serve)))
    thread.start()
    try:
        wait_for_port(HOST, port, 30)
        sent = dcmtk_tool(
            "storescu", *dcmtk_tls_args(pki), "-aec", "ADNSERVE", HOST, str(port), *paths
        )
        assert sent.returncode == 0, sent.stderr
    finally:
        thread.join(30)
    assert codes == [0]
    received = sorted(p.name for p in (tmp_path / "in").rglob("*.dcm"))
    assert received == sorted(p.name for p in paths)
