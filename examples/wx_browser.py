#!/usr/bin/env python3
"""A small PACS browser in wxPython, on aiodicomnet.

What a DICOM viewer such as InVesalius needs, in one window:

* this computer's AE (title, port) and its local archive, which receives
  what is downloaded;
* a list of remote nodes, with add, remove and echo: DICOM nodes (AE title,
  host, port) and DICOMweb nodes (a URL, with an optional user and password
  or a bearer token), added in the node dialog;
* a query form (patient ID and name, study date range, modality) and a
  result tree, patients -> studies -> series;
* download of the selected patients, studies or series into the local
  archive (a retrieve by C-MOVE to our own Storage SCP; from a DICOMweb node
  by WADO-RS), with a progress bar and Cancel;
* sending files to the selected node (C-STORE, or STOW-RS);
* a preview of the selected series: it is retrieved into memory (C-GET) as a
  volume and its middle slice drawn; and "Save mask to PACS": the loaded
  volume thresholded, sent to the node as a DICOM Segmentation (these two
  need the ``imaging`` extra: ``pip install 'aiodicomnet[imaging]'``).

A DICOMweb node goes through the same code as a DICOM one: the client's
``find``, ``retrieve`` and ``store`` speak QIDO-RS, WADO-RS and STOW-RS to
it. All DICOM work runs on aiodicomnet's event loop in a background thread
(:class:`aiodicomnet.gui.WxRunner`); results, progress and errors come back
to the wx main thread through ``wx.CallAfter``, so the window never freezes.

Try it without a PACS::

    python examples/wx_browser.py --demo

``--demo`` starts an embedded PACS (an :class:`~aiodicomnet.archive.Archive`
filled with generated sample studies) on a free port, tells it where our AE
listens, and adds it to the node list; when hypercorn is installed
(``pip install 'aiodicomnet[web]'``) the same PACS also serves DICOMweb, and
that node is added too.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import wx
from pydicom.uid import generate_uid

from aiodicomnet import AnyNode, Node, WebNode, imaging, load_volume
from aiodicomnet.archive import Archive
from aiodicomnet.client import Client
from aiodicomnet.gui import Job, WxRunner
from aiodicomnet.query import DateRange, Query
from aiodicomnet.results import InstanceOutcome, Progress
from aiodicomnet.samples import make_corpus, make_series

DEMO_AE = "DEMOPACS"
DEMO_WEB = "DEMOPACS web"
PREVIEW_SIZE = 192
MODALITIES = ["", "CT", "MR", "PT", "US", "CR", "DX", "MG", "NM", "XA", "SEG", "SR"]


# -- coroutines run on the loop thread ------------------------------------------------


async def serve(archive: Archive, *, progress: Callable[[int], None]) -> None:
    """Run ``archive`` until cancelled; report its port once it listens."""
    async with archive:
        progress(archive.port)
        await anyio.sleep_forever()


async def serve_demo(
    archive: Archive,
    datasets: list[Any],
    web: bool,
    *,
    progress: Callable[[tuple[int, str | None, anyio.Event]], None],
) -> None:
    """Run the demo PACS: fill it, report its port, its DICOMweb URL (with ``web``;
    else None) and the event that stops it, then serve until that event is set
    (or the job cancelled)."""
    stop = anyio.Event()
    async with archive:
        await archive.add(datasets)
        if not web:
            progress((archive.port, None, stop))
            await stop.wait()
            return
        face = archive.dicomweb()
        served = await face.__aenter__()
        try:
            progress((archive.port, served.url, stop))
            await stop.wait()
        finally:
            # Its normal exit, also when cancelled: the error path of
            # aiodicomnet.archive_web.serve leaves its task group from a new cancel
            # scope, which anyio refuses. Stopped by the event, the HTTP server
            # also finishes its connections instead of being cancelled midway.
            await face.__aexit__(None, None, None)


def web_available() -> bool:
    """Whether the demo PACS can serve DICOMweb (hypercorn, the ``web`` extra)."""
    return importlib.util.find_spec("hypercorn") is not None


def node_label(node: AnyNode) -> str:
    """A node's name in messages: its AE title, or a DICOMweb node's name or URL."""
    if isinstance(node, WebNode):
        return node.name or node.url
    return node.ae_title


def web_node(url: str, user: str, password: str, token: str, name: str = "") -> WebNode:
    """A DICOMweb node from the dialog's fields: HTTP basic with a user (and
    password), a bearer token, or no credentials.

    Raises:
        ValueError: a bad URL, a password without a user, or both kinds of credentials.
    """
    auth: tuple[str, str] | str | None = None
    if token and (user or password):
        raise ValueError("give a user and password, or a token, not both")
    if password and not user:
        raise ValueError("a password needs a user")
    if user:
        auth = (user, password)
    elif token:
        auth = token
    return WebNode(url, auth=auth, name=name or None)


async def search(
    client: Client, node: AnyNode, studies: Query, modality: str
) -> AsyncIterator[tuple[str, Any]]:
    """("study", identifier) for each matching study, then ("series", identifier) for
    each of their series (of ``modality``, if given)."""
    found = []
    async with client.find(node, studies) as results:
        async for study in results:
            found.append(study)
            yield "study", study
    for study in found:
        keys: dict[str, object] = {"StudyInstanceUID": study.StudyInstanceUID}
        if modality:
            keys["Modality"] = modality
        async with client.find(node, Query.series(**keys)) as results:
            async for series in results:
                yield "series", series


async def download(
    client: Client,
    node: AnyNode,
    queries: list[Query],
    archive: Archive,
    *,
    progress: Callable[[tuple[int, int, Progress]], None],
) -> int:
    """Retrieve each query into ``archive``; return how many instances arrived.

    From a DICOM node: C-MOVE to the archive's AE title; each retrieve ends
    once every instance it moved is stored. From a DICOMweb node: WADO-RS
    brings the instances in its responses (into memory, a few at a time),
    and each is imported into the archive as it comes.
    """
    received = 0
    for index, query in enumerate(queries):

        def report(step: Progress, index: int = index) -> None:
            progress((index, len(queries), step))

        if isinstance(node, WebNode):
            async with client.retrieve(node, query, on_progress=report) as instances:
                async for instance in instances:
                    await archive.add(await instance.load_dataset())
                    received += 1
            continue
        async with client.retrieve(node, query, via=archive, on_progress=report) as instances:
            async for _instance in instances:
                received += 1
    return received


async def send(
    client: Client, node: AnyNode, paths: list[Path], *, progress: Callable[[int], None]
) -> tuple[int, int]:
    """C-STORE (or STOW-RS) ``paths`` to ``node``; return (stored, failed)."""
    done = 0

    def one(outcome: InstanceOutcome) -> None:
        nonlocal done
        done += 1
        progress(done)

    result = await client.store(node, paths, on_progress=one)
    return len(result.succeeded), len(result.failed)


async def preview(client: Client, node: AnyNode, study_uid: str, series_uid: str) -> Any:
    """The series as a volume, retrieved into memory by C-GET or WADO-RS (nothing on disk)."""
    query = Query.series(StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid)
    return await load_volume(client, node, query)


async def save_mask(
    client: Client, node: AnyNode, volume: Any, threshold: float
) -> tuple[Any, Any]:
    """Threshold ``volume`` and send the mask to ``node`` as a DICOM Segmentation."""
    mask = volume.voxels > threshold
    segment = imaging.Segment(
        f"above {threshold:g}", algorithm=f"threshold {threshold:g}", colour=(241, 214, 145)
    )
    return await imaging.store_segmentation(
        client, node, volume, mask, segment, series_description=f"mask > {threshold:g}"
    )


def _first(value: Any) -> float:
    """The first value of a multi-valued DS (Window Center may have several)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def middle_slice(volume: Any) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of the volume's middle slice, windowed for display.

    The window is the series' Window Center/Width when it has one, else the
    1st to 99th percentile of the slice.
    """
    import numpy as np

    plane = volume.voxels[volume.shape[0] // 2].astype(np.float64)
    header = volume.headers[0]
    centre, width = header.get("WindowCenter"), header.get("WindowWidth")
    if centre is not None and width is not None:
        centre, width = _first(centre), _first(width)
        low, high = centre - width / 2, centre + width / 2
    else:
        low, high = (float(v) for v in np.percentile(plane, (1, 99)))
    scaled = np.clip((plane - low) / max(high - low, 1e-6), 0, 1) * 255
    grey = scaled.astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    return grey.shape[1], grey.shape[0], rgb.tobytes()


# -- the window ------------------------------------------------------------------------


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


class NodeDialog(wx.Dialog):
    """Add a node: a DICOM node (AE title, host, port) or a DICOMweb node (a URL,
    with an optional user and password, or a bearer token).

    OK checks the fields and makes :attr:`node`; a mistake is shown in the
    dialog, which stays open.
    """

    KINDS = ("DICOM (C-FIND, C-MOVE, C-STORE)", "DICOMweb (QIDO-RS, WADO-RS, STOW-RS)")

    def __init__(self, parent: wx.Window) -> None:
        super().__init__(parent, title="Add a node")
        self.node: AnyNode | None = None
        self.kind = wx.RadioBox(
            self, label="Kind", choices=list(self.KINDS), majorDimension=1, style=wx.RA_SPECIFY_COLS
        )
        self.kind.Bind(wx.EVT_RADIOBOX, self.on_kind)
        self.ae_field = wx.TextCtrl(self, size=(220, -1))
        self.host_field = wx.TextCtrl(self, value="127.0.0.1")
        self.port_field = wx.SpinCtrl(self, min=1, max=65535, initial=104)
        self.url_field = wx.TextCtrl(self)
        self.url_field.SetHint("https://pacs.example.org/dicom-web")
        self.user_field = wx.TextCtrl(self)
        self.password_field = wx.TextCtrl(self, style=wx.TE_PASSWORD)
        self.token_field = wx.TextCtrl(self, style=wx.TE_PASSWORD)
        self.name_field = wx.TextCtrl(self)
        self.dicom_fields = (self.ae_field, self.host_field, self.port_field)
        self.web_fields = (
            self.url_field,
            self.user_field,
            self.password_field,
            self.token_field,
            self.name_field,
        )
        grid = wx.FlexGridSizer(2, 5, 5)
        grid.AddGrowableCol(1)
        for text, widget in (
            ("AE title", self.ae_field),
            ("Host", self.host_field),
            ("Port", self.port_field),
            ("URL", self.url_field),
            ("User (optional)", self.user_field),
            ("Password", self.password_field),
            ("or token", self.token_field),
            ("Name (optional)", self.name_field),
        ):
            grid.Add(wx.StaticText(self, label=text), 0, wx.ALIGN_CENTER_VERTICAL)
            grid.Add(widget, 1, wx.EXPAND)
        self.error_label = wx.StaticText(self, label="")
        self.error_label.SetForegroundColour(wx.RED)
        sizer = wx.BoxSizer(wx.VERTICAL)
        sizer.Add(self.kind, 0, wx.EXPAND | wx.ALL, 6)
        sizer.Add(grid, 0, wx.EXPAND | wx.ALL, 6)
        sizer.Add(self.error_label, 0, wx.EXPAND | wx.ALL, 6)
        sizer.Add(self.CreateStdDialogButtonSizer(wx.OK | wx.CANCEL), 0, wx.EXPAND | wx.ALL, 6)
        self.Bind(wx.EVT_BUTTON, self.on_ok, id=wx.ID_OK)
        self.SetSizerAndFit(sizer)
        self.on_kind(None)

    @property
    def is_web(self) -> bool:
        return bool(self.kind.GetSelection() == 1)

    def on_kind(self, event: Any) -> None:
        """Enable the fields of the chosen kind."""
        for widget in self.dicom_fields:
            widget.Enable(not self.is_web)
        for widget in self.web_fields:
            widget.Enable(self.is_web)

    def make_node(self) -> AnyNode:
        """The node the fields describe.

        Raises:
            ValueError: a field is wrong (the message says which).
        """
        if self.is_web:
            return web_node(
                self.url_field.GetValue().strip(),
                self.user_field.GetValue().strip(),
                self.password_field.GetValue(),
                self.token_field.GetValue().strip(),
                self.name_field.GetValue().strip(),
            )
        return Node(
            self.ae_field.GetValue().strip(),
            self.host_field.GetValue().strip(),
            self.port_field.GetValue(),
        )

    def on_ok(self, event: Any) -> None:
        try:
            self.node = self.make_node()
        except ValueError as exc:
            self.error_label.SetLabel(str(exc))
            self.Layout()
            return
        self.EndModal(wx.ID_OK)


class BrowserFrame(wx.Frame):
    """The browser's main window. Its ``on_*`` methods are the button handlers."""

    def __init__(
        self,
        *,
        ae_title: str = "WXBROWSER",
        port: int = 11112,
        storage: Path,
        demo: bool = False,
    ) -> None:
        super().__init__(None, title="aiodicomnet PACS browser", size=(1100, 760))
        self.runner = WxRunner()
        self.storage = storage
        self.client = Client(ae_title)
        self.nodes: list[AnyNode] = []
        self.local: Archive | None = None
        self.local_job: Job[None] | None = None
        self.local_count = 0
        self._restart_local = False
        self.demo: Archive | None = None
        self.demo_job: Job[None] | None = None
        self.demo_stop: anyio.Event | None = None
        self.search_job: Job[int] | None = None
        self.transfer_job: Job[Any] | None = None
        self.last_result: str = ""
        self.volume: Any = None
        self.volume_node: AnyNode | None = None
        self.image_job: Job[Any] | None = None
        self._patients: dict[str, Any] = {}
        self._studies: dict[str, Any] = {}
        self._build(ae_title, port)
        self.Bind(wx.EVT_CLOSE, self.on_close)
        self.start_local()
        if demo:
            self.start_demo()

    # -- layout ---------------------------------------------------------------------------

    def _build(self, ae_title: str, port: int) -> None:
        panel = wx.Panel(self)
        self.CreateStatusBar()

        local_box = wx.StaticBoxSizer(wx.VERTICAL, panel, "This computer")
        grid = wx.FlexGridSizer(2, 5, 5)
        self.ae_field = wx.TextCtrl(panel, value=ae_title)
        self.port_field = wx.SpinCtrl(panel, min=0, max=65535, initial=port)
        grid.AddMany(
            [
                (wx.StaticText(panel, label="AE title"), 0, wx.ALIGN_CENTER_VERTICAL),
                (self.ae_field, 1, wx.EXPAND),
                (wx.StaticText(panel, label="Port (0: any)"), 0, wx.ALIGN_CENTER_VERTICAL),
                (self.port_field, 1, wx.EXPAND),
            ]
        )
        local_box.Add(grid, 0, wx.EXPAND | wx.ALL, 4)
        apply = wx.Button(panel, label="Apply")
        apply.Bind(wx.EVT_BUTTON, self.on_apply_local)
        local_box.Add(apply, 0, wx.ALL, 4)
        self.local_label = wx.StaticText(panel, label="Local archive: starting...")
        local_box.Add(self.local_label, 0, wx.ALL, 4)

        nodes_box = wx.StaticBoxSizer(wx.VERTICAL, panel, "Remote nodes")
        self.node_list = wx.ListCtrl(panel, style=wx.LC_REPORT | wx.LC_SINGLE_SEL)
        for index, (title, width) in enumerate(
            [("AE title / name", 110), ("Host or URL", 150), ("Port", 55), ("Echo", 110)]
        ):
            self.node_list.InsertColumn(index, title, width=width)
        nodes_box.Add(self.node_list, 1, wx.EXPAND | wx.ALL, 4)
        buttons = wx.BoxSizer(wx.HORIZONTAL)
        for label, handler in (
            ("Add...", self.on_add_node),
            ("Remove", self.on_remove_node),
            ("Echo", self.on_echo),
        ):
            button = wx.Button(panel, label=label)
            button.Bind(wx.EVT_BUTTON, handler)
            buttons.Add(button, 0, wx.RIGHT, 3)
        nodes_box.Add(buttons, 0, wx.ALL, 4)

        left = wx.BoxSizer(wx.VERTICAL)
        left.Add(local_box, 0, wx.EXPAND | wx.ALL, 4)
        left.Add(nodes_box, 1, wx.EXPAND | wx.ALL, 4)

        query_box = wx.StaticBoxSizer(wx.VERTICAL, panel, "Search the selected node")
        form = wx.FlexGridSizer(4, 5, 5)
        self.patient_id_field = wx.TextCtrl(panel)
        self.patient_name_field = wx.TextCtrl(panel)
        self.date_from_field = wx.TextCtrl(panel)
        self.date_to_field = wx.TextCtrl(panel)
        self.date_from_field.SetHint("YYYYMMDD")
        self.date_to_field.SetHint("YYYYMMDD")
        self.modality_field = wx.Choice(panel, choices=[m or "any" for m in MODALITIES])
        self.modality_field.SetSelection(0)
        for label, widget in (
            ("Patient ID", self.patient_id_field),
            ("Patient name", self.patient_name_field),
            ("Study date from", self.date_from_field),
            ("to", self.date_to_field),
            ("Modality", self.modality_field),
        ):
            form.Add(wx.StaticText(panel, label=label), 0, wx.ALIGN_CENTER_VERTICAL)
            form.Add(widget, 1, wx.EXPAND)
        query_box.Add(form, 0, wx.EXPAND | wx.ALL, 4)
        search_buttons = wx.BoxSizer(wx.HORIZONTAL)
        search_button = wx.Button(panel, label="Search")
        search_button.Bind(wx.EVT_BUTTON, self.on_search)
        stop_button = wx.Button(panel, label="Stop search")
        stop_button.Bind(wx.EVT_BUTTON, self.on_stop_search)
        search_buttons.AddMany([(search_button, 0, wx.RIGHT, 3), (stop_button, 0)])
        query_box.Add(search_buttons, 0, wx.ALL, 4)

        self.tree = wx.TreeCtrl(
            panel, style=wx.TR_HAS_BUTTONS | wx.TR_HIDE_ROOT | wx.TR_MULTIPLE | wx.TR_LINES_AT_ROOT
        )
        self.root = self.tree.AddRoot("results")

        transfer = wx.BoxSizer(wx.HORIZONTAL)
        for label, handler in (
            ("Download selected", self.on_download),
            ("Send files...", self.on_send_files),
            ("Cancel transfer", self.on_cancel_transfer),
        ):
            button = wx.Button(panel, label=label)
            button.Bind(wx.EVT_BUTTON, handler)
            transfer.Add(button, 0, wx.RIGHT, 3)
        self.gauge = wx.Gauge(panel, range=100)

        right = wx.BoxSizer(wx.VERTICAL)
        right.Add(query_box, 0, wx.EXPAND | wx.ALL, 4)
        right.Add(self.tree, 1, wx.EXPAND | wx.ALL, 4)
        right.Add(transfer, 0, wx.ALL, 4)
        right.Add(self.gauge, 0, wx.EXPAND | wx.ALL, 4)

        preview_box = wx.StaticBoxSizer(wx.HORIZONTAL, panel, "Selected series")
        self.preview_bitmap = wx.StaticBitmap(panel, size=(PREVIEW_SIZE, PREVIEW_SIZE))
        preview_box.Add(self.preview_bitmap, 0, wx.ALL, 4)
        preview_buttons = wx.BoxSizer(wx.VERTICAL)
        preview_button = wx.Button(panel, label="Preview series")
        preview_button.Bind(wx.EVT_BUTTON, self.on_preview)
        self.threshold_field = wx.SpinCtrlDouble(
            panel, min=-100000, max=100000, initial=300, inc=50
        )
        save_button = wx.Button(panel, label="Save mask to PACS")
        save_button.Bind(wx.EVT_BUTTON, self.on_save_mask)
        self.volume_label = wx.StaticText(panel, label="No series loaded")
        preview_buttons.AddMany(
            [
                (preview_button, 0, wx.BOTTOM, 6),
                (wx.StaticText(panel, label="Mask threshold"), 0),
                (self.threshold_field, 0, wx.BOTTOM, 3),
                (save_button, 0, wx.BOTTOM, 6),
                (self.volume_label, 0),
            ]
        )
        preview_box.Add(preview_buttons, 1, wx.ALL, 4)
        right.Add(preview_box, 0, wx.EXPAND | wx.ALL, 4)

        main = wx.BoxSizer(wx.HORIZONTAL)
        main.Add(left, 2, wx.EXPAND)
        main.Add(right, 3, wx.EXPAND)
        panel.SetSizer(main)

    def status(self, text: str) -> None:
        self.last_result = text
        self.SetStatusText(text)

    # -- local AE and its archive ----------------------------------------------------------

    def start_local(self) -> None:
        """Start the local archive (our Storage SCP) with the AE title and port of the form."""
        try:
            archive = Archive(
                self.ae_field.GetValue().strip(),
                self.storage,
                "0.0.0.0" if self.port_field.GetValue() else "127.0.0.1",
                self.port_field.GetValue(),
            )
        except ValueError as exc:
            self.status(f"Local AE: {exc}")
            return
        self.client = Client(archive.ae_title)
        self.local_job = self.runner.submit(
            serve,
            archive,
            on_progress=lambda port: self._local_started(archive, port),
            on_error=lambda exc: self.status(f"Local archive failed: {exc}"),
            on_cancelled=self._local_stopped,
            name="local archive",
        )

    def _local_started(self, archive: Archive, port: int) -> None:
        self.local = archive
        self.local_label.SetLabel(f"{archive.ae_title} listening on port {port}")
        if self.demo is not None:  # the demo PACS knows where we are
            self.demo.add_destination(archive.ae_title, ("127.0.0.1", port))
        self.refresh_local_count()

    def refresh_local_count(self) -> None:
        if self.local is None:
            return
        archive = self.local

        def show(count: int) -> None:
            self.local_count = count
            self.local_label.SetLabel(
                f"{archive.ae_title} on port {archive.port}: {count} instance(s) stored"
            )

        self.runner.submit(archive.count, on_done=show)

    def on_apply_local(self, event: Any) -> None:
        """Restart the local archive with the new AE title and port."""
        self.local = None
        self.local_label.SetLabel("Local archive: restarting...")
        if self.local_job is None or self.local_job.done:
            self.start_local()
        else:  # restart once the old one has stopped (see _local_stopped)
            self._restart_local = True
            self.local_job.cancel()

    def _local_stopped(self) -> None:
        if self._restart_local:
            self._restart_local = False
            self.start_local()

    # -- nodes --------------------------------------------------------------------------------

    def add_node(self, node: AnyNode) -> None:
        self.nodes.append(node)
        if isinstance(node, WebNode):
            row = self.node_list.InsertItem(
                self.node_list.GetItemCount(), node.name or "(DICOMweb)"
            )
            self.node_list.SetItem(row, 1, node.url)
            self.node_list.SetItem(row, 2, "HTTP")
            return
        row = self.node_list.InsertItem(self.node_list.GetItemCount(), node.ae_title)
        self.node_list.SetItem(row, 1, node.host)
        self.node_list.SetItem(row, 2, str(node.port))

    def selected_node(self) -> AnyNode | None:
        """The node selected in the list (the only one, if there is one)."""
        row = self.node_list.GetFirstSelected()
        if row < 0 and len(self.nodes) == 1:
            row = 0
        return self.nodes[row] if 0 <= row < len(self.nodes) else None

    def on_add_node(self, event: Any) -> None:
        """Ask for a node (DICOM or DICOMweb) in the node dialog and add it to the list."""
        with NodeDialog(self) as dialog:
            if dialog.ShowModal() == wx.ID_OK and dialog.node is not None:
                self.add_node(dialog.node)
                self.status(f"Added {dialog.node}")

    def on_remove_node(self, event: Any) -> None:
        row = self.node_list.GetFirstSelected()
        if row >= 0:
            self.node_list.DeleteItem(row)
            del self.nodes[row]

    def on_echo(self, event: Any) -> None:
        node = self.selected_node()
        if node is None:
            self.status("Select a node first")
            return
        row = self.nodes.index(node)
        self.node_list.SetItem(row, 3, "...")

        def show(text: str) -> None:
            if row < len(self.nodes) and self.nodes[row] is node:
                self.node_list.SetItem(row, 3, text)
            verb = "QIDO-RS" if isinstance(node, WebNode) else "C-ECHO"
            self.status(f"{verb} {node_label(node)}: {text}")

        self.runner.submit(
            self.client.echo,
            node,
            on_done=lambda rtt: show(f"ok, {rtt * 1000:.1f} ms"),
            on_error=lambda exc: show(f"failed: {exc}"),
        )

    # -- search ----------------------------------------------------------------------------------

    def build_query(self) -> tuple[Query, str]:
        """The STUDY-level query of the form, and the modality (or "")."""
        keys: dict[str, object] = {}
        if patient_id := self.patient_id_field.GetValue().strip():
            keys["PatientID"] = patient_id
        if name := self.patient_name_field.GetValue().strip():
            keys["PatientName"] = name if any(c in name for c in "*?") else f"{name}*"
        start = self.date_from_field.GetValue().strip() or None
        end = self.date_to_field.GetValue().strip() or None
        if start or end:
            keys["StudyDate"] = DateRange(start, end)
        modality = MODALITIES[max(self.modality_field.GetSelection(), 0)]
        if modality:
            keys["ModalitiesInStudy"] = modality
        return Query.study(**keys), modality

    def on_search(self, event: Any) -> None:
        node = self.selected_node()
        if node is None:
            self.status("Select a node first")
            return
        try:
            query, modality = self.build_query()
        except ValueError as exc:  # QueryError is a ValueError too
            self.status(f"Invalid query: {exc}")
            return
        if self.search_job is not None:
            self.search_job.cancel()
        self.tree.DeleteChildren(self.root)
        self._patients.clear()
        self._studies.clear()
        self.status(f"Searching {node_label(node)}...")
        client = self.client
        self.search_job = self.runner.stream(
            lambda: search(client, node, query, modality),
            self.add_results,
            batch_size=50,
            on_done=lambda n: self.status(
                f"{len(self._patients)} patient(s), {len(self._studies)} study(ies) found"
            ),
            on_error=lambda exc: self.status(f"Search failed: {exc}"),
            on_cancelled=lambda: self.status("Search stopped"),
        )

    def on_stop_search(self, event: Any) -> None:
        if self.search_job is not None:
            self.search_job.cancel()  # sends C-CANCEL

    def add_results(self, batch: list[tuple[str, Any]]) -> None:
        """Put a batch of C-FIND results into the tree (GUI thread)."""
        tree = self.tree
        for kind, ds in batch:
            if kind == "study":
                patient_id = _text(ds, "PatientID")
                patient = self._patients.get(patient_id)
                if patient is None:
                    label = f"{_text(ds, 'PatientName').replace('^', ' ')} ({patient_id})"
                    patient = tree.AppendItem(self.root, label)
                    tree.SetItemData(patient, {"level": "PATIENT", "PatientID": patient_id})
                    self._patients[patient_id] = patient
                label = " ".join(
                    part
                    for part in (
                        _text(ds, "StudyDate"),
                        _text(ds, "StudyDescription"),
                        f"[{_text(ds, 'ModalitiesInStudy')}]",
                        f"({_text(ds, 'NumberOfStudyRelatedInstances')} images)",
                    )
                    if part
                )
                study = tree.AppendItem(patient, label)
                uid = _text(ds, "StudyInstanceUID")
                tree.SetItemData(study, {"level": "STUDY", "StudyInstanceUID": uid})
                self._studies[uid] = study
            else:
                study = self._studies.get(_text(ds, "StudyInstanceUID"))
                if study is None:
                    continue
                label = (
                    f"#{_text(ds, 'SeriesNumber')} {_text(ds, 'Modality')} "
                    f"{_text(ds, 'SeriesDescription')} "
                    f"({_text(ds, 'NumberOfSeriesRelatedInstances')} images)"
                )
                series = tree.AppendItem(study, label)
                tree.SetItemData(
                    series,
                    {
                        "level": "SERIES",
                        "StudyInstanceUID": _text(ds, "StudyInstanceUID"),
                        "SeriesInstanceUID": _text(ds, "SeriesInstanceUID"),
                    },
                )
                tree.Expand(study)
        for patient in self._patients.values():
            tree.Expand(patient)

    # -- transfers ---------------------------------------------------------------------------------

    def selected_queries(self) -> list[Query]:
        """C-MOVE queries for the selected tree items: one per study at most."""
        studies: list[str] = []
        series: dict[str, list[str]] = {}
        for item in self.tree.GetSelections():
            data = self.tree.GetItemData(item) or {}
            if data.get("level") == "PATIENT":
                child, cookie = self.tree.GetFirstChild(item)
                while child.IsOk():
                    studies.append(self.tree.GetItemData(child)["StudyInstanceUID"])
                    child, cookie = self.tree.GetNextChild(item, cookie)
            elif data.get("level") == "STUDY":
                studies.append(data["StudyInstanceUID"])
            elif data.get("level") == "SERIES":
                series.setdefault(data["StudyInstanceUID"], []).append(data["SeriesInstanceUID"])
        studies = list(dict.fromkeys(studies))
        queries = [Query.study(StudyInstanceUID=studies)] if studies else []
        queries += [
            Query.series(StudyInstanceUID=study, SeriesInstanceUID=uids)
            for study, uids in series.items()
            if study not in studies
        ]
        return queries

    def _busy(self) -> bool:
        if self.transfer_job is not None and not self.transfer_job.done:
            self.status("A transfer is running: wait, or cancel it")
            return True
        return False

    def on_download(self, event: Any) -> None:
        """Retrieve the selected items into the local archive (C-MOVE to our AE)."""
        node = self.selected_node()
        queries = self.selected_queries()
        if node is None or not queries:
            self.status("Select a node and some patients, studies or series")
            return
        if self.local is None:
            self.status("The local archive is not running")
            return
        if self._busy():
            return
        self.gauge.SetValue(0)
        self.status(f"Downloading from {node_label(node)}...")
        self.transfer_job = self.runner.submit(
            download,
            self.client,
            node,
            queries,
            self.local,
            on_progress=self.show_download_progress,
            on_done=self._downloaded,
            on_error=lambda exc: self._transfer_ended(f"Download failed: {exc}"),
            on_cancelled=lambda: self._transfer_ended("Download cancelled"),
        )

    def show_download_progress(self, report: tuple[int, int, Progress]) -> None:
        index, count, step = report
        total = step.total
        if total:
            self.gauge.SetRange(total)
            self.gauge.SetValue(min(step.completed + step.warning + step.failed, total))
        else:
            self.gauge.Pulse()
        self.SetStatusText(f"Download {index + 1}/{count}: {step.completed} received")

    def _downloaded(self, count: int) -> None:
        self._transfer_ended(f"Downloaded {count} instance(s)")
        self.gauge.SetValue(self.gauge.GetRange())

    def _transfer_ended(self, text: str) -> None:
        self.status(text)
        self.refresh_local_count()

    def on_send_files(self, event: Any) -> None:
        with wx.FileDialog(
            self, "Files to send", style=wx.FD_OPEN | wx.FD_MULTIPLE | wx.FD_FILE_MUST_EXIST
        ) as dialog:
            if dialog.ShowModal() != wx.ID_OK:
                return
            paths = [Path(p) for p in dialog.GetPaths()]
        node = self.selected_node()
        if node is None:
            self.status("Select a node first")
            return
        self.send_files(paths, node)

    def send_files(self, paths: Sequence[Path], node: AnyNode) -> None:
        """C-STORE (or STOW-RS) ``paths`` to ``node``, with the progress bar."""
        if self._busy():
            return
        files = list(paths)
        self.gauge.SetRange(max(len(files), 1))
        self.gauge.SetValue(0)
        self.status(f"Sending {len(files)} file(s) to {node_label(node)}...")
        self.transfer_job = self.runner.submit(
            send,
            self.client,
            node,
            files,
            on_progress=lambda done: self.gauge.SetValue(min(done, self.gauge.GetRange())),
            on_done=lambda result: self._transfer_ended(
                f"Sent {result[0]} file(s), {result[1]} failed"
            ),
            on_error=lambda exc: self._transfer_ended(f"Sending failed: {exc}"),
            on_cancelled=lambda: self._transfer_ended("Sending cancelled"),
        )

    def on_cancel_transfer(self, event: Any) -> None:
        if self.transfer_job is not None:
            self.transfer_job.cancel()  # a C-MOVE gets a C-CANCEL

    # -- the selected series as an image ----------------------------------------------------------

    def selected_series(self) -> dict[str, str] | None:
        """The first selected SERIES item's data (StudyInstanceUID, SeriesInstanceUID)."""
        for item in self.tree.GetSelections():
            data = self.tree.GetItemData(item) or {}
            if data.get("level") == "SERIES":
                return dict(data)
        return None

    def on_preview(self, event: Any) -> None:
        """Retrieve the selected series into memory as a volume; draw its middle slice."""
        node = self.selected_node()
        series = self.selected_series()
        if node is None or series is None:
            self.status("Select a node and a series")
            return
        if self.image_job is not None and not self.image_job.done:
            self.status("A series is loading: wait for it")
            return
        self.status(f"Loading the series from {node_label(node)}...")
        self.image_job = self.runner.submit(
            preview,
            self.client,
            node,
            series["StudyInstanceUID"],
            series["SeriesInstanceUID"],
            on_done=lambda volume: self.show_volume(volume, node),
            on_error=lambda exc: self.status(f"Preview failed: {exc}"),
            on_cancelled=lambda: self.status("Preview cancelled"),
        )

    def show_volume(self, volume: Any, node: AnyNode) -> None:
        """Keep the volume (for Save mask) and draw its middle slice (GUI thread)."""
        self.volume, self.volume_node = volume, node
        width, height, rgb = middle_slice(volume)
        image = wx.Image(width, height, rgb)
        scale = PREVIEW_SIZE / max(width, height)
        image = image.Scale(max(int(width * scale), 1), max(int(height * scale), 1))
        self.preview_bitmap.SetBitmap(wx.Bitmap(image))
        z, y, x = volume.shape
        self.volume_label.SetLabel(
            f"{z} x {y} x {x}, spacing " + " x ".join(f"{v:.3g}" for v in volume.spacing) + " mm"
        )
        self.status(f"Loaded a volume of {z} slices; showing slice {z // 2 + 1}")

    def on_save_mask(self, event: Any) -> None:
        """Send the thresholded loaded volume as a DICOM SEG to the node it came from."""
        if self.volume is None or self.volume_node is None:
            self.status("Preview a series first")
            return
        if self.image_job is not None and not self.image_job.done:
            self.status("Wait for the series to load")
            return
        threshold = self.threshold_field.GetValue()
        node = self.volume_node
        self.status(f"Saving the mask (> {threshold:g}) to {node_label(node)}...")
        self.image_job = self.runner.submit(
            save_mask,
            self.client,
            node,
            self.volume,
            threshold,
            on_done=lambda result: self._mask_saved(result, node),
            on_error=lambda exc: self.status(f"Saving the mask failed: {exc}"),
        )

    def _mask_saved(self, result: tuple[Any, Any], node: AnyNode) -> None:
        seg, stored = result
        if stored.ok:
            self.status(f"Saved the mask as SEG {seg.SOPInstanceUID} to {node_label(node)}")
        else:
            self.status(f"{node_label(node)} refused the mask: {stored.failed[0]}")

    # -- demo PACS and shutdown -------------------------------------------------------------------

    def start_demo(self) -> None:
        """Start an embedded PACS with sample studies and add it to the node list
        (twice when it serves DICOMweb too: its DICOM and its DICOMweb face)."""
        directory = Path(tempfile.mkdtemp(prefix="adn-demo-pacs-"))
        self.demo = Archive(DEMO_AE, directory, port=0)
        if self.local is not None:
            self.demo.add_destination(self.local.ae_title, ("127.0.0.1", self.local.port))
        datasets = make_corpus().datasets + make_series(
            40,
            patient_id="PAT004",
            patient_name="Demo^Chest",
            study_description="CT CHEST",
            series_description="CHEST AXIAL",
            study_date="20240301",
            rows=64,
            columns=64,
        )
        # One frame of reference per series, as a scanner writes it (a SEG needs it).
        frames: dict[str, str] = {}
        for ds in datasets:
            ds.FrameOfReferenceUID = frames.setdefault(ds.SeriesInstanceUID, generate_uid())
        demo = self.demo
        self.demo_job = self.runner.submit(
            serve_demo,
            demo,
            datasets,
            web_available(),
            on_progress=self._demo_started,
            on_error=lambda exc: self.status(f"Demo PACS failed: {exc}"),
            name="demo PACS",
        )

    def _demo_started(self, where: tuple[int, str | None, anyio.Event]) -> None:
        """Add the demo PACS to the node list: as a DICOM node, and as a DICOMweb one."""
        port, url, self.demo_stop = where
        self.add_node(Node(DEMO_AE, "127.0.0.1", port))
        if url is None:
            self.status(
                f"Demo PACS {DEMO_AE} on port {port}: select it and search "
                "(its DICOMweb face needs hypercorn: pip install 'aiodicomnet[web]')"
            )
            return
        self.add_node(WebNode(url, name=DEMO_WEB))
        self.status(f"Demo PACS {DEMO_AE} on port {port}, DICOMweb at {url}: select one, search")

    def on_close(self, event: Any) -> None:
        # The running operations first (a C-MOVE or C-FIND gets its C-CANCEL), then
        # the client's pooled associations and HTTP connections, then the demo
        # PACS, then the loop with the local archive.
        for job in (self.search_job, self.transfer_job, self.image_job):
            if job is not None and not job.done:
                job.cancel()
                job.wait(10)
        try:
            self.runner.call(self.client.aclose)
            if self.demo_stop is not None and self.demo_job is not None:
                self.runner.portal.call(self.demo_stop.set)  # the demo PACS stops
                self.demo_job.wait(10)
        finally:
            self.runner.close()  # cancels what is left, stops the local archive
            self.Destroy()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ae-title", default="WXBROWSER", help="our AE title")
    parser.add_argument("--port", type=int, default=11112, help="our port (0: any free one)")
    parser.add_argument(
        "--storage", type=Path, help="the local archive's folder (default: a new temporary one)"
    )
    parser.add_argument("--demo", action="store_true", help="start an embedded demo PACS")
    args = parser.parse_args(argv)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="adn-browser-"))
    app = wx.App(False)
    frame = BrowserFrame(
        ae_title=args.ae_title,
        port=0 if args.demo and args.port == 11112 else args.port,
        storage=storage,
        demo=args.demo,
    )
    frame.Show()
    app.MainLoop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
