"""The command line, end to end: in-process through ``main()`` and as a real process.

Peers: an embedded Archive (the "PACS", in a thread of its own), a real
Orthanc, and DCMTK's storescu sending to ``serve``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from aiodicomnet.archive import Archive
from aiodicomnet.cli import main
from aiodicomnet.cli._parser import UsageError, parse_key
from aiodicomnet.client import Client
from aiodicomnet.demo import WEB_MISSING, tour
from aiodicomnet.nodes import Node, WebNode
from aiodicomnet.query import Query
from tests.data import Corpus, make_series, write_files
from tests.peers.dcmtk import dcmtk_tool
from tests.peers.orthanc import OrthancServer
from tests.peers.util import free_port, wait_for_port

PACS_AE = "ADNPACS"


@pytest.fixture(autouse=True)
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own (empty) configuration file, never the user's."""
    path = tmp_path / "config" / "config.toml"
    monkeypatch.setenv("AIODICOMNET_CONFIG", str(path))
    return path


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Iterator[Archive]:
    """An embedded Archive holding the corpus, served from its own thread and event loop."""
    archive = Archive(PACS_AE, tmp_path_factory.mktemp("pacs"))
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(archive),
    ):
        portal.call(archive.add, corpus.datasets)
        yield archive


@pytest.fixture
def pacs_spec(pacs: Archive) -> str:
    return f"{PACS_AE}@127.0.0.1:{pacs.port}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.dcm") if p.is_file())


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PatientName=Doe*", ("PatientName", "Doe*")),
        ("StudyDate=20240101-", ("StudyDate", "20240101-")),
        ("StudyDescription=", ("StudyDescription", None)),
        ("StudyDescription", ("StudyDescription", None)),
        ("0010,0020=123", ("PatientID", "123")),
        ("(0010,0020)=123", ("PatientID", "123")),
        ("00100020=a=b", ("PatientID", "a=b")),
        ("StudyInstanceUID=1.2\\1.3", ("StudyInstanceUID", ["1.2", "1.3"])),
    ],
)
def test_parse_key(text: str, expected: tuple[str, object]) -> None:
    assert parse_key(text) == expected


@pytest.mark.parametrize("text", ["NoSuchKeyword=1", "0009,0010=x"])
def test_parse_key_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_key(text)


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "exit codes:" in out
    for line in ("3    not reachable", "4    association rejected", "6    partial"):
        assert line in out
    code, out, _ = run(capsys, "retrieve", "--help")
    assert code == 0 and "-aet AET" in out and "exit codes:" in out


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "find")
    assert code == 2 and "usage:" in err
    code, _, err = run(capsys, "echo", "nosuchnode")
    assert code == 2
    assert err.strip().splitlines() == [
        f"aiodicomnet echo: error: unknown node 'nosuchnode': not a name in "
        f"{os.environ['AIODICOMNET_CONFIG']} (known: none configured) nor AET@host:port"
    ]
    code, _, err = run(capsys, "find", "A@127.0.0.1:1", "-k", "StudyDate=yesterday")
    assert code == 2 and "StudyDate" in err and "Traceback" not in err
    code, _, err = run(capsys, "find", "A@127.0.0.1:1", "-S", "-L", "PATIENT")
    assert code == 2 and "Study Root model has no PATIENT level" in err


def test_malformed_config_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], config_path: Path
) -> None:
    config_path.parent.mkdir(parents=True)
    config_path.write_text('[nodes.pacs]\nae_title = "P"\nhost = "h"\nport = "abc"\n')
    code, _, err = run(capsys, "nodes", "list")
    assert code == 2
    assert err.strip() == (
        f"aiodicomnet nodes: error: {config_path}: nodes.pacs.port: "
        'expected an integer 1-65535, got "abc"'
    )


# -- echo -------------------------------------------------------------------------------


def test_echo(capsys: pytest.CaptureFixture[str], pacs_spec: str, no_leaks: Any) -> None:
    code, out, err = run(capsys, "echo", pacs_spec)
    assert code == 0, err
    assert out.startswith(f"ok    {pacs_spec}  C-ECHO in ")


