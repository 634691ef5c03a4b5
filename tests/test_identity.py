"""User Identity negotiation: the client's offer, the server's hook, and DCMTK on either side."""

from __future__ import annotations

import threading
from typing import Any

import anyio.to_thread
import pytest

import aiodicomnet as adn
from tests.data import make_series, write_files
from tests.peers.dcmtk import StoreScp, dcmtk_tool


class Door:
    """An ``identify`` hook that records every offer and accepts what ``accept`` says."""

    def __init__(self, accept: Any = True) -> None:
        self.accept = accept
        self.offers: list[adn.IdentityOffer] = []
        self.lock = threading.Lock()

    def __call__(self, offer: adn.IdentityOffer) -> bool | bytes:
        with self.lock:
            self.offers.append(offer)
        verdict: bool | bytes = self.accept(offer) if callable(self.accept) else self.accept
        return verdict


def _node(server: adn.StorageServer, identity: adn.UserIdentity | None) -> adn.Node:
    return adn.Node(server.ae_title, "127.0.0.1", server.port, identity=identity)


# -- values -------------------------------------------------------------------------------


def test_identities_hide_their_secrets() -> None:
    identity = adn.UserIdentity.password("alice", "s3cret", positive_response=True)
    assert (identity.kind, identity.primary, identity.secondary) == (2, b"alice", b"s3cret")
    assert "s3cret" not in repr(identity) and "alice" in repr(identity)
    assert "tok.en.sig" not in repr(adn.UserIdentity.jwt("tok.en.sig"))
    node = adn.Node("PACS", "127.0.0.1", 104, identity=identity)
    assert "s3cret" not in repr(node)


@pytest.mark.parametrize(
    "make",
    [
        lambda: adn.UserIdentity.username(""),
        lambda: adn.UserIdentity.password("alice", ""),
        lambda: adn.UserIdentity.jwt("x" * 70000),
        lambda: adn.UserIdentity(7, b"x"),
        lambda: adn.UserIdentity(1, b"alice", b"secondary"),
        lambda: adn.Node("PACS", "127.0.0.1", 104, identity="alice"),  # type: ignore[arg-type]
    ],
)
def test_malformed_identities_are_refused(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_the_hook_runs_in_this_process_only() -> None:
    with pytest.raises(ValueError, match="workers=1"):
        adn.StorageServer("ADNID", identify=Door(), workers=2)


# -- against our own server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "kind", "primary", "secondary"),
    [
        (adn.UserIdentity.username("alice"), 1, b"alice", b""),
        (adn.UserIdentity.password("bob", "pässword"), 2, b"bob", "pässword".encode()),
        (adn.UserIdentity.kerberos(b"\x60\x82ticket"), 3, b"\x60\x82ticket", b""),
        (adn.UserIdentity.saml("<saml:Assertion/>"), 4, b"<saml:Assertion/>", b""),
        (adn.UserIdentity.jwt("eyJh.eyJz.sig"), 5, b"eyJh.eyJz.sig", b""),
    ],
)
async def test_each_kind_reaches_the_hook(
    identity: adn.UserIdentity, kind: int, primary: bytes, secondary: bytes, no_leaks: Any
) -> None:
    door = Door()
    async with (
        adn.StorageServer("ADNID", identify=door) as server,
        adn.Client("ADNUSER") as client,
    ):
        assert await client.verify_identity(_node(server, identity)) is None  # none asked for
    (offer,) = door.offers
    assert (offer.kind, offer.primary, offer.secondary) == (kind, primary, secondary)
    assert offer.calling_ae == "ADNUSER" and offer.address == "127.0.0.1"
    assert not offer.positive_response
    if kind == 2:
        assert (offer.username, offer.passcode) == ("bob", "pässword")


async def test_a_refused_identity_is_a_rejection(no_leaks: Any) -> None:
    door = Door(lambda offer: offer.passcode == "right")
    async with (
        adn.StorageServer("ADNID", identify=door) as server,
        adn.Client("ADNUSER") as client,
    ):
        with pytest.raises(adn.AssociationRejected) as info:
            await client.echo(_node(server, adn.UserIdentity.password("eve", "wrong")))
        assert (info.value.result, info.value.source, info.value.reason) == (1, 1, 1)
        # no identity at all: the hook sees kind None, and refuses it too
        with pytest.raises(adn.AssociationRejected):
            await client.echo(_node(server, None))
        assert await client.echo(_node(server, adn.UserIdentity.password("ann", "right"))) > 0
    assert [o.kind for o in door.offers] == [2, None, 2]


