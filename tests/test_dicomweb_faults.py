"""The DICOMweb transport against an in-process HTTP peer that misbehaves on purpose.

Each fault gives a typed error of aiodicomnet (never an httpx exception),
loses nothing that arrived, and leaves no socket or thread behind.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import ssl
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trustme
from anyio.abc import SocketStream

import aiodicomnet as adn
from aiodicomnet.query import DateRange, Query, UIDList
from tests.data import make_series
from tests.peers.http_faults import (
    MULTIPART,
    Request,
    chunk,
    chunked_start,
    dicom_bytes,
    http_peer,
    multipart_body,
    respond,
    respond_json,
    series_json,
)
from tests.peers.inprocess import closed_port

FAST = adn.Timeouts(connect=2, acse=2, dimse=2, network=10, cancel=1)

SERIES = make_series(3, patient_id="FAULT01", rows=4, columns=4)
STUDY_UID = str(SERIES[0].StudyInstanceUID)
SERIES_UID = str(SERIES[0].SeriesInstanceUID)
PARTS = [dicom_bytes(ds) for ds in SERIES]
RETRIEVE = Query.series(SeriesInstanceUID=SERIES_UID)
#: The first part whole (its end known: the next delimiter follows), the second begun.
ONE_AND_A_HALF = multipart_body(PARTS)[: len(multipart_body(PARTS[:1], close=False)) + 300]


def _not_httpx(exc: BaseException) -> None:
    """Neither the error nor anything it wraps as its cause leaks httpx's types."""
    assert isinstance(exc, adn.DicomError)
    assert not isinstance(exc, httpx.HTTPError)


async def _qido_then(request: Request, stream: SocketStream, count: int = 3) -> bool:
    """Answer the QIDO-RS series search of a retrieve; False for other requests."""
    if request.path.endswith("/series"):
        await respond_json(stream, series_json(STUDY_UID, SERIES_UID, count))
        return True
    return False


# -- status codes --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_unauthorised_is_an_auth_error(status: int, no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        await respond(stream, status, b"go away", "text/plain")

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        node = adn.Node.web(peer.url, auth=("user", "wrong"))
        with pytest.raises(adn.AuthError) as info:
            await client.find(node, Query.study(PatientID="X"))
    assert info.value.status_code == status
    assert info.value.node == node
    assert "go away" in str(info.value)
    _not_httpx(info.value)
    assert peer.requests[0].headers["authorization"] == "Basic " + base64.b64encode(
        b"user:wrong"
    ).decode("ascii")


async def test_expired_token_is_refreshed_once(no_leaks: Any) -> None:
    tokens = iter(["expired", "fresh", "never-asked"])
    asked: list[str] = []

    async def token() -> str:
        asked.append(value := next(tokens))
        return value

    async def handler(request: Request, stream: SocketStream) -> None:
        if request.headers.get("authorization") == "Bearer fresh":
            await respond_json(stream, [])
        else:
            await respond(stream, 401)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        node = adn.Node.web(peer.url, auth=token)
        assert await client.find(node, Query.study(PatientID="X")) == []
        assert await client.find(node, Query.study(PatientID="Y")) == []
    assert asked == ["expired", "fresh"]
    assert [r.headers["authorization"] for r in peer.requests] == [
        "Bearer expired",
        "Bearer fresh",
        "Bearer fresh",
    ]


async def test_server_error_and_not_found(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        if request.path.endswith("/studies"):
            await respond(stream, 500, b"database is locked", "text/plain")
        else:
            await respond(stream, 404)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        node = adn.Node.web(peer.url)
        with pytest.raises(adn.ServerError) as server:
            await client.find(node, Query.study(PatientID="X"))
        with pytest.raises(adn.NotFound) as missing:
            await client.find(node, Query.series(PatientID="X"))
    assert server.value.status_code == 500 and "database is locked" in str(server.value)
    assert missing.value.status_code == 404
    _not_httpx(server.value)


async def test_connection_refused(no_leaks: Any) -> None:
    node = adn.Node.web(f"http://127.0.0.1:{closed_port()}/dicom-web")
    async with adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.ConnectError) as info:
            await client.echo(node)
    _not_httpx(info.value)