def test_echo_not_reachable(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, out, err = run(capsys, "echo", f"NOBODY@127.0.0.1:{port}")
    assert code == 3
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aiodicomnet echo: error: NOBODY@127.0.0.1:")
    assert "refused" in lines[0].lower()


def test_debug_shows_traceback_and_log(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "echo", f"NOBODY@127.0.0.1:{free_port()}", "--debug")
    assert code == 3
    assert "Traceback (most recent call last)" in err
    assert "pynetdicom" in err  # its log is on


def test_echo_rejected(capsys: pytest.CaptureFixture[str], pacs_spec: str) -> None:
    code, _, err = run(capsys, "echo", pacs_spec, "-aec", "WRONGAE")
    assert code == 4
    assert "called-AE-title-not-recognized" in err
    assert len(err.strip().splitlines()) == 1


def test_echo_several_json(capsys: pytest.CaptureFixture[str], pacs_spec: str) -> None:
    dead = f"DEAD@127.0.0.1:{free_port()}"
    code, out, _ = run(capsys, "echo", pacs_spec, dead, "--json")
    assert code == 3
    first, second = json_lines(out)
    assert first["ok"] is True and first["ae_title"] == PACS_AE and first["rtt_ms"] > 0
    assert second["ok"] is False and second["exit_code"] == 3 and "DEAD" in second["error"]


@pytest.mark.orthanc
def test_echo_orthanc(capsys: pytest.CaptureFixture[str], orthanc: OrthancServer) -> None:
    spec = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    assert run(capsys, "echo", spec)[0] == 0
    code, _, err = run(capsys, "echo", spec, "-aec", "NOTORTHANC")
    assert code == 4, err


# -- find -------------------------------------------------------------------------------


def test_find_json_is_dicom_json(
    capsys: pytest.CaptureFixture[str], pacs_spec: str, corpus: Corpus
) -> None:
    code, out, err = run(
        capsys,
        "find",
        pacs_spec,
        "-L",
        "SERIES",
        "-k",
        "PatientID=PAT002",
        "-k",
        "SeriesDescription=",
        "--json",
    )
    assert code == 0, err
    found = json_lines(out)
    expected = {uid for study in corpus.studies("PAT002") for uid in corpus.series(study)}
    assert {ds["0020000E"]["Value"][0] for ds in found} == expected
    for ds in found:
        assert ds["0020000E"]["vr"] == "UI"
        assert ds["00080052"] == {"vr": "CS", "Value": ["SERIES"]}
        assert ds["0008103E"]["vr"] == "LO"  # the return key asked for


def test_find_table(capsys: pytest.CaptureFixture[str], pacs_spec: str) -> None:
    code, out, _ = run(capsys, "find", pacs_spec, "-k", "PatientName=Doe*")
    assert code == 0
    assert out.startswith(f"2 studies on {pacs_spec}")
    assert "Patient name" in out and "Doe^John" in out and "CT HEAD" in out
    assert "Smith" not in out


def test_find_limit_and_patient_root(capsys: pytest.CaptureFixture[str], pacs_spec: str) -> None:
    code, out, _ = run(
        capsys,
        "find",
        pacs_spec,
        "-P",
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "--limit",
        "2",
        "--json",
    )
    assert code == 0
    assert len(json_lines(out)) == 2


@pytest.mark.orthanc
def test_find_orthanc_json(
    capsys: pytest.CaptureFixture[str], orthanc_loaded: OrthancServer, corpus: Corpus
) -> None:
    spec = f"ORTHANC@127.0.0.1:{orthanc_loaded.dicom_port}"
    code, out, err = run(capsys, "find", spec, "-k", "PatientName=Doe*", "--json")
    assert code == 0, err
    found = json_lines(out)
    assert {ds["0020000D"]["Value"][0] for ds in found} == corpus.studies("PAT001")
    for ds in found:
        assert ds["0020000D"]["vr"] == "UI"
        assert ds["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}


# -- retrieve ---------------------------------------------------------------------------


def test_retrieve_by_move(
    capsys: pytest.CaptureFixture[str],
    pacs: Archive,
    pacs_spec: str,
    corpus: Corpus,
    tmp_path: Path,
    no_leaks: Any,
) -> None:
    port = free_port()
    pacs.add_destination("ADNCLI", ("127.0.0.1", port))
    study = sorted(corpus.studies("PAT001"))[0]
    series = sorted(corpus.series(study))[0]
    expected = {ds.SOPInstanceUID for ds in corpus.instances(series)}
    code, out, err = run(
        capsys,
        "retrieve",
        pacs_spec,
        "-aet",
        "ADNCLI",
        "--port",
        port,
        "-L",
        "SERIES",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={series}",
        "-o",
        tmp_path / "in",
        "--json",
    )
    assert code == 0, err
    *instances, result = json_lines(out)
    assert {i["sop_instance_uid"] for i in instances} == expected
    assert result["type"] == "result" and result["via"] == "C-MOVE"
    assert result["received"] == result["completed"] == len(expected) and result["failed"] == 0
    assert {p.stem for p in files_under(tmp_path / "in")} == expected


def test_retrieve_by_get_after_a_find(
    capsys: pytest.CaptureFixture[str], pacs_spec: str, corpus: Corpus, tmp_path: Path
) -> None:
    # PatientID is not a study's unique key: the studies are found first, then each is got.
    code, out, err = run(
        capsys, "retrieve", pacs_spec, "--via", "get", "-k", "PatientID=PAT003", "-o", tmp_path
    )
    assert code == 0, err
    assert "2 studies on" in err and "match" in err
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.PatientID == "PAT003"}
    assert {p.stem for p in files_under(tmp_path)} == expected
    assert out.startswith(f"Retrieved {len(expected)} instances")


def test_retrieve_nothing_matches(capsys: pytest.CaptureFixture[str], pacs_spec: str) -> None:
    code, out, _ = run(capsys, "retrieve", pacs_spec, "--via", "get", "-k", "PatientID=NOBODY")
    assert code == 0 and "nothing" in out


def test_retrieve_move_destination_unknown(
    capsys: pytest.CaptureFixture[str], pacs_spec: str, corpus: Corpus, tmp_path: Path
) -> None:
    study = sorted(corpus.studies("PAT002"))[0]
    code, _, err = run(
        capsys,
        "retrieve",
        pacs_spec,
        "-aet",
        "UNKNOWNAE",
        "--port",
        free_port(),
        "-k",
        f"StudyInstanceUID={study}",
        "-o",
        tmp_path,
    )
    assert code == 5
    # (the archive runs in this process: its own warning is on stderr too)
    errors = [line for line in err.splitlines() if line.startswith("aiodicomnet retrieve:")]
    assert len(errors) == 1 and "0xA801" in errors[0]


@pytest.mark.orthanc
def test_retrieve_orthanc_move_and_get(
    capsys: pytest.CaptureFixture[str],
    orthanc_loaded: OrthancServer,
    corpus: Corpus,
    move_destination: Any,
    tmp_path: Path,
) -> None:
    spec = f"ORTHANC@127.0.0.1:{orthanc_loaded.dicom_port}"
    study = sorted(corpus.studies("PAT002"))[0]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study}
    # Orthanc knows ADNMOVE at the move_destination port: the command listens there.
    code, out, err = run(
        capsys,
        "retrieve",
        spec,
        "-aet",
        "ADNMOVE",
        "--port",
        move_destination.port,
        "-k",
        f"StudyInstanceUID={study}",
        "-o",
        tmp_path / "move",
    )
    assert code == 0, err
    assert {p.stem for p in files_under(tmp_path / "move")} == expected
    assert "by C-MOVE" in out

    series = sorted(corpus.series(study))[1]
    code, out, err = run(
        capsys,
        "retrieve",
        spec,
        "--via",
        "get",
        "-L",
        "SERIES",
        "-k",
        f"SeriesInstanceUID={series}",
        "-o",
        tmp_path / "get",
    )
    assert code == 0, err
    assert {p.stem for p in files_under(tmp_path / "get")} == {
        ds.SOPInstanceUID for ds in corpus.instances(series)
    }


