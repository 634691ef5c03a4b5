"""What the command line prints: lines, tables, JSON lines and progress bars.

Results go to standard output: tables and lines for people, or with
``--json`` one JSON object per line. Progress bars, notes and errors go to
standard error, so a pipe only ever sees results. Progress bars show only when
standard error is a terminal (and not with ``--json``).

Rich markup is never interpreted in data: DICOM values such as
``"[ANON]"`` are printed as they are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = ["Bar", "Output", "column_order", "format_size", "plural", "text_of"]

# Short column titles for the usual return keys.
_LABELS = {
    "NumberOfPatientRelatedStudies": "Studies",
    "NumberOfPatientRelatedSeries": "Series",
    "NumberOfPatientRelatedInstances": "Instances",
    "NumberOfStudyRelatedSeries": "Series",
    "NumberOfStudyRelatedInstances": "Instances",
    "NumberOfSeriesRelatedInstances": "Instances",
    "ModalitiesInStudy": "Modalities",
    "PatientBirthDate": "Birth date",
    "PatientName": "Patient name",
    "PatientID": "Patient ID",
    "PatientSex": "Sex",
    "AccessionNumber": "Accession",
    "StudyDescription": "Study description",
    "SeriesDescription": "Series description",
    "StudyDate": "Date",
    "StudyTime": "Time",
    "SeriesNumber": "#",
    "InstanceNumber": "#",
}


# Columns people read first; the rest follow in tag order, UIDs last.
_ORDER = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "SeriesNumber",
    "Modality",
    "SeriesDescription",
    "InstanceNumber",
)
_PLURALS = {"study": "studies", "series": "series", "image": "instances", "patient": "patients"}


def plural(n: int, word: str) -> str:
    """``"1 study"``, ``"2 studies"``; an IMAGE-level result is an instance."""
    singular = "instance" if word == "image" else word
    return f"{n} {singular}" if n == 1 else f"{n} {_PLURALS.get(word, word + 's')}"


def column_order(keywords: Sequence[str]) -> list[str]:
    """Keywords in reading order: names, dates, descriptions, counts, then UIDs."""

    def rank(keyword: str) -> tuple[int, int]:
        if keyword in _ORDER:
            return (0, _ORDER.index(keyword))
        return (2 if keyword.endswith("UID") else 1, keywords.index(keyword))

    return sorted(keywords, key=rank)


def text_of(value: object) -> str:
    """A DICOM value as one line of text (multiple values joined with ``\\``)."""
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(text_of(v) for v in value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def format_size(size: int) -> str:
    """Bytes in a human unit: ``"512 B"``, ``"1.5 MB"``."""
    amount = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"  # pragma: no cover - unreachable


class Output:
    """Where the command line writes (looked up at each write, so redirection works).

    Args:
        json_mode: results as JSON lines instead of tables and sentences.
        progress: allow progress bars (they still need a terminal on stderr).
    """

    def __init__(self, *, json_mode: bool = False, progress: bool = True) -> None:
        self.json_mode = json_mode
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.show_progress = progress and not json_mode

    @property
    def out(self) -> Console:
        """A console on the current standard output.

        Not on a terminal (a pipe, a file), tables take the width they need
        instead of being cut to 80 columns.
        """
        console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        if not console.is_terminal:
            console = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=1000)
        return console

    # -- results (stdout) --------------------------------------------------------

    def line(self, text: str) -> None:
        """A result line for people (nothing with ``--json``)."""
        if not self.json_mode:
            self.out.print(Text(text))

    def emit(self, obj: dict[str, Any]) -> None:
        """One JSON object on its own line (only with ``--json``)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
            sys.stdout.flush()

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        """A table for people (long values wrap)."""
        if self.json_mode:
            return
        table = Table(title=Text(title), title_justify="left", show_lines=False, expand=False)
        for name in columns:
            table.add_column(Text(name), overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        self.out.print(table)

    def datasets(self, title: str, keywords: Sequence[str], found: Sequence[Dataset]) -> None:
        """C-FIND results: a table (one column per key), or DICOM JSON lines."""
        if self.json_mode:
            for ds in found:
                self.emit(ds.to_json_dict())
            return
        table = Table(title=Text(title), title_justify="left")
        keywords = column_order(keywords)
        for keyword in keywords:
            uid = keyword.endswith("UID")
            table.add_column(
                Text(_LABELS.get(keyword, keyword)), overflow="fold", min_width=12 if uid else None
            )
        for ds in found:
            table.add_row(*(Text(text_of(ds.get(keyword))) for keyword in keywords))
        self.out.print(table)

    # -- notes and errors (stderr) ------------------------------------------------

    def note(self, text: str) -> None:
        """A message for people about what is going on (stderr; not with ``--json``)."""
        if not self.json_mode:
            self.err.print(Text(text))

    def error(self, text: str) -> None:
        """One error line on stderr, always."""
        self.err.print(Text(text), soft_wrap=True)

    def bar(self, description: str, total: int | None = None, *, sizes: bool = True) -> Bar:
        """A progress bar on stderr (a no-op when not on a terminal); ``sizes``: show bytes."""
        return Bar(self, description, total, sizes=sizes)


class Bar:
    """A rich progress bar for a transfer: instances done of total, and bytes.

    Use as a context manager; :meth:`update` from the event loop.
    """

    def __init__(
        self, output: Output, description: str, total: int | None, *, sizes: bool = True
    ) -> None:
        self.sizes = sizes
        self.enabled = output.show_progress and output.err.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._output = output
        self.description = description
        self.total = total
        self.completed = 0
        self.size = 0

    def __enter__(self) -> Bar:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[size]}" if self.sizes else ""),
                TimeElapsedColumn(),
                console=self._output.err,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=self.total, size=format_size(0)
            )
        return self

    def update(
        self,
        *,
        advance: int = 0,
        size: int = 0,
        total: int | None = None,
        completed: int | None = None,
    ) -> None:
        """Count ``advance`` more done (``size`` bytes), or set ``completed``/``total``."""
        self.completed = self.completed + advance if completed is None else completed
        self.size += size
        if total is not None:
            self.total = max(total, self.completed)
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                completed=self.completed,
                total=self.total,
                size=format_size(self.size),
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            if exc_type is None and self._task is not None and self.total is None:
                self._progress.update(self._task, total=self.completed)
            self._progress.stop()
            self._progress = None
