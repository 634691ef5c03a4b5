"""Association reuse, per-node limits and parallel store, against an in-process peer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import aiodicomnet as adn
from aiodicomnet import PoolConfig
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from tests.data import make_series
from tests.peers.inprocess import ScriptedSCP, study_identifiers

FAST = adn.Timeouts(connect=2, acse=2, dimse=5, network=10, cancel=1)


async def wait_active(peer: ScriptedSCP, n: int) -> None:
    """Wait until ``n`` associations are open at the peer (bounded)."""
    assert await anyio.to_thread.run_sync(peer.wait_active, n)


async def find_count(client: Client, node: adn.Node, results: list[int]) -> None:
    results.append(len(await client.find(node, Query.study())))


async def test_reuse_across_operations(peer: ScriptedSCP, no_leaks: Any) -> None:
    """Echo, find and move share one pooled association."""
    peer.on_find = lambda event: ((0xFF00, ds) for ds in study_identifiers(3))
    async with Client("POOLED", timeouts=FAST, pool=PoolConfig()) as client:
        node = peer.node
        for _ in range(5):
            await client.echo(node)
            assert len(await client.find(node, Query.study())) == 3
        assert client.idle_associations(node) == 1
    assert peer.accepted_count == 1
    assert await anyio.to_thread.run_sync(peer.released.wait, 5)


async def test_reuse_by_default(peer: ScriptedSCP, no_leaks: Any) -> None:
    async with Client("DEFAULT", timeouts=FAST) as client:
        for _ in range(3):
            await client.echo(peer.node)
        assert client.idle_associations() == 1
    assert peer.accepted_count == 1


async def test_no_reuse_when_asked(peer: ScriptedSCP, no_leaks: Any) -> None:
    async with Client("UNPOOLED", timeouts=FAST, pool=PoolConfig(reuse=False)) as client:
        for _ in range(3):
            await client.echo(peer.node)
        assert client.idle_associations() == 0
    assert peer.accepted_count == 3


async def test_peer_abort_of_idle_association_is_invisible(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    async with Client("POOLED", timeouts=FAST, pool=PoolConfig()) as client:
        node = peer.node
        await client.echo(node)
        peer.abort_all()  # the PACS drops the idle association
        await wait_active(peer, 0)
        assert await client.echo(node) > 0  # no error surfaces
    assert peer.accepted_count == 2


async def test_dead_pooled_association_is_replaced_midway(
    peer: ScriptedSCP, monkeypatch: pytest.MonkeyPatch, no_leaks: Any
) -> None:
    """The race: the pool hands out an association the peer has just closed.

    Forcing ``reusable`` to true reproduces the window between the peer's
    abort and our noticing it: the operation fails on the dead association
    and is retried once on a new one, with no error for the caller.
    """
    peer.on_find = lambda event: ((0xFF00, ds) for ds in study_identifiers(2))
    peer.on_store = lambda event: 0
    async with Client("POOLED", timeouts=FAST, pool=PoolConfig()) as client:
        node = peer.node
        await client.echo(node)
        peer.abort_all()
        await wait_active(peer, 0)
        monkeypatch.setattr(adn.client.Association, "reusable", property(lambda self: True))
        found = await client.find(node, Query.study())
        monkeypatch.undo()
        assert len(found) == 2
        store = await client.store(node, make_series(2))
        assert store.ok  # a different context set: a new association anyway
    assert peer.accepted_count >= 2


async def test_idle_timeout_releases(peer: ScriptedSCP, no_leaks: Any) -> None:
    async with Client("POOLED", timeouts=FAST, pool=PoolConfig(idle_timeout=0.2)) as client:
        node = peer.node
        await client.echo(node)
        assert await anyio.to_thread.run_sync(peer.released.wait, 5)
        # the pool dropped it before releasing it
        assert client.idle_associations(node) == 0
        assert await client.echo(node) > 0
    assert peer.accepted_count == 2


async def test_max_idle_per_node(peer: ScriptedSCP, no_leaks: Any) -> None:
    gate = threading.Event()

    def find(event: Any) -> Iterator[Any]:
        gate.wait(5)
        yield 0xFF00, study_identifiers(1)[0]

    peer.on_find = find
    config = PoolConfig(max_idle_per_node=2, max_per_node=4)
    async with Client("POOLED", timeouts=FAST, pool=config) as client:
        node = peer.node
        results: list[int] = []
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(find_count, client, node, results)
            await wait_active(peer, 4)
            gate.set()
        assert results == [1] * 4
        assert client.idle_associations(node) == 2
    assert peer.max_active == 4


async def test_max_per_node_bounds_concurrency(peer: ScriptedSCP, no_leaks: Any) -> None:
    gate = threading.Event()
    peer.on_find = lambda event: (gate.wait(5), iter([(0xFF00, study_identifiers(1)[0])]))[1]

    results: list[int] = []
    async with Client("LIMITED", timeouts=FAST, pool=PoolConfig(max_per_node=2)) as client:
        node = peer.node
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(find_count, client, node, results)
            await wait_active(peer, 2)
            gate.set()
    assert results == [1] * 5
    assert peer.max_active == 2


async def test_cancelled_find_returns_association_to_pool(peer: ScriptedSCP, no_leaks: Any) -> None:
    def find(event: Any) -> Iterator[Any]:
        # pynetdicom answers 0xFE00 itself when it sees the C-CANCEL between yields
        yield 0xFF00, study_identifiers(1)[0]
        while not event.is_cancelled:
            threading.Event().wait(0.01)
        yield 0xFF00, study_identifiers(1)[0]

    peer.on_find = find
    async with Client("POOLED", timeouts=FAST, pool=PoolConfig()) as client:
        node = peer.node
        async with client.find(node, Query.study()) as found:
            async for _ in found:
                break
        assert client.idle_associations(node) == 1  # cancelled cleanly: kept
        assert await client.echo(node) > 0
    assert peer.accepted_count == 1


async def test_parallel_store(peer: ScriptedSCP, no_leaks: Any) -> None:
    seen: set[int] = set()
    lock = threading.Lock()

    def store(event: Any) -> int:
        with lock:
            seen.add(id(event.assoc))
        return 0

    peer.on_store = store
    series = make_series(30)
    async with Client("PARALLEL", timeouts=FAST) as client:
        result = await client.store(peer.node, series, associations=3)
    assert result.ok and len(result) == 30
    assert {o.sop_instance_uid for o in result.outcomes} == {ds.SOPInstanceUID for ds in series}
    assert len(seen) == 3
    assert peer.max_active == 3


async def test_parallel_store_with_one_association_lost(peer: ScriptedSCP, no_leaks: Any) -> None:
    """One of three associations aborted: the others finish; every instance is accounted for."""
    count = {"n": 0}
    lock = threading.Lock()

    def store(event: Any) -> int:
        with lock:
            count["n"] += 1
            if count["n"] == 5:
                event.assoc.abort()
        return 0

    peer.on_store = store
    series = make_series(30)
    async with Client("PARALLEL", timeouts=FAST) as client:
        with pytest.raises(adn.AssociationAborted) as info:
            await client.store(peer.node, series, associations=3)
    partial = info.value.partial
    assert len(partial) == 30
    assert {o.sop_instance_uid for o in partial.outcomes} == {ds.SOPInstanceUID for ds in series}
    assert 0 < len(partial.failed) < 30


async def test_operation_finishing_after_close_releases_its_association(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    """A find left open by a bare ``break`` and finalized only while or after its client
    closes (as asyncio's generator finalizer does) must not park its association in
    the closed pool, where nobody would release it before its idle timeout."""
    peer.on_find = lambda event: ((0xFF00, ds) for ds in study_identifiers(3))
    client = Client("POOLED", timeouts=FAST)
    results = aiter(client.find(peer.node, Query.study()))
    await anext(results)  # the association is in use: the find is not over
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.aclose)
        tg.start_soon(results.aclose)  # type: ignore[attr-defined]  # finalized meanwhile
    assert client.idle_associations() == 0
    assert await anyio.to_thread.run_sync(peer.wait_active, 0)  # released or aborted


async def test_a_retrieve_left_early_is_released_not_pooled(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    """C-CANCEL during a C-GET: the peer may still be busy with sub-operations, so the
    association is released at once (as the design has it: cancel, then release), not
    kept idle where its later release could wait for a busy peer."""
    from tests.data import make_series
    from tests.test_retrieve import CT

    series = make_series(5)

    def get(event: Any) -> Any:
        yield len(series)
        for ds in series:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    peer.on_get = get
    query = Query.series(StudyInstanceUID=series[0].StudyInstanceUID, SeriesInstanceUID="1.2")
    async with Client("POOLED", timeouts=FAST) as client:
        async with client.get(peer.node, query, sop_classes=[CT]) as instances:
            async for _ in instances:
                break
        assert client.idle_associations() == 0
        assert await anyio.to_thread.run_sync(peer.released.wait, 5)
        # The next operation opens a new association.
        await client.echo(peer.node)
        assert peer.accepted_count == 2