# -- store ------------------------------------------------------------------------------


def test_store_ok_and_partial(
    capsys: pytest.CaptureFixture[str], pacs: Archive, pacs_spec: str, tmp_path: Path
) -> None:
    series = make_series(3, patient_id="CLISTORE", patient_name="Store^Cli")
    write_files(tmp_path / "good" / "deeper", series[:2])
    code, out, err = run(capsys, "store", pacs_spec, tmp_path / "good")
    assert code == 0, err
    assert out.startswith("Stored 2 of 2 instances")

    garbage = tmp_path / "bad" / "garbage.dcm"
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not DICOM")
    good = write_files(tmp_path / "bad", series[2:])
    code, out, err = run(capsys, "store", pacs_spec, garbage, *good, "--json")
    assert code == 6
    records = json_lines(out)
    by_source = {r.get("source"): r for r in records if r["type"] == "instance"}
    assert by_source[str(garbage)]["ok"] is False
    assert by_source[str(good[0])]["ok"] is True
    assert records[-1] == {**records[-1], "type": "result", "stored": 1, "failed": 1}
    assert "not stored" in err and "Traceback" not in err


def test_store_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "store", "A@127.0.0.1:1", tmp_path / "nothing")
    assert code == 2 and "no such file" in err


# -- serve ------------------------------------------------------------------------------


