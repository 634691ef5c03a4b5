"""Cohort jobs against two real Orthanc servers: find, C-GET, de-identify, kill, resume.

The done-when test: a 20-study cohort list (by accession number, by study UID,
by patient ID and date range) spread over two Orthanc instances, pulled by the
``aiodicomnet cohort`` command in a subprocess that is killed (SIGKILL) once it
has reported some studies done, then resumed; at the end every study is in the
output exactly once, nothing of the originals is left in any file, and the
manifest accounts for every row.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from aiodicomnet import Client
from aiodicomnet.errors import CohortInputError
from aiodicomnet.research.cohort import (
    CohortSettings,
    DeidSettings,
    read_cohort,
    run_cohort,
)
from aiodicomnet.research.manifest import JobState
from aiodicomnet.samples import make_series, uid
from tests.peers.orthanc import OrthancServer

pytestmark = pytest.mark.orthanc

KEY = "cohort-test-key"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Cohort:
    """Two Orthanc servers holding 20 generated studies, and what a cohort list needs."""

    a: OrthancServer
    b: OrthancServer
    datasets: list[Dataset] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)  # original Study Instance UIDs, in order
    rows: list[dict[str, str]] = field(default_factory=list)
    burned_in_uid: str = ""

    @property
    def identifying(self) -> set[bytes]:
        """Every original value that must not survive: names, IDs, accessions, UIDs, dates."""
        values: set[str] = set()
        for ds in self.datasets:
            values.update(
                {
                    str(ds.PatientName),
                    ds.PatientID,
                    ds.AccessionNumber,
                    ds.StudyInstanceUID,
                    ds.SeriesInstanceUID,
                    ds.SOPInstanceUID,
                    ds.StudyDate,
                    ds.PatientBirthDate,
                }
            )
        return {v.encode() for v in values if v}

    def expected_instances(self) -> int:
        return len(self.datasets) - 1  # the burned-in one is withheld


def make_cohort(a: OrthancServer, b: OrthancServer, tag: str) -> Cohort:
    """20 studies of 10 patients, 2 series of 2 instances each; 0-9 on ``a``, 10-19 on
    ``b``, study 0 on both; study 5 has a third series, one secondary capture with
    burned-in text."""
    cohort = Cohort(a, b)
    for i in range(20):
        patient = f"{tag}P{i // 2:02d}"
        study_uid = uid()
        date = f"202401{i + 1:02d}"
        study: list[Dataset] = []
        for s in range(2):
            study += make_series(
                2,
                study_uid=study_uid,
                patient_id=patient,
                patient_name=f"{tag}^Patient{i // 2:02d}",
                birth_date=f"1960{(i // 2) + 1:02d}15",
                accession=f"{tag}A{i:02d}",
                study_date=date,
                modality="CT" if s == 0 else "MR",
                series_number=s + 1,
                series_description=f"{'AXIAL' if s == 0 else 'SAG'} {tag}",
                seed=i * 10 + s,
            )
        if i == 5:
            sc = make_series(
                1,
                study_uid=study_uid,
                patient_id=patient,
                patient_name=f"{tag}^Patient{i // 2:02d}",
                birth_date=f"1960{(i // 2) + 1:02d}15",
                accession=f"{tag}A{i:02d}",
                study_date=date,
                series_number=9,
                seed=99,
            )[0]
            sc.SOPClassUID = SecondaryCaptureImageStorage
            sc.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
            sc.Modality = "OT"
            sc.BurnedInAnnotation = "YES"
            cohort.burned_in_uid = sc.SOPInstanceUID
            study.append(sc)
        cohort.datasets += study
        cohort.studies.append(study_uid)
        (a if i < 10 else b).upload(study)
        if i == 0:
            b.upload(study)
        if i % 3 == 0:
            cohort.rows.append({"AccessionNumber": f"{tag}A{i:02d}"})
        elif i % 3 == 1:
            cohort.rows.append({"StudyInstanceUID": study_uid})
        else:
            cohort.rows.append({"PatientID": patient, "StudyDateFrom": date, "StudyDateTo": date})
    cohort.rows.append({"AccessionNumber": f"{tag}NOSUCH"})
    return cohort


@pytest.fixture(scope="module")
def two_orthancs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """Two Orthanc servers of this module's own (the shared one is left alone)."""
    a = OrthancServer(tmp_path_factory.mktemp("cohort-a"), ae_title="COHORTA")
    b = OrthancServer(tmp_path_factory.mktemp("cohort-b"), ae_title="COHORTB", dicomweb=True)
    with a, b:
        yield a, b


