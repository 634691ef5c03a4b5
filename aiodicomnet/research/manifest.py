"""What a cohort job knows of each row and study, kept so that it resumes.

The state lives in one SQLite file, ``<output>/.cohort/state.sqlite``, shared
by every process of a job (the local one, or the workers of a Dask cluster on
one file system): SQLite's locking makes each update atomic, and a process
killed mid-write leaves the last committed state.

It holds nothing that names a patient: studies are known by a keyed hash of
their original Study Instance UID (:meth:`~aiodicomnet.research.deid.Deidentifier`'s
key), rows by their line number and a hash of their content, files by their
de-identified paths. The original values stay in the user's cohort list.

A study counts as done only through :meth:`JobState.commit`: in one
transaction, the study's finished directory is moved into the output tree and
the study is marked done with the size and SHA-256 of every file. A second
process that finishes the same study later (a Dask task run again after its
worker was lost) finds it done and discards its copy, so each study has
exactly one successful retrieval (``retrievals`` counts them, for checking).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .._files import atomic_write

__all__ = ["FileRecord", "JobState", "RowReport", "StudyRecord", "write_manifest"]

STATE_DIR = ".cohort"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rows ("
    " line INTEGER PRIMARY KEY, digest TEXT NOT NULL, status TEXT NOT NULL,"
    " found INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS studies ("
    " key TEXT PRIMARY KEY, line INTEGER NOT NULL, node TEXT NOT NULL DEFAULT '',"
    " status TEXT NOT NULL, directory TEXT NOT NULL DEFAULT '',"
    " instances INTEGER NOT NULL DEFAULT 0, withheld INTEGER NOT NULL DEFAULT 0,"
    " flagged INTEGER NOT NULL DEFAULT 0,"
    " files TEXT NOT NULL DEFAULT '[]', attempts INTEGER NOT NULL DEFAULT 0,"
    " retrievals INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '')",
    # which rows found which studies (a study named by two rows is fetched once)
    "CREATE TABLE IF NOT EXISTS links (line INTEGER NOT NULL, key TEXT NOT NULL,"
    " PRIMARY KEY (line, key))",
)


@dataclass(frozen=True)
class FileRecord:
    """One written file: its path relative to the output root, size and SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass
class StudyRecord:
    """What the state says of one study (known by its keyed hash)."""

    key: str
    line: int
    node: str
    status: str
    directory: str
    instances: int
    withheld: int
    flagged: int
    files: list[FileRecord]
    attempts: int
    retrievals: int
    detail: str


@dataclass
class RowReport:
    """One line of the manifest: what became of one row of the cohort list.

    ``status`` is ``done`` (every study found was retrieved), ``not found``,
    ``failed`` (``detail`` says why), ``partial`` (some studies failed) or
    ``pending`` (not finished yet: the job was stopped).
    """

    line: int
    status: str
    found: int = 0
    retrieved: int = 0
    failed: int = 0
    instances: int = 0
    withheld: int = 0
    flagged: int = 0
    detail: str = ""
    directories: list[str] = field(default_factory=list)