async def test_a_hook_that_raises_rejects(no_leaks: Any) -> None:
    def broken(offer: adn.IdentityOffer) -> bool:
        raise RuntimeError("directory down")

    async with (
        adn.StorageServer("ADNID", identify=broken) as server,
        adn.Client("ADNUSER") as client,
    ):
        with pytest.raises(adn.AssociationRejected):
            await client.echo(_node(server, adn.UserIdentity.username("alice")))


async def test_positive_response_is_read_back(no_leaks: Any) -> None:
    door = Door(lambda offer: b"server-jwt" if offer.kind == 5 else True)
    async with (
        adn.StorageServer("ADNID", identify=door) as server,
        adn.Client("ADNUSER") as client,
    ):
        jwt = adn.UserIdentity.jwt("eyJh.eyJz.sig", positive_response=True)
        assert await client.verify_identity(_node(server, jwt)) == b"server-jwt"
        user = adn.UserIdentity.password("bob", "pw", positive_response=True)
        assert await client.verify_identity(_node(server, user)) == b""
        # the identity is part of the node: a store with it works as usual
        result = await client.store(_node(server, user), make_series(2, patient_id="ID01"))
    assert result.ok
    assert all(o.positive_response for o in door.offers)


async def test_stores_with_an_identity_arrive(no_leaks: Any) -> None:
    door = Door()
    series = make_series(3, patient_id="ID02")
    async with adn.StorageServer("ADNID", identify=door) as server:
        async with adn.Client("ADNUSER") as client:
            result = await client.store(_node(server, adn.UserIdentity.username("tech")), series)
        received = [await server.__anext__() for _ in series]
    assert result.ok
    assert {r.sop_instance_uid for r in received} == {str(ds.SOPInstanceUID) for ds in series}
    assert {o.username for o in door.offers} == {"tech"}


# -- DCMTK ----------------------------------------------------------------------------------


@pytest.mark.dcmtk
async def test_dcmtk_storescu_identities_reach_the_hook(tmp_path: Any, no_leaks: Any) -> None:
    files = write_files(tmp_path, make_series(1, patient_id="ID03"))
    door = Door(lambda offer: offer.passcode == "secret")
    async with adn.StorageServer("ADNID", identify=door) as server:
        args = ["-aec", "ADNID", "-aet", "DCMTKSCU", "127.0.0.1", str(server.port), *files]
        good = await anyio.to_thread.run_sync(
            lambda: dcmtk_tool("storescu", "--user", "tech", "--password", "secret", "-rsp", *args)
        )
        bad = await anyio.to_thread.run_sync(
            lambda: dcmtk_tool("storescu", "--user", "tech", "--password", "nope", *args)
        )
        received = await server.__anext__()
    assert good.returncode == 0, good.stderr
    assert bad.returncode != 0
    assert "reject" in (bad.stdout + bad.stderr).lower()
    assert received.calling_ae == "DCMTKSCU"
    assert [(o.username, o.passcode, o.positive_response) for o in door.offers] == [
        ("tech", "secret", True),
        ("tech", "nope", False),
    ]


@pytest.mark.dcmtk
async def test_a_peer_that_does_not_confirm(storescp: StoreScp, no_leaks: Any) -> None:
    """DCMTK's storescp accepts identities without confirming them.

    (One association at a time there: no idle pooled one may wait in between.)
    """
    async with adn.Client("ADNUSER", pool=adn.PoolConfig(reuse=False)) as client:
        plain = adn.Node(
            "STORESCP", "127.0.0.1", storescp.port, identity=adn.UserIdentity.username("a")
        )
        assert await client.verify_identity(plain) is None
        strict = adn.Node(
            "STORESCP",
            "127.0.0.1",
            storescp.port,
            identity=adn.UserIdentity.username("a", positive_response=True),
        )
        with pytest.raises(adn.IdentityNotConfirmed):
            await client.echo(strict)


async def test_the_archive_takes_the_same_hook(tmp_path: Any, no_leaks: Any) -> None:
    door = Door(lambda offer: offer.username == "radiology")
    series = make_series(1, patient_id="ID04")
    archive = adn.Archive("ARCHIVE", tmp_path / "archive", identify=door)
    async with archive, adn.Client("ADNUSER") as client:
        node = archive.node
        with pytest.raises(adn.AssociationRejected):
            await client.store(adn.Node(node.ae_title, node.host, node.port), series)
        allowed = adn.Node(
            node.ae_title, node.host, node.port, identity=adn.UserIdentity.username("radiology")
        )
        assert (await client.store(allowed, series)).ok
        assert await archive.count() == 1