# -- QIDO-RS -------------------------------------------------------------------------------


async def test_query_parameters_on_the_wire(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        await respond_json(stream, [])

    query = Query.study(
        PatientName="Müller^J*",
        StudyDate=DateRange("20240101", None),
        StudyInstanceUID=UIDList("1.2.3", "1.2.4"),
        ModalitiesInStudy="CT",
    )
    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        await client.find(adn.Node.web(peer.url), query, fuzzy=True)
    [request] = peer.requests
    assert request.path == "/dicom-web/studies"
    params = request.query
    assert ("00100010", "Müller^J*") in params
    assert ("00080020", "20240101-") in params
    assert ("0020000D", "1.2.3,1.2.4") in params
    assert ("00080061", "CT") in params
    assert ("fuzzymatching", "true") in params
    assert ("limit", "100") in params and ("offset", "0") in params
    included = {v for k, v in params if k == "includefield"}
    assert {"00081030", "00100020", "00201208"} <= included  # description, id, count
    # Wildcards and name separators travel as they are; UTF-8 percent-encoded.
    assert "00100010=M%C3%BCller^J*" in request.raw_query
    assert request.headers["accept"] == "application/dicom+json"


async def test_fuzzy_matching_needs_a_web_node() -> None:
    async with adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.QueryError):
            client.find(adn.Node("X", "127.0.0.1", 104), Query.study(PatientName="A"), fuzzy=True)


async def test_paging_follows_offset_until_a_short_page(no_leaks: Any) -> None:
    uids = [f"1.2.{i}" for i in range(7)]

    async def handler(request: Request, stream: SocketStream) -> None:
        params = dict(request.query)
        start, size = int(params["offset"]), int(params["limit"])
        page = uids[start : start + size]
        await respond_json(stream, [{"0020000D": {"vr": "UI", "Value": [u]}} for u in page])

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        found = await client.find(adn.Node.web(peer.url, page_size=3), Query.study())
    assert [str(ds.StudyInstanceUID) for ds in found] == uids
    assert [dict(r.query)["offset"] for r in peer.requests] == ["0", "3", "6"]


async def test_server_ignoring_offset_is_refused_not_looped(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        await respond_json(
            stream, [{"0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(3)]
        )

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.ProtocolError, match="ignores offset"):
            await client.find(adn.Node.web(peer.url, page_size=3), Query.study())
    assert len(peer.requests) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"<html>login</html>", "text/html", "expected application/dicom\\+json"),
        (b"[{not json", "application/dicom+json", "not valid JSON"),
        (b'{"00100010": 1}', "application/dicom+json", "expected a JSON array"),
        (b'[{"00100010": {"vr": "PN", "Value": 7}}]', "application/dicom+json", "malformed"),
    ],
)
async def test_malformed_qido_answers(
    body: bytes, content_type: str, match: str, no_leaks: Any
) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        await respond(stream, 200, body, content_type)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.ProtocolError, match=match) as info:
            await client.find(adn.Node.web(peer.url), Query.study())
    _not_httpx(info.value)


async def test_dicom_json_person_names_and_bulk_data(no_leaks: Any) -> None:
    doc = [
        {
            "00100010": {
                "vr": "PN",
                "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
            },
            "00091010": {"vr": "OB", "InlineBinary": base64.b64encode(b"\x01\x02").decode()},
            "7FE00010": {"vr": "OW", "BulkDataURI": "http://example.invalid/bulk/1"},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        }
    ]

    async def handler(request: Request, stream: SocketStream) -> None:
        await respond_json(stream, doc)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        [ds] = await client.find(adn.Node.web(peer.url), Query.study())
    assert ds.PatientName.alphabetic == "Yamada^Tarou"
    assert ds.PatientName.ideographic == "山田^太郎"
    assert ds[0x00091010].value == b"\x01\x02"
    assert ds.bulk_data_uris == {"7FE00010": "http://example.invalid/bulk/1"}
    assert ds.QueryRetrieveLevel == "STUDY"


# -- WADO-RS -------------------------------------------------------------------------------