class JobState:
    """The SQLite state of one cohort job under ``output``."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.directory = self.output / STATE_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "state.sqlite"
        with self._db() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    @contextlib.contextmanager
    def _db(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # -- rows ------------------------------------------------------------------

    def start_row(self, line: int, digest: str) -> str | None:
        """Record a row (once); return its stored digest when it differs from ``digest``."""
        with self._db(immediate=True) as db:
            row = db.execute("SELECT digest FROM rows WHERE line = ?", (line,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO rows (line, digest, status) VALUES (?, ?, 'pending')",
                    (line, digest),
                )
                return None
            return None if row[0] == digest else str(row[0])

    def set_row(
        self, line: int, status: str, *, found: int | None = None, detail: str = ""
    ) -> None:
        """Set a row's status (and how many studies its find returned)."""
        with self._db(immediate=True) as db:
            if found is None:
                db.execute(
                    "UPDATE rows SET status = ?, detail = ? WHERE line = ?", (status, detail, line)
                )
            else:
                db.execute(
                    "UPDATE rows SET status = ?, found = ?, detail = ? WHERE line = ?",
                    (status, found, detail, line),
                )

    # -- studies ---------------------------------------------------------------

    def add_study(self, key: str, line: int, node: str) -> None:
        """Record a study found for ``line`` (kept as it is if known already)."""
        with self._db(immediate=True) as db:
            db.execute(
                "INSERT OR IGNORE INTO studies (key, line, node, status)"
                " VALUES (?, ?, ?, 'pending')",
                (key, line, node),
            )
            db.execute("INSERT OR IGNORE INTO links VALUES (?, ?)", (line, key))

    def study(self, key: str) -> StudyRecord | None:
        """The record of one study, or ``None``."""
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM studies WHERE key = ?", (key,)).fetchone()
        return None if row is None else _record(row)

    def studies(self) -> list[StudyRecord]:
        """Every study recorded, by line."""
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM studies ORDER BY line, key").fetchall()
        return [_record(r) for r in rows]

    def attempt(self, key: str) -> None:
        """Count one more attempt at retrieving a study."""
        with self._db(immediate=True) as db:
            db.execute("UPDATE studies SET attempts = attempts + 1 WHERE key = ?", (key,))

    def fail(self, key: str, detail: str) -> None:
        """Mark a study failed (unless it is done: a later failure never undoes a success)."""
        with self._db(immediate=True) as db:
            db.execute(
                "UPDATE studies SET status = 'failed', detail = ?"
                " WHERE key = ? AND status != 'done'",
                (detail, key),
            )

    def reopen(self, key: str, detail: str) -> None:
        """Mark a done study pending again (its files failed verification)."""
        with self._db(immediate=True) as db:
            db.execute(
                "UPDATE studies SET status = 'pending', detail = ? WHERE key = ?", (detail, key)
            )

    def commit(
        self,
        key: str,
        staged: Path,
        final: Path,
        files: Callable[[], Sequence[FileRecord]],
        *,
        instances: int,
        withheld: int,
        flagged: int = 0,
    ) -> bool:
        """Move ``staged`` to ``final`` and mark the study done, at most once.

        Returns ``False`` (and removes ``staged``) when the study is done
        already. A directory at ``final`` that the state does not count as
        done (left by a process killed between its move and its commit) is
        replaced. ``files`` lists the files once they are in place.
        """
        with self._db(immediate=True) as db:
            row = db.execute("SELECT status FROM studies WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == "done":
                shutil.rmtree(staged, ignore_errors=True)
                return False
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, final)
            records = files()
            db.execute(
                "UPDATE studies SET status = 'done', directory = ?, instances = ?, withheld = ?,"
                " flagged = ?, files = ?, retrievals = retrievals + 1, detail = '' WHERE key = ?",
                (
                    final.relative_to(self.output).as_posix(),
                    instances,
                    withheld,
                    flagged,
                    json.dumps([[f.path, f.size, f.sha256] for f in records]),
                    key,
                ),
            )
        return True

    # -- the manifest ----------------------------------------------------------

    def report(self) -> list[RowReport]:
        """One :class:`RowReport` per row recorded, by line."""
        with self._db() as db:
            rows = db.execute(
                "SELECT line, status, found, detail FROM rows ORDER BY line"
            ).fetchall()
            links = db.execute("SELECT line, key FROM links").fetchall()
        by_key = {record.key: record for record in self.studies()}
        studies: dict[int, list[StudyRecord]] = {}
        for line, key in links:
            if key in by_key:
                studies.setdefault(line, []).append(by_key[key])
        reports = []
        for line, status, found, detail in rows:
            mine = studies.get(line, [])
            done = [s for s in mine if s.status == "done"]
            failed = [s for s in mine if s.status == "failed"]
            report = RowReport(
                line=line,
                status=status,
                found=found,
                retrieved=len(done),
                failed=len(failed),
                instances=sum(s.instances for s in done),
                withheld=sum(s.withheld for s in done),
                flagged=sum(s.flagged for s in done),
                detail=detail,
                directories=sorted(s.directory for s in done),
            )
            if status == "found":
                if mine and len(done) == len(mine):
                    report.status = "done"
                elif failed and len(done) + len(failed) == len(mine):
                    report.status = "failed" if not done else "partial"
                    report.detail = "; ".join(sorted({s.detail for s in failed}))
                else:
                    report.status = "pending"
            reports.append(report)
        return reports


_COLUMNS = (
    "key, line, node, status, directory, instances, withheld, flagged, files, attempts,"
    " retrievals, detail"
)


def _record(row: Sequence[object]) -> StudyRecord:
    key, line, node, status, directory, instances, withheld, flagged, files, attempts = row[:10]
    retrievals, detail = row[10:]
    return StudyRecord(
        key=str(key),
        line=int(str(line)),
        node=str(node),
        status=str(status),
        directory=str(directory),
        instances=int(str(instances)),
        withheld=int(str(withheld)),
        flagged=int(str(flagged)),
        files=[FileRecord(str(p), int(s), str(h)) for p, s, h in json.loads(str(files))],
        attempts=int(str(attempts)),
        retrievals=int(str(retrievals)),
        detail=str(detail),
    )


MANIFEST_COLUMNS = (
    "line",
    "status",
    "studies_found",
    "studies_retrieved",
    "studies_failed",
    "instances",
    "withheld",
    "flagged",
    "detail",
)


def write_manifest(path: Path, reports: Sequence[RowReport]) -> None:
    """Write the manifest CSV (one line per row of the cohort list) atomically.

    It names rows by line number and gives counts and reasons, never the
    de-identified directories: with the cohort list beside it, those would
    be a mapping table (kept apart, when wanted, in a :class:`MappingTable`).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for r in reports:
        writer.writerow(
            [
                r.line,
                r.status,
                r.found,
                r.retrieved,
                r.failed,
                r.instances,
                r.withheld,
                r.flagged,
                r.detail,
            ]
        )
    data = buffer.getvalue().encode()

    def write(f: BinaryIO) -> None:
        f.write(data)

    atomic_write(path, write)
