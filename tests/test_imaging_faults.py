"""The one-call scenario against a PACS that loses an instance without saying so:
its C-FIND lists 12 instances, its C-GET sends 11 and reports success. The
volume must not be built from 11 slices passed off as the series."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import evt

import aiodicomnet as adn
from tests.peers.inprocess import ScriptedSCP
from tests.test_imaging_data import phantom_ct


def _identifier(ds: Dataset, level: str, *keywords: str) -> Dataset:
    out = Dataset()
    out.QueryRetrieveLevel = level
    for keyword in keywords:
        setattr(out, keyword, getattr(ds, keyword))
    return out


async def test_an_instance_listed_but_never_sent(peer: ScriptedSCP, no_leaks: Any) -> None:
    series = phantom_ct()
    sent = series[:11]

    def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        level = event.identifier.QueryRetrieveLevel
        if level == "SERIES":
            yield (
                0xFF00,
                _identifier(
                    series[0],
                    "SERIES",
                    "StudyInstanceUID",
                    "SeriesInstanceUID",
                    "SeriesDescription",
                ),
            )
        else:
            for ds in series:
                yield 0xFF00, _identifier(
                    ds, "IMAGE", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                    "SOPClassUID",
                )  # fmt: skip

    def on_get(event: evt.Event) -> Iterator[Any]:
        yield len(sent)
        for ds in sent:
            yield 0xFF00, ds

    peer.on_find = on_find
    peer.on_get = on_get
    async with adn.Client("ADNTEST") as client:
        with pytest.raises(adn.IncompleteRetrieve) as info:
            await adn.load_volume(client, peer.node, adn.Query.series(SeriesDescription="PHANTOM*"))
    assert (info.value.expected, info.value.received) == (12, 11)
    assert "11 of 12" in str(info.value)