async def test_retrieve_reads_parts_and_checks_the_count(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        if not await _qido_then(request, stream, count=3):
            await respond(stream, 200, multipart_body(PARTS[:2]), MULTIPART)

    progress: list[adn.Progress] = []
    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.IncompleteRetrieve) as info:
            await client.retrieve(adn.Node.web(peer.url), RETRIEVE, on_progress=progress.append)
    assert (info.value.expected, info.value.received) == (3, 2)
    assert "QIDO-RS listed" in str(info.value)
    assert [i.sop_instance_uid for i in info.value.partial] == [
        ds.SOPInstanceUID for ds in SERIES[:2]
    ]
    assert progress[-1].done and not progress[-1].ok
    wado = peer.requests[1]
    assert wado.path == f"/dicom-web/studies/{STUDY_UID}/series/{SERIES_UID}"
    assert "transfer-syntax=*" in wado.headers["accept"]


async def test_retrieve_refused_part_counts_as_failed(no_leaks: Any) -> None:
    broken = PARTS[1][:-200]  # cut short: the receive path refuses it

    async def handler(request: Request, stream: SocketStream) -> None:
        if not await _qido_then(request, stream, count=3):
            body = multipart_body([PARTS[0], broken, PARTS[2]])
            await respond(stream, 200, body, MULTIPART)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        got = []
        with pytest.raises(adn.IncompleteRetrieve) as info:
            async with client.retrieve(adn.Node.web(peer.url), RETRIEVE) as instances:
                async for instance in instances:
                    got.append(instance.sop_instance_uid)
    assert got == [SERIES[0].SOPInstanceUID, SERIES[2].SOPInstanceUID]
    assert info.value.failed == 1
    assert info.value.failed_instances == (SERIES[1].SOPInstanceUID,)


async def test_truncated_multipart(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        if not await _qido_then(request, stream):
            body = multipart_body(PARTS, close=False)[:-1000]  # complete HTTP, cut multipart
            await respond(stream, 200, body, MULTIPART)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        got = []
        with pytest.raises(adn.ProtocolError, match="truncated") as info:
            async with client.retrieve(adn.Node.web(peer.url), RETRIEVE) as instances:
                async for instance in instances:
                    got.append(instance.sop_instance_uid)
    assert got == [SERIES[0].SOPInstanceUID, SERIES[1].SOPInstanceUID]
    _not_httpx(info.value)


async def test_server_failing_in_the_middle_of_the_stream(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        if not await _qido_then(request, stream):
            await chunked_start(stream, MULTIPART)
            await stream.send(chunk(ONE_AND_A_HALF))
            # The server fails: an error page instead of the next chunk, then it hangs up.
            await stream.send(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        got = []
        with pytest.raises((adn.ProtocolError, adn.AssociationAborted)) as info:
            async with client.retrieve(adn.Node.web(peer.url), RETRIEVE) as instances:
                async for instance in instances:
                    got.append(instance.sop_instance_uid)
    assert got == [SERIES[0].SOPInstanceUID]
    _not_httpx(info.value)


async def test_wrong_content_type(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        if not await _qido_then(request, stream):
            await respond(stream, 200, PARTS[0], "application/dicom")

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.ProtocolError, match="multipart/related") as info:
            await client.retrieve(adn.Node.web(peer.url), RETRIEVE)
    _not_httpx(info.value)


async def test_server_that_stops_answering_times_out(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        if not await _qido_then(request, stream):
            await chunked_start(stream, MULTIPART)
            await stream.send(chunk(ONE_AND_A_HALF))
            await anyio.sleep_forever()  # alive, silent

    timeouts = FAST.with_(dimse=0.5)
    async with http_peer(handler) as peer, adn.Client(timeouts=timeouts) as client:
        with pytest.raises(adn.DimseTimeout) as info:
            await client.retrieve(adn.Node.web(peer.url), RETRIEVE)
    assert info.value.timeout == "dimse" and info.value.seconds == 0.5
    assert isinstance(info.value, TimeoutError)
    assert [i.sop_instance_uid for i in info.value.partial] == [SERIES[0].SOPInstanceUID]


async def test_cancelling_a_retrieve_closes_the_stream(no_leaks: Any) -> None:
    closed = anyio.Event()

    async def handler(request: Request, stream: SocketStream) -> None:
        if not await _qido_then(request, stream):
            await chunked_start(stream, MULTIPART)
            await stream.send(chunk(ONE_AND_A_HALF))
            # receive() returns (or raises) when the client closes the connection.
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()
            closed.set()

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        got = []
        with anyio.CancelScope() as scope:
            async with client.retrieve(adn.Node.web(peer.url), RETRIEVE) as instances:
                async for instance in instances:
                    got.append(instance)
                    scope.cancel()
        assert scope.cancelled_caught
        with anyio.fail_after(10):
            await closed.wait()
    assert len(got) == 1


# -- STOW-RS -------------------------------------------------------------------------------


def _stow_answer(stored: list[str], failed: dict[str, int]) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    if stored:
        answer["00081199"] = {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [u]}} for u in stored],
        }
    if failed:
        answer["00081198"] = {
            "vr": "SQ",
            "Value": [
                {"00081155": {"vr": "UI", "Value": [u]}, "00081197": {"vr": "US", "Value": [c]}}
                for u, c in failed.items()
            ],
        }
    return answer


async def test_store_reads_each_outcome_and_sends_valid_multipart(no_leaks: Any) -> None:
    uids = [str(ds.SOPInstanceUID) for ds in SERIES]

    async def handler(request: Request, stream: SocketStream) -> None:
        await respond_json(stream, _stow_answer(uids[:2], {uids[2]: 0xA700}), status=409)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        result = await client.store(adn.Node.web(peer.url), SERIES)
    assert [o.status for o in result.outcomes] == [0x0000, 0x0000, 0xA700]
    assert not result.ok and result.failed[0].sop_instance_uid == uids[2]
    [request] = peer.requests
    assert request.method == "POST" and request.path == "/dicom-web/studies"
    content_type = request.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert int(request.headers["content-length"]) == len(request.body)
    # The body reads back, with the multipart parser of the standard library, as the files.
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.body
    )
    payloads = [part.get_payload(decode=True) for part in message.get_payload()]
    assert payloads == PARTS


