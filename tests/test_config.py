"""The configuration file: round trips, where it is, and what a bad one says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import aiodicomnet as adn
from aiodicomnet import config as config_module
from aiodicomnet.config import (
    ENV_VAR,
    Config,
    ConfigError,
    LocalAE,
    NodeEntry,
    UnknownNode,
    default_path,
)


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    config = Config.load(tmp_path / "none" / "config.toml")
    assert config.local == LocalAE()
    assert config.local.ae_title == "AIODICOMNET" and config.local.port == 11112
    assert config.nodes == {}
    assert config.path == tmp_path / "none" / "config.toml"
    assert not config.path.exists()


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    config = Config(path=path)
    config.local = LocalAE("MYWS", 11113, "127.0.0.1", tmp_path / "dicom")
    config.add_node("pacs", "ORTHANC@pacs.example.org:4242", description='Main "PACS"\n\\ é')
    config.add_node("ct-1.lab", adn.Node("CT1", "::1", 104))
    config.add_node("tab", "X@h:1", description="a\tb\x01\x7f")
    assert config.save() == path

    loaded = Config.load(path)
    assert loaded == config
    assert loaded.node("pacs") == adn.Node("ORTHANC", "pacs.example.org", 4242, "pacs")
    assert loaded.nodes["pacs"].description == 'Main "PACS"\n\\ é'
    assert loaded.nodes["tab"].description == "a\tb\x01\x7f"
    assert loaded.nodes["ct-1.lab"].address == "CT1@[::1]:104"
    assert loaded.local.storage == tmp_path / "dicom"
    # only the file itself is left: the temporary file was renamed
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]


def test_save_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    config = Config(path=path)
    config.add_node("a", "A@h:1")
    config.save()
    before = path.read_text()

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    config.add_node("b", "B@h:2")
    monkeypatch.setattr(config_module.os, "replace", fail)
    with pytest.raises(OSError):
        config.save()
    assert path.read_text() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary left


def test_env_var_and_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from platformdirs import user_config_dir

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_path() == Path(user_config_dir("aiodicomnet")) / "config.toml"

    chosen = tmp_path / "elsewhere.toml"
    chosen.write_text('[nodes.pacs]\nae_title = "P"\nhost = "h"\nport = 104\n')
    monkeypatch.setenv(ENV_VAR, str(chosen))
    assert default_path() == chosen
    config = Config.load()
    assert config.path == chosen
    assert config.node("pacs").ae_title == "P"
    # an explicit path wins over the environment
    assert Config.load(tmp_path / "other.toml").nodes == {}


def test_relative_storage_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    path.write_text('[local]\nstorage = "incoming"\n')
    assert Config.load(path).local.storage == tmp_path / "conf" / "incoming"
    path.write_text('[local]\nstorage = "~/dicom"\n')
    assert Config.load(path).local.storage == Path("~/dicom").expanduser()


def test_nodes_api(tmp_path: Path) -> None:
    config = Config(path=tmp_path / "config.toml")
    entry = config.add_node("pacs", "P@h:104")
    assert isinstance(entry, NodeEntry)
    with pytest.raises(ConfigError, match="exists already"):
        config.add_node("pacs", "Q@h:105")
    config.add_node("pacs", "Q@h:105", replace=True)
    assert config.node("pacs").ae_title == "Q"
    with pytest.raises(ConfigError, match="node name"):
        config.add_node("bad name", "P@h:104")
    with pytest.raises(ConfigError, match=r"nodes\.x"):
        config.add_node("x", "not-an-address")
    assert config.remove_node("pacs").ae_title == "Q"
    with pytest.raises(UnknownNode) as info:
        config.node("pacs")
    # a lookup error and a value error at once, with a readable message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("no node named 'pacs'")
    with pytest.raises(KeyError):
        config.remove_node("pacs")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[nodes.pacs\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML:")
    assert "line 1" in message
    assert isinstance(info.value, ValueError)
    assert info.value.path == path


_NODE = '[nodes.pacs]\nae_title = "P"\nhost = "h"\n'


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (_NODE + 'port = "abc"\n', "nodes.pacs.port", 'expected an integer 1-65535, got "abc"'),
        (_NODE + "port = 0\n", "nodes.pacs.port", "expected an integer 1-65535, got 0"),
        (_NODE + "port = true\n", "nodes.pacs.port", "expected an integer 1-65535, got true"),
        (_NODE + "port = 4.5\n", "nodes.pacs.port", "expected an integer 1-65535, got 4.5"),
        (_NODE, "nodes.pacs.port", "missing"),
        (_NODE + "port = 1\nprot = 2\n", "nodes.pacs.prot", "unknown key"),
        (
            '[nodes.pacs]\nae_title = "MUCH TOO LONG AE TITLE"\nhost = "h"\nport = 1\n',
            "nodes.pacs.ae_title",
            "longer than 16 characters",
        ),
        ('[nodes.pacs]\nae_title = 7\nhost = "h"\nport = 1\n', "nodes.pacs.ae_title", "got 7"),
        ('[nodes.pacs]\nae_title = "P"\nhost = ""\nport = 1\n', "nodes.pacs.host", "host name"),
        (_NODE + 'port = 1\ndescription = ["x"]\n', "nodes.pacs.description", "a string"),
        ('[nodes."two words"]\n', 'nodes."two words"', "expected a node name"),
        ("nodes = 3\n", "nodes", "expected a table, got 3"),
        ("[nodes]\npacs = 3\n", "nodes.pacs", "expected a table, got 3"),
        ("[local]\nport = 70000\n", "local.port", "expected an integer 0-65535, got 70000"),
        ('[local]\nae_title = ""\n', "local.ae_title", "empty"),
        ("[local]\nstorage = 3\n", "local.storage", "expected a string, got 3"),
        ('[local]\naet = "X"\n', "local.aet", "unknown key (expected one of ae_title"),
        ("[remote]\n", "remote", "unknown key"),
    ],
)
def test_bad_values_name_file_key_and_expectation(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message, message
    assert info.value.key == key


def test_example_message_from_the_docs() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(_NODE + 'port = "abc"\n', path=Path("config.toml"))
    assert str(info.value) == 'config.toml: nodes.pacs.port: expected an integer 1-65535, got "abc"'


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[local]\nae_title = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        Config.load(path)


def test_unreadable(tmp_path: Path) -> None:
    if os.name != "posix" or os.geteuid() == 0:
        # root reads anything: use a directory where a file is expected instead
        path = tmp_path / "config.toml"
        path.mkdir()
    else:
        path = tmp_path / "config.toml"
        path.write_text("")
        path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(path)