@pytest.mark.dcmtk
def test_serve_receives_from_storescu(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, no_leaks: Any
) -> None:
    files = write_files(tmp_path / "send", make_series(3, patient_id="SERVE01"))
    port = free_port()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(
            main(
                [
                    "serve",
                    "-aet",
                    "ADNSERVE",
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "-o",
                    str(tmp_path / "in"),
                    "--count",
                    "3",
                ]
            )
        )
    )
    thread.start()
    try:
        wait_for_port("127.0.0.1", port, 30)
        sent = dcmtk_tool("storescu", "-aec", "ADNSERVE", "127.0.0.1", str(port), *files)
        assert sent.returncode == 0, sent.stderr
    finally:
        thread.join(30)
    assert codes == [0]
    out = capsys.readouterr().out
    assert out.count("received ") == 3
    assert {p.name for p in files_under(tmp_path / "in")} == {p.name for p in files}


@pytest.mark.dcmtk
def test_serve_as_a_process_stops_on_sigint(tmp_path: Path) -> None:
    files = write_files(tmp_path / "send", make_series(2, patient_id="SERVE02"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiodicomnet",
            "serve",
            "--json",
            "-aet",
            "ADNPROC",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "-o",
            str(tmp_path / "in"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        listening = json.loads(process.stdout.readline())
        assert listening["type"] == "listening" and listening["ae_title"] == "ADNPROC"
        port = listening["port"]
        sent = dcmtk_tool("storescu", "-aec", "ADNPROC", "127.0.0.1", str(port), *files)
        assert sent.returncode == 0, sent.stderr
        received = [json.loads(process.stdout.readline()) for _ in files]
        assert {r["sop_instance_uid"] for r in received} == {p.stem for p in files}
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert json_lines(rest) == [{"type": "stopped", "reason": "signal", "received": 2}]
    assert len(files_under(tmp_path / "in")) == 2


def test_serve_port_in_use(capsys: pytest.CaptureFixture[str], pacs: Archive) -> None:
    code, _, err = run(capsys, "serve", "--port", pacs.port, "--host", "127.0.0.1", "--count", "1")
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{pacs.port}" in err and "Traceback" not in err


async def test_serve_archive_with_dicomweb(tmp_path: Path, no_leaks: Any) -> None:
    """``serve --archive --dicomweb``: STOW-RS into the archive, then the same instances
    found over QIDO-RS and C-FIND and retrieved over WADO-RS; SIGINT stops both faces."""
    files = write_files(tmp_path / "send", make_series(3, patient_id="SERVEWEB"))
    command = [
        sys.executable,
        "-m",
        "aiodicomnet",
        "serve",
        "--json",
        "-aet",
        "ADNWEBSRV",
        "--port",
        "0",
        "--http-port",
        "0",
        "--host",
        "127.0.0.1",
        "--archive",
        "--dicomweb",
        "-o",
        str(tmp_path / "archive"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    async with await anyio.open_process(command, env=env) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            stdout = BufferedByteReceiveStream(process.stdout)
            with anyio.fail_after(60):
                listening = json.loads(await stdout.receive_until(b"\n", 65536))
            url = listening["dicomweb_url"]
            assert url.startswith("http://127.0.0.1:") and url.endswith("/dicom-web")
            web = WebNode(url)
            dimse = Node("ADNWEBSRV", "127.0.0.1", listening["port"])
            async with Client("ADNCLI") as client:
                stored = await client.store(web, files)  # STOW-RS
                assert stored.ok and len(stored.succeeded) == 3
                query = Query.study(PatientID="SERVEWEB")
                over_http = await client.find(web, query)  # QIDO-RS
                over_dimse = await client.find(dimse, query)  # C-FIND, the same index
                assert [str(ds.StudyInstanceUID) for ds in over_http] == [
                    str(ds.StudyInstanceUID) for ds in over_dimse
                ]
                assert over_http[0].NumberOfStudyRelatedInstances == 3
                study = Query.study(StudyInstanceUID=over_http[0].StudyInstanceUID)
                received = await client.retrieve(web, study)  # WADO-RS
                assert {inst.sop_instance_uid for inst in received} == {p.stem for p in files}
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                code = await process.wait()
                rest = bytearray()
                with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
                    while True:
                        rest += await stdout.receive()
                err = b"".join([chunk async for chunk in process.stderr])
        finally:
            if process.returncode is None:
                process.kill()
    assert code == 0, err.decode(errors="replace")
    # What came over STOW-RS is indexed, not listed as received over DIMSE.
    assert json_lines(rest.decode()) == [{"type": "stopped", "reason": "signal", "received": 0}]
    assert len(files_under(tmp_path / "archive" / "files")) == 3


def test_serve_dicomweb_usage_and_port_in_use(
    capsys: pytest.CaptureFixture[str], pacs: Archive, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "serve", "--dicomweb", "--count", "1")
    assert code == 2 and "--dicomweb needs --archive" in err
    code, _, err = run(capsys, "serve", "--archive", "--dicomweb", "--http-port", "70000")
    assert code == 2 and "outside 0-65535" in err
    # The HTTP port taken (by the PACS's DIMSE listener): a clear error, the archive stopped.
    code, _, err = run(
        capsys,
        "serve",
        "--archive",
        "--dicomweb",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--http-port",
        pacs.port,
        "-o",
        tmp_path / "archive",
        "--count",
        "1",
    )
    assert code == 1 and "Traceback" not in err
    assert f"cannot listen on 127.0.0.1:{pacs.port} (HTTP)" in err


# -- nodes ------------------------------------------------------------------------------


def test_nodes(
    capsys: pytest.CaptureFixture[str], pacs: Archive, pacs_spec: str, config_path: Path
) -> None:
    assert run(capsys, "nodes", "add", "pacs", pacs_spec, "-d", "the embedded PACS")[0] == 0
    dead = f"DEAD@127.0.0.1:{free_port()}"
    assert run(capsys, "nodes", "add", "dead", dead)[0] == 0
    assert config_path.exists()

    code, out, _ = run(capsys, "nodes", "list", "--json")
    assert code == 0
    assert json_lines(out) == [
        {
            "name": "dead",
            "ae_title": "DEAD",
            "host": "127.0.0.1",
            "port": int(dead.split(":")[-1]),
            "description": None,
            "tls": False,
        },
        {
            "name": "pacs",
            "ae_title": PACS_AE,
            "host": "127.0.0.1",
            "port": pacs.port,
            "description": "the embedded PACS",
            "tls": False,
        },
    ]
    code, out, _ = run(capsys, "nodes", "list")
    assert "the embedded PACS" in out and str(config_path) in out

    # echo all: one fails, so the exit code is its code
    code, out, _ = run(capsys, "nodes", "echo")
    assert code == 3
    assert out.startswith("FAIL  dead (DEAD@") and f"ok    pacs ({pacs_spec})" in out

    # a configured name works wherever a node is expected
    assert run(capsys, "echo", "pacs")[0] == 0
    code, _, err = run(capsys, "nodes", "add", "pacs", "X@h:1")
    assert code == 2 and "exists already" in err
    assert run(capsys, "nodes", "add", "pacs", pacs_spec, "--force")[0] == 0

    assert run(capsys, "nodes", "remove", "dead")[0] == 0
    code, out, _ = run(capsys, "nodes", "echo", "--json")
    assert code == 0
    assert [r["node"] for r in json_lines(out)] == ["pacs"]
    code, _, err = run(capsys, "nodes", "remove", "dead")
    assert code == 2 and "no node named 'dead'" in err


def test_nodes_local(capsys: pytest.CaptureFixture[str], config_path: Path, tmp_path: Path) -> None:
    code, out, _ = run(
        capsys, "nodes", "local", "-aet", "MYWS", "--port", "11999", "--storage", tmp_path / "dicom"
    )
    assert code == 0 and "MYWS" in out
    text = config_path.read_text()
    assert 'ae_title = "MYWS"' in text and "port = 11999" in text
    code, out, _ = run(capsys, "nodes", "local", "--json")
    assert json_lines(out)[0]["storage"] == str(tmp_path / "dicom")
    assert run(capsys, "nodes", "local", "-aet", "WAY TOO LONG AE TITLE")[0] == 2


# -- demo -------------------------------------------------------------------------------


def test_demo_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "demo", "--json", "--dir", tmp_path / "tour")
    assert code == 0, err
    steps = json_lines(out)
    assert len(steps) == 12 and all(step["ok"] for step in steps)
    assert "QIDO-RS" in steps[10]["step"] and "WADO-RS" in steps[11]["step"]
    assert (tmp_path / "tour" / "pacs" / "index.sqlite").exists()


async def test_tour(corpus: Corpus, no_leaks: Any) -> None:
    lines: list[str] = []
    report = await tour(out=lines.append)
    assert report.ok, report.error
    assert [step.ok for step in report.steps] == [True] * 12
    text = "\n".join(lines)
    for words in ("C-ECHO", "C-FIND", "C-MOVE", "C-GET", "C-STORE", "Müller^Jürgen", "Tour done"):
        assert words in text
    # The DICOMweb steps: the Archive's DICOMweb face, found and retrieved from.
    assert "[11/12] Find the studies over DICOMweb (QIDO-RS)" in lines
    assert "[12/12] Retrieve the new series over DICOMweb (WADO-RS), into memory" in lines
    started = report.steps[1].detail
    assert "DICOMweb (QIDO-RS, WADO-RS, STOW-RS) at http://127.0.0.1:" in started
    qido = report.steps[10].detail
    studies = len(corpus.studies())
    assert f"the same {studies} studies as C-FIND" in qido
    assert qido.count("\n") == studies  # one line per study, then the summary
    wado = report.steps[11].detail
    assert wado.startswith("3 instances (") and "same SOP Instance UIDs, same pixels" in wado
    assert "      WADO-RS final: 3 received, 0 failed" in lines
    assert report.directory is None  # the temporary directory is gone


async def test_tour_cancelled(no_leaks: Any) -> None:
    """Cancelled midway, with its DICOMweb face serving, the tour stops cleanly: no
    thread or socket left, its temporary directory removed."""
    lines: list[str] = []
    with anyio.CancelScope() as scope:

        def out(line: str) -> None:
            lines.append(line)
            if line.startswith("[5/"):
                scope.cancel()

        await tour(out=out, instances_per_series=1)
    assert scope.cancelled_caught and lines[-1].startswith("[5/12]")
    started = next(line for line in lines if "(index and files under " in line)
    pacs_dir = Path(started.split("(index and files under ", 1)[1].rstrip(")"))
    assert pacs_dir.name == "pacs" and not pacs_dir.parent.exists()


async def test_tour_without_hypercorn(monkeypatch: pytest.MonkeyPatch, no_leaks: Any) -> None:
    """Where the Archive cannot serve DICOMweb, the tour leaves those steps out and says why."""
    monkeypatch.setattr("aiodicomnet.demo._web_available", lambda: False)
    lines: list[str] = []
    report = await tour(out=lines.append, instances_per_series=1)
    assert report.ok, report.error
    assert len(report.steps) == 10 and lines[0] == "[1/10] Generate sample studies"
    assert "DICOMweb" not in report.steps[1].detail
    assert lines[-2] == WEB_MISSING and lines[-1].startswith("Tour done: 10 steps")