async def test_store_auth_error_keeps_every_outcome(no_leaks: Any) -> None:
    async def handler(request: Request, stream: SocketStream) -> None:
        await respond(stream, 401)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.AuthError) as info:
            await client.store(adn.Node.web(peer.url, auth="token"), SERIES)
    partial = info.value.partial
    assert isinstance(partial, adn.StoreResult) and len(partial) == 3
    assert all(o.status is None for o in partial.outcomes)
    assert peer.requests[0].headers["authorization"] == "Bearer token"


async def test_one_failing_series_of_a_study_fails_the_retrieve_typed(no_leaks: Any) -> None:
    other = "1.2.826.0.1.3680043.10.1455.999"

    async def handler(request: Request, stream: SocketStream) -> None:
        if request.path.endswith("/series"):
            both = series_json(STUDY_UID, SERIES_UID, 3) + series_json(STUDY_UID, other, 1)
            await respond_json(stream, both)
        elif request.path.endswith(other):
            await respond(stream, 503, b"overloaded", "text/plain")
        else:
            await respond(stream, 200, multipart_body(PARTS), MULTIPART)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        with pytest.raises(adn.ServerError) as info:
            await client.retrieve(adn.Node.web(peer.url), Query.study(StudyInstanceUID=STUDY_UID))
    assert info.value.status_code == 503
    assert len(peer.requests) == 3  # the search, then both series at once


# -- TLS, extra headers, service URLs -------------------------------------------------------


async def _empty(request: Request, stream: SocketStream) -> None:
    await respond_json(stream, [])


async def _series(request: Request, stream: SocketStream) -> None:
    if not await _qido_then(request, stream):
        await respond(stream, 200, multipart_body(PARTS), MULTIPART)


