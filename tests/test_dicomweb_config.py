"""DICOMweb nodes as values: WebNode checks, and their entries in the TOML configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

import aiodicomnet as adn
from aiodicomnet.config import Config, ConfigError


def test_web_node_values() -> None:
    node = adn.Node.web("https://pacs.example.org/dicom-web/", auth=("alice", "secret"))
    assert isinstance(node, adn.WebNode)
    assert node.url == "https://pacs.example.org/dicom-web"
    assert node.service_url("qido") == node.url
    assert node.host == "pacs.example.org"
    assert "secret" not in repr(node)
    split = adn.WebNode(
        "https://gw.example.org/dicom-web",
        qido_url="https://gw.example.org/qido",
        headers={"X-Tenant": "a"},
    )
    assert split.service_url("qido") == "https://gw.example.org/qido"
    assert split.service_url("wado") == split.url
    assert split.headers == (("X-Tenant", "a"),)
    # Credentials are not part of a node's identity; both kinds hash (fan-out keys).
    assert adn.Node.web(node.url, auth="token") == adn.Node.web(node.url)
    assert len({node, split, adn.Node("A", "h", 1)}) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://x/dicom-web"}, "http"),
        ({"url": "https://user:pw@x/dicom-web"}, "auth="),
        ({"url": "https://x/dicom-web?a=1"}, "query"),
        ({"url": "https://x", "auth": ("only-user",)}, "user, password"),
        ({"url": "https://x", "auth": 42}, "auth must be"),
        ({"url": "https://x", "concurrency": 0}, "concurrency"),
        ({"url": "https://x", "verify": "/no/such/ca.pem"}, "does not exist"),
    ],
)
def test_web_node_refuses(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        adn.WebNode(**kwargs)  # type: ignore[arg-type]


def test_config_web_node_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    config = Config.load(path)
    config.add_node("pacs", "ORTHANC@pacs.example.org:4242")
    config.add_node(
        "cloud",
        "https://pacs.example.org/dicom-web",
        description="cloud archive",
        username="alice",
        password_env="ADN_TEST_PASSWORD",
        concurrency=8,
        verify=False,
    )
    config.add_node("token", "https://other.example.org/wado", token_env="ADN_TEST_TOKEN")
    config.save()
    text = path.read_text()
    assert 'url = "https://pacs.example.org/dicom-web"' in text
    loaded = Config.load(path)
    assert loaded.nodes["cloud"].is_web and not loaded.nodes["pacs"].is_web
    assert loaded.nodes["cloud"].address == "https://pacs.example.org/dicom-web"

    with pytest.raises(ConfigError, match="ADN_TEST_PASSWORD"):
        loaded.node("cloud")
    monkeypatch.setenv("ADN_TEST_PASSWORD", "s3cret")
    monkeypatch.setenv("ADN_TEST_TOKEN", "tok")
    cloud = loaded.node("cloud")
    assert isinstance(cloud, adn.WebNode)
    assert cloud.auth == ("alice", "s3cret")
    assert (cloud.concurrency, cloud.verify, cloud.name) == (8, False, "cloud")
    token = loaded.node("token")
    assert isinstance(token, adn.WebNode) and token.auth == "tok"
    assert isinstance(loaded.node("pacs"), adn.Node)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ('url = "gopher://x"', "nodes.bad.url"),
        ('url = "https://x"\nae_title = "A"', "unknown key"),
        ('url = "https://x"\nconcurrency = 0', "1-64"),
        ('url = "https://x"\nverify = 3', "CA bundle"),
        ('url = "https://x"\npassword_env = "P"', "needs a username"),
        ('url = "https://x"\nusername = "u"\ntoken_env = "T"', "not both"),
    ],
)
def test_config_refuses_bad_web_entries(table: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Config.from_toml(f"[nodes.bad]\n{table}\n", path=Path("config.toml"))
