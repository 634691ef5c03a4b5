"""Node and AE title validation: unit and property tests."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodicomnet.nodes import Node, validate_ae_title

# The default character repertoire (PS3.5 6.1.2.1) without backslash: what an AE title may hold.
AE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "\\")

valid_titles = st.text(alphabet=AE_CHARS, min_size=1, max_size=16).filter(lambda t: t.strip(" "))
# Titles whose padding-free form is also the way Node prints them.
bare_titles = valid_titles.map(lambda t: t.strip(" "))

hostnames = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}",
    fullmatch=True,
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=1, max_value=65535)


# -- validate_ae_title -------------------------------------------------------------------------


@given(valid_titles)
def test_valid_titles_are_accepted_without_padding(title: str) -> None:
    assert validate_ae_title(title) == title.strip(" ")


@pytest.mark.parametrize(
    "title", ["A", "ORTHANC", "STORESCP", "A" * 16, "MY AE", " PADDED  ", "a-b_c.d"]
)
def test_typical_titles(title: str) -> None:
    assert validate_ae_title(title) == title.strip(" ")


def _assert_rejected(title: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_ae_title(title)
    assert repr(title) in str(info.value)
    assert fragment in str(info.value)


@given(st.text(alphabet=AE_CHARS, min_size=17, max_size=40))
def test_longer_than_16_is_rejected(title: str) -> None:
    _assert_rejected(title, "longer than 16")


@given(st.text(alphabet=AE_CHARS, max_size=7), st.text(alphabet=AE_CHARS, max_size=8))
def test_backslash_is_rejected(head: str, tail: str) -> None:
    _assert_rejected(f"{head}\\{tail}", "backslash")


@given(
    st.text(alphabet=AE_CHARS, max_size=7),
    st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f"]),
    st.text(alphabet=AE_CHARS, max_size=8),
)
def test_control_characters_are_rejected(head: str, control: str, tail: str) -> None:
    _assert_rejected(head + control + tail, "control character")


@given(
    st.text(alphabet=AE_CHARS, max_size=7),
    st.characters(min_codepoint=0x80, exclude_categories=("Cs",)),
    st.text(alphabet=AE_CHARS, max_size=8),
)
def test_non_ascii_is_rejected(head: str, char: str, tail: str) -> None:
    title = head + char + tail
    with pytest.raises(ValueError) as info:
        validate_ae_title(title)
    assert repr(title) in str(info.value)


@given(st.integers(min_value=0, max_value=16))
def test_empty_or_only_spaces_is_rejected(n: int) -> None:
    _assert_rejected(" " * n, "only spaces")


@pytest.mark.parametrize("title", [None, 42, b"ORTHANC", ["A"]])
def test_non_str_is_rejected(title: object) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        validate_ae_title(title)  # type: ignore[arg-type]


@given(st.text(max_size=24))
def test_validate_either_returns_a_valid_title_or_raises_value_error(title: str) -> None:
    try:
        result = validate_ae_title(title)
    except ValueError as exc:
        assert repr(title) in str(exc)
    else:
        assert 1 <= len(result) <= 16
        assert result == result.strip(" ")
        assert all(c in AE_CHARS for c in result)


# -- Node --------------------------------------------------------------------------------------


@given(bare_titles, st.one_of(hostnames, ipv4, ipv6), ports)
def test_parse_round_trips_through_str(ae: str, host: str, port: int) -> None:
    node = Node(ae, host, port)
    text = str(node)
    assert Node.parse(text) == node
    if ":" in host:
        assert f"@[{host}]:{port}" in text
    else:
        assert text == f"{ae}@{host}:{port}"


@given(valid_titles, st.one_of(hostnames, ipv4), ports)
def test_parse_splits_the_parts(ae: str, host: str, port: int) -> None:
    node = Node.parse(f"{ae}@{host}:{port}")
    assert (node.ae_title, node.host, node.port) == (ae.strip(" "), host, port)
    assert node.address == (host, port)
    assert node.name is None


@given(valid_titles, ipv6, ports)
def test_parse_ipv6_in_brackets(ae: str, host: str, port: int) -> None:
    node = Node.parse(f"{ae}@[{host}]:{port}")
    assert (node.host, node.port) == (host, port)


def test_parse_examples() -> None:
    assert Node.parse("ORTHANC@pacs.example.org:4242") == Node("ORTHANC", "pacs.example.org", 4242)
    assert Node.parse("STORESCP@127.0.0.1:11112").address == ("127.0.0.1", 11112)
    assert Node.parse("PACS@[::1]:104").host == "::1"
    assert Node.parse("PACS@[fe80::1%eth0]:104").host == "fe80::1%eth0"
    # The last @ separates: an AE title may contain @.
    assert Node.parse("A@B@host:104").ae_title == "A@B"
    named = Node.parse("PACS@host:104", name="Radiology")
    assert named.name == "Radiology"
    assert str(named) == "Radiology (PACS@host:104)"


@pytest.mark.parametrize(
    "text",
    [
        "PACS",
        "PACS@host",
        "host:104",
        "PACS@host:",
        "PACS@host:abc",
        "PACS@host:+104",
        "PACS@host:-1",
        "PACS@host: 104",
        "PACS@host:104 ",
        "PACS@host:1.5",
        "PACS@host:０",  # full-width digit: isdigit() but not a port
        "PACS@host:¹⁰⁴",
        "PACS@host:0",
        "PACS@host:65536",
        "PACS@host:99999999999999999999",
        "PACS@:104",
        "PACS@[::1]",
        "PACS@[::1]104",
        "PACS@[::1:104",
        "PACS@[]:104",
        "PACS@fe80::1",  # IPv6 without brackets and without port
        "PACS@::1:104",
        "@host:104",
        "TOO_LONG_AE_TITLE_X@host:104",
        "A\\B@host:104",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Node.parse(text)


@given(st.integers().filter(lambda p: not 1 <= p <= 65535))
def test_out_of_range_ports_are_rejected(port: int) -> None:
    with pytest.raises(ValueError, match="outside 1-65535"):
        Node("PACS", "host", port)


@pytest.mark.parametrize("port", [True, False, 104.0, "104", None])
def test_non_int_ports_are_rejected(port: object) -> None:
    with pytest.raises(ValueError, match="must be an int"):
        Node("PACS", "host", port)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["", "   ", None, 127])
def test_bad_hosts_are_rejected(host: object) -> None:
    with pytest.raises(ValueError, match="host"):
        Node("PACS", host, 104)  # type: ignore[arg-type]


def test_node_validates_and_strips_its_ae_title() -> None:
    assert Node(" PACS ", "host", 104).ae_title == "PACS"
    with pytest.raises(ValueError, match="backslash"):
        Node("A\\B", "host", 104)


def test_node_is_frozen_and_hashable() -> None:
    node = Node("PACS", "host", 104)
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.port = 105  # type: ignore[misc]
    assert {node, Node("PACS", "host", 104)} == {node}


def test_str_shows_the_name_only_when_it_differs() -> None:
    assert str(Node("PACS", "host", 104, "PACS")) == "PACS@host:104"
    assert str(Node("PACS", "::1", 104, "Local")) == "Local (PACS@[::1]:104)"