async def test_tls_server_verification(tmp_path: Path, no_leaks: Any) -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with http_peer(_series, tls=server) as peer, adn.Client(timeouts=FAST) as client:
        assert peer.url.startswith("https://")
        trusted = adn.Node.web(peer.url, verify=str(bundle))
        assert len(await client.find(trusted, Query.series())) == 1
        assert len(await client.retrieve(trusted, RETRIEVE)) == 3  # WADO-RS: its own client
        with pytest.raises(adn.ConnectError, match="CERTIFICATE_VERIFY_FAILED") as info:
            await client.find(adn.Node.web(peer.url), Query.study())  # the system's CAs
        _not_httpx(info.value)
        insecure = adn.Node.web(peer.url, verify=False)
        assert len(await client.find(insecure, Query.series())) == 1


async def test_tls_client_certificate(tmp_path: Path, no_leaks: Any) -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED  # no certificate, no service
    bundle, mine = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(bundle))
    ca.issue_cert("workstation@example.org").private_key_and_cert_chain_pem.write_to_path(str(mine))
    async with http_peer(_empty, tls=server) as peer, adn.Client(timeouts=FAST) as client:
        node = adn.Node.web(peer.url, verify=str(bundle), cert=str(mine))
        assert await client.find(node, Query.study()) == []
        with pytest.raises(adn.DicomError) as info:
            await client.find(adn.Node.web(peer.url, verify=str(bundle)), Query.study())
        _not_httpx(info.value)
    assert len(peer.requests) == 1  # the request without a certificate never got through


async def test_headers_and_a_separate_qido_url(no_leaks: Any) -> None:
    async with http_peer(_empty) as peer, adn.Client(timeouts=FAST) as client:
        node = adn.Node.web(
            peer.url,
            qido_url=peer.url.replace("/dicom-web", "/qido"),
            headers={"X-Tenant": "radiology"},
        )
        await client.echo(node)
        await client.find(node, Query.series(Modality="CT"))
    assert [r.path for r in peer.requests] == ["/qido/studies", "/qido/series"]
    assert all(r.headers["x-tenant"] == "radiology" for r in peer.requests)
    assert all(r.headers["user-agent"] == "aiodicomnet" for r in peer.requests)


async def test_token_expiring_between_search_and_retrieve(no_leaks: Any) -> None:
    tokens = iter(["first", "second"])

    def token() -> str:  # a plain function works too
        return next(tokens)

    async def handler(request: Request, stream: SocketStream) -> None:
        auth = request.headers.get("authorization")
        if await _qido_then(request, stream):
            return
        if auth == "Bearer second":
            await respond(stream, 200, multipart_body(PARTS), MULTIPART)
        else:
            await respond(stream, 401)

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        got = await client.retrieve(adn.Node.web(peer.url, auth=token), RETRIEVE)
    assert [i.sop_instance_uid for i in got] == [ds.SOPInstanceUID for ds in SERIES]
    assert [r.headers["authorization"] for r in peer.requests] == [
        "Bearer first",  # QIDO-RS
        "Bearer first",  # WADO-RS: 401
        "Bearer second",  # again, refreshed
    ]


async def test_a_study_series_are_fetched_at_once(no_leaks: Any) -> None:
    """Two series of a study are read in parallel (concurrency=2): each response waits
    until both requests are in flight, which never happens if they are sequential."""
    other = make_series(2, patient_id="FAULT01", study_uid=STUDY_UID, rows=4, columns=4)
    both_in_flight = anyio.Event()
    active = 0
    seen = 0

    async def handler(request: Request, stream: SocketStream) -> None:
        nonlocal active, seen
        if request.path.endswith("/series"):
            two = series_json(STUDY_UID, SERIES_UID, 3)
            two += series_json(STUDY_UID, str(other[0].SeriesInstanceUID), 2)
            await respond_json(stream, two)
            return
        active += 1
        seen = max(seen, active)
        if active == 2:
            both_in_flight.set()
        with anyio.fail_after(10):
            await both_in_flight.wait()
        parts = PARTS if request.path.endswith(SERIES_UID) else [dicom_bytes(d) for d in other]
        await respond(stream, 200, multipart_body(parts), MULTIPART)
        active -= 1

    async with http_peer(handler) as peer, adn.Client(timeouts=FAST) as client:
        node = adn.Node.web(peer.url, concurrency=2)
        got = await client.retrieve(node, Query.study(StudyInstanceUID=STUDY_UID))
    assert len(got) == 5 and seen == 2