def write_list(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["AccessionNumber", "StudyInstanceUID", "PatientID", "StudyDateFrom", "StudyDateTo"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def dicom_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if ".cohort" not in p.parts)


def assert_deidentified(cohort: Cohort, output: Path) -> None:
    """Nothing original in any byte of any file; one consistent pseudonym per study."""
    secrets_ = cohort.identifying
    files = dicom_files(output)
    assert len(files) == cohort.expected_instances()
    studies: dict[str, set[str]] = {}
    for path in files:
        data = path.read_bytes()
        left = [v for v in secrets_ if v in data]
        assert not left, f"{path.relative_to(output)} still holds {left[:3]}"
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert path.parent.parent.name == ds.StudyInstanceUID  # the tidy tree: patient/study/series
        studies.setdefault(ds.StudyInstanceUID, set()).add(ds.PatientID)
    assert len(studies) == 20
    assert all(len(patients) == 1 for patients in studies.values())
    # repeatable: the study directories are the keyed pseudonyms of the originals
    deid = DeidSettings(key=KEY).deidentifier()
    assert set(studies) == {deid.pseudonym_uid(s) for s in cohort.studies}


def read_manifest(output: Path) -> list[dict[str, str]]:
    with open(output / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aiodicomnet", *args]


def test_cohort_killed_and_resumed(two_orthancs: tuple[Any, Any], tmp_path: Path) -> None:
    a, b = two_orthancs
    cohort = make_cohort(a, b, "KILL")
    listing = write_list(tmp_path / "cohort.csv", cohort.rows)
    output = tmp_path / "out"
    mapping = tmp_path / "private" / "mapping.sqlite"
    env = {
        **os.environ,
        "AIODICOMNET_DEID_KEY": KEY,
        "AIODICOMNET_CONFIG": str(tmp_path / "c.toml"),
    }
    command = cli(
        "cohort", str(listing), str(a.node), str(b.node), "-o", str(output),
        "--mapping", str(mapping), "--per-node", "1", "--json",
    )  # fmt: skip

    # first run: killed with SIGKILL once it has reported 6 studies done
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    done_before_kill = 0
    try:
        assert first.stdout is not None
        for line in first.stdout:
            event = json.loads(line)
            if event["type"] == "planned":
                assert event["studies"] == 20
            if event["type"] == "study" and event["status"] == "done":
                done_before_kill += 1
                if done_before_kill == 6:
                    first.send_signal(signal.SIGKILL)
                    break
    finally:
        first.kill()
        _, errors = first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL, errors.decode(errors="replace")
    committed = {s.key for s in JobState(output).studies() if s.status == "done"}
    assert 6 <= len(committed) < 20

    # second run: resumes, fetches only what was not committed
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    planned = next(e for e in events if e["type"] == "planned")
    assert planned["studies"] == 20 - len(committed)
    assert all(e["status"] == "done" for e in events if e["type"] == "study")

    state = JobState(output).studies()
    assert len(state) == 20
    assert all(s.status == "done" and s.retrievals == 1 for s in state)
    assert_deidentified(cohort, output)
    assert not any((output / ".cohort" / "staging").glob("*"))

    manifest = read_manifest(output)
    assert [int(r["line"]) for r in manifest] == list(range(2, 23))
    by_line = {int(r["line"]): r for r in manifest}
    assert by_line[22]["status"] == "not found"
    assert all(by_line[line]["status"] == "done" for line in range(2, 22))
    assert all(by_line[line]["studies_retrieved"] == "1" for line in range(2, 22))
    assert by_line[7]["withheld"] == "1"  # study 5's burned-in secondary capture
    assert sum(int(r["instances"]) for r in manifest) == cohort.expected_instances()

    # the mapping table is where it was asked to be, and maps back
    assert not (output / "mapping.sqlite").exists()
    from aiodicomnet.research.deid import MappingTable

    table = MappingTable(mapping)
    first_study = cohort.studies[0]
    pseudonym = table.pseudonym("StudyInstanceUID", first_study)
    assert pseudonym is not None and table.original("StudyInstanceUID", pseudonym) == first_study

    # a third run has nothing to do
    third = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert third.returncode == 0, third.stderr
    assert {"type": "planned", "studies": 0} in [json.loads(x) for x in third.stdout.splitlines()]


def test_ctrl_c_stops_the_cli_with_a_manifest(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    a, b = two_orthancs
    cohort = make_cohort(a, b, "INT")
    listing = write_list(tmp_path / "cohort.csv", cohort.rows)
    output = tmp_path / "out"
    env = {**os.environ, "AIODICOMNET_DEID_KEY": KEY, "AIODICOMNET_CONFIG": str(tmp_path / "c")}
    command = cli(
        "cohort", str(listing), str(a.node), str(b.node), "-o", str(output), "--per-node", "1",
        "--json",
    )  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["type"] == "study":
                proc.send_signal(signal.SIGINT)  # Ctrl-C after the first study
                break
        _, errors = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, errors.decode(errors="replace")
    manifest = read_manifest(output)
    assert len(manifest) == 21  # every row accounted for, finished or not
    assert "pending" in {r["status"] for r in manifest}
    assert not any((output / ".cohort" / "staging").glob("*"))  # the cancelled attempts cleaned


async def test_resume_fetches_again_a_study_whose_file_was_damaged(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    a, b = two_orthancs
    cohort = make_cohort(a, b, "DMG")
    rows = [r for r in read_cohort(write_list(tmp_path / "c.csv", cohort.rows[:4]))]
    settings = CohortSettings(output=tmp_path / "out", deid=DeidSettings(key=KEY), backoff=0.01)
    async with Client("ADNCOHORT") as client:
        reports = await run_cohort(rows, [a.node, b.node], settings, client=client)
        assert [r.status for r in reports] == ["done"] * 4
        victim = dicom_files(settings.output)[0]
        victim.write_bytes(victim.read_bytes()[:-10])
        outcomes: list[str] = []
        await run_cohort(
            rows,
            [a.node, b.node],
            settings,
            client=client,
            on_study=lambda o, n, t: outcomes.append(o.status),
        )
    assert outcomes == ["done"]  # only the damaged study, fetched again
    state = JobState(settings.output).studies()
    assert sorted(s.retrievals for s in state) == [1, 1, 1, 2]
    assert dcmread(victim).SOPInstanceUID  # whole again


async def test_cancelled_job_writes_its_manifest_and_resumes(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    import anyio

    a, b = two_orthancs
    cohort = make_cohort(a, b, "CNC")
    rows = read_cohort(write_list(tmp_path / "c.csv", cohort.rows[:6]))
    settings = CohortSettings(
        output=tmp_path / "out", deid=DeidSettings(key=KEY), per_node=1, backoff=0.01
    )
    async with Client("ADNCOHORT") as client:
        with anyio.CancelScope() as scope:

            def stop_after_two(outcome: Any, finished: int, total: int) -> None:
                if finished == 2:
                    scope.cancel()

            await run_cohort(rows, [a.node], settings, client=client, on_study=stop_after_two)
        assert scope.cancelled_caught
        manifest = read_manifest(settings.output)
        assert len(manifest) == 6
        assert {r["status"] for r in manifest} <= {"done", "pending"}
        assert sum(r["status"] == "done" for r in manifest) >= 2
        reports = await run_cohort(rows, [a.node], settings, client=client)
    assert [r.status for r in reports] == ["done"] * 6
    assert all(s.retrievals == 1 for s in JobState(settings.output).studies())


async def test_filters_failures_and_unreachable_nodes(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    from aiodicomnet import Node
    from tests.peers.util import free_port

    a, b = two_orthancs
    cohort = make_cohort(a, b, "FLT")
    rows = read_cohort(
        write_list(tmp_path / "c.csv", [cohort.rows[1]])  # study 1, by UID, on a
    )
    filtered = tmp_path / "f.csv"
    filtered.write_text(
        "StudyInstanceUID,Modality,SeriesDescription\n"
        f"{cohort.studies[1]},MR,SAG*\n"
        f"{cohort.studies[2]},US,\n"
    )
    settings = CohortSettings(output=tmp_path / "out", deid=DeidSettings(key=KEY), backoff=0.01)
    reports = await run_cohort(filtered, [a.node], settings)
    assert [(r.status, r.instances) for r in reports] == [("done", 2), ("not found", 0)]
    assert {dcmread(p).Modality for p in dicom_files(settings.output)} == {"MR"}

    dead = Node("NOBODY", "127.0.0.1", free_port())
    settings2 = CohortSettings(
        output=tmp_path / "out2", deid=DeidSettings(key=KEY), attempts=2, backoff=0.01
    )
    reports = await run_cohort(rows, [dead], settings2)
    assert reports[0].status == "failed"
    assert "ConnectError" in reports[0].detail or "refused" in reports[0].detail.lower()
    manifest = read_manifest(settings2.output)
    assert manifest[0]["status"] == "failed" and manifest[0]["detail"]


def test_bad_cohort_lists_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    cases = {
        "": "empty",
        "Foo,Bar\n1,2\n": "no known column",
        "PatientID,Modality\n,CT\n": "line 2",
        "PatientID,StudyDateFrom\nP1,2024-13-45\n": "line 2",
        "AccessionNumber\n": "no rows",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.csv"
        path.write_text(text)
        with pytest.raises(CohortInputError, match=message):
            read_cohort(path)


def test_cli_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiodicomnet.cli import main

    monkeypatch.setenv("AIODICOMNET_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("AIODICOMNET_DEID_KEY", raising=False)
    listing = write_list(tmp_path / "c.csv", [{"AccessionNumber": "A1"}])
    node = "PACS@127.0.0.1:104"
    out = str(tmp_path / "out")
    assert main(["cohort", str(listing), node, "-o", out]) == 2  # no key
    key = tmp_path / "key"
    key.write_text(KEY)
    bad = tmp_path / "bad.csv"
    bad.write_text("PatientID,StudyDateFrom\nP1,20241345\n")
    assert main(["cohort", str(bad), node, "-o", out, "--key-file", str(key)]) == 2
    inside = ["--key-file", str(key), "--mapping", str(tmp_path / "out" / "m.sqlite")]
    assert main(["cohort", str(listing), node, "-o", out, *inside]) == 2
    assert main(["cohort", str(listing), node, "-o", out, "--key-file", str(tmp_path / "no")]) == 2
    assert (
        main(["cohort", str(tmp_path / "none.csv"), node, "-o", out, "--key-file", str(key)]) == 2
    )


def test_mapping_table_inside_the_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inside the output"):
        CohortSettings(
            output=tmp_path / "out",
            deid=DeidSettings(key=KEY, mapping=tmp_path / "out" / "map.sqlite"),
        )


async def test_a_dicomweb_node_through_the_same_job(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    from aiodicomnet import Node

    a, b = two_orthancs
    cohort = make_cohort(a, b, "WEB")
    web = Node.web(f"{b.http_url}/dicom-web", name="cohort-web")
    rows = read_cohort(
        write_list(tmp_path / "c.csv", cohort.rows[9:12])
    )  # studies 9 (a), 10, 11 (b)
    settings = CohortSettings(output=tmp_path / "out", deid=DeidSettings(key=KEY), backoff=0.01)
    reports = await run_cohort(rows, [a.node, web], settings)  # QIDO-RS and WADO-RS on b
    assert [(r.status, r.instances) for r in reports] == [("done", 4)] * 3
    secrets_ = cohort.identifying
    for path in dicom_files(settings.output):
        assert not [v for v in secrets_ if v in path.read_bytes()]
    assert {s.node for s in JobState(settings.output).studies()} == {str(a.node), str(web)}


async def test_c_move_to_our_storage_server(two_orthancs: tuple[Any, Any], tmp_path: Path) -> None:
    from aiodicomnet import StorageServer

    a, b = two_orthancs
    cohort = make_cohort(a, b, "MOV")
    rows = read_cohort(write_list(tmp_path / "c.csv", cohort.rows[4:7]))  # studies 4, 5, 6 on a
    settings = CohortSettings(
        output=tmp_path / "out", deid=DeidSettings(key=KEY), method="move", backoff=0.01
    )
    async with StorageServer("COHORTSCP") as scp:
        a.add_modality("cohortscp", "COHORTSCP", "127.0.0.1", scp.port)
        try:
            reports = await run_cohort(rows, [a.node], settings, move_server=scp)
        finally:
            a.remove_modality("cohortscp")
    # study 5's burned-in instance arrives (C-MOVE) and is withheld before it is written
    assert [(r.status, r.instances, r.withheld) for r in reports] == [
        ("done", 4, 0),
        ("done", 4, 1),
        ("done", 4, 0),
    ]
    secrets_ = cohort.identifying
    files = dicom_files(settings.output)
    assert len(files) == 12
    for path in files:
        assert not [v for v in secrets_ if v in path.read_bytes()]


async def test_flag_policy_keeps_and_counts_burned_in_instances(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    a, b = two_orthancs
    cohort = make_cohort(a, b, "FLG")
    rows = read_cohort(write_list(tmp_path / "c.csv", cohort.rows[5:6]))  # study 5
    settings = CohortSettings(
        output=tmp_path / "out", deid=DeidSettings(key=KEY, burned_in="flag"), backoff=0.01
    )
    reports = await run_cohort(rows, [a.node], settings)
    assert [(r.instances, r.withheld, r.flagged) for r in reports] == [(5, 0, 1)]
    assert read_manifest(settings.output)[0]["flagged"] == "1"
    removed = sorted(dcmread(p).PatientIdentityRemoved for p in dicom_files(settings.output))
    assert removed == ["NO", "YES", "YES", "YES", "YES"]


async def test_a_study_is_tried_again_then_failed_then_fetched_on_resume(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    from dataclasses import replace

    from aiodicomnet import Node
    from aiodicomnet.research.cohort import plan_cohort, retrieve_study
    from aiodicomnet.research.manifest import JobState
    from tests.peers.util import free_port

    a, b = two_orthancs
    cohort = make_cohort(a, b, "RTY")
    rows = read_cohort(write_list(tmp_path / "c.csv", cohort.rows[:1]))
    settings = CohortSettings(
        output=tmp_path / "out", deid=DeidSettings(key=KEY), attempts=3, backoff=0.01
    )
    deid = settings.deid.deidentifier()
    async with Client("ADNCOHORT") as client:
        [task] = await plan_cohort(client, rows, [a.node], settings)
        gone = replace(task, node=Node("COHORTA", "127.0.0.1", free_port()))  # nobody there
        outcome = await retrieve_study(client, gone, settings, deid)
        assert outcome.status == "failed" and "ConnectError" in outcome.detail
        [record] = JobState(settings.output).studies()
        assert (record.status, record.attempts, record.retrievals) == ("failed", 3, 0)
        reports = await run_cohort(rows, [a.node], settings, client=client)  # resume
    assert reports[0].status == "done"
    [record] = JobState(settings.output).studies()
    assert (record.status, record.attempts, record.retrievals) == ("done", 4, 1)


async def test_the_loop_stays_free_and_nothing_leaks(
    two_orthancs: tuple[Any, Any], tmp_path: Path, no_leaks: Any
) -> None:
    from tests.test_loop_lag import MAX_GAP, measure

    a, b = two_orthancs
    cohort = make_cohort(a, b, "LAG")
    rows = read_cohort(write_list(tmp_path / "c.csv", cohort.rows))
    settings = CohortSettings(
        output=tmp_path / "out",
        deid=DeidSettings(key=KEY, mapping=tmp_path / "m.sqlite"),
        per_node=1,  # one de-identifying thread per node, besides the loop, on 2 cores
    )
    reports, ticker = await measure(lambda: run_cohort(rows, [a.node, b.node], settings))
    assert sum(r.status == "done" for r in reports) == 20
    assert ticker.ticks > 0
    assert ticker.max_gap < MAX_GAP, f"loop blocked for {ticker.max_gap * 1000:.1f} ms"


async def test_a_changed_list_is_refused_on_resume(
    two_orthancs: tuple[Any, Any], tmp_path: Path
) -> None:
    a, b = two_orthancs
    cohort = make_cohort(a, b, "CHG")
    settings = CohortSettings(output=tmp_path / "out", deid=DeidSettings(key=KEY))
    await run_cohort(write_list(tmp_path / "c.csv", cohort.rows[:1]), [a.node], settings)
    with pytest.raises(CohortInputError, match="differs"):
        await run_cohort(write_list(tmp_path / "d.csv", cohort.rows[1:2]), [a.node], settings)
