"""De-identification of received instances: keyed, repeatable, consistent inside a cohort.

:class:`Deidentifier` applies the PS3.15 Annex E Basic Application Level
Confidentiality Profile with the *Retain Longitudinal Temporal Information with
Modified Dates* option (or, with ``shift_dates=False``, the *Full Dates* option)
on top of `dicognito <https://github.com/blairconrad/dicognito>`_, chosen over
pydicom's ``deid`` after a side-by-side comparison (docs/howto/cohort.md, and
``python -m benchmarks.cohort deid`` for the figures):

* dicognito remaps every UID (but class and transfer syntax UIDs) through a
  keyed hash, so the same original UID gets the same new UID in every
  instance, in every run, on every worker process: references between
  instances (Referenced SOP Instance UID, Frame of Reference) stay consistent
  inside the cohort with no shared state. Names, IDs and addresses get keyed
  pseudonyms the same way. ~0.8 ms per CT instance.
* deid's default recipe *removes* identifying elements, UIDs included (an
  object without SOP Instance UID is not DICOM any more) and gives no
  repeatable pseudonyms without a recipe of one's own; ~12 ms per instance.

What this module adds to dicognito: the per-patient date shift (dicognito
shifts every date by one offset per key), the elements the Basic profile
removes that dicognito keeps (comments, free-text histories, descriptions,
device serial numbers, age, private elements), the attributes that record
what was done (Patient Identity Removed, De-identification Method, Longitudinal
Temporal Information Modified), a burned-in annotation policy, and an optional
mapping table (original -> pseudonym) kept where the user says, never beside
the output by default.

It works on a decoded :class:`~pydicom.dataset.Dataset`
(:meth:`Deidentifier.deidentify`), on an
:class:`~aiodicomnet.IncomingInstance` as a storage policy
(:class:`DeidentifyingStorage`, which wraps any other
:class:`~aiodicomnet.Storage`), or on a :class:`~aiodicomnet.ReceivedInstance`
taken from a receive stream or a retrieve (:meth:`Deidentifier.received`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import io
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import pydicom
from dicognito.anonymizer import Anonymizer
from dicognito.datetimeanonymizer import DateTimeAnonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from .._dimse.bridge import run_in_thread
from ..errors import BurnedInAnnotationRefused
from ..storage import IncomingInstance, InvalidDataset, ReceivedInstance, Storage

__all__ = [
    "BURNED_IN_RISK_MODALITIES",
    "REMOVED",
    "BurnedInPolicy",
    "Deidentifier",
    "DeidentifyingStorage",
    "MappingTable",
]

BurnedInPolicy = Literal["refuse", "flag"]

#: The C-STORE status of an instance refused by the burned-in policy (PS3.4 Table
#: B.2-1 has no code for a policy; 0xC001 is what this library answers when the
#: application declines an instance).
_REFUSED = 0xC001

#: Attributes the Basic profile removes (X) or empties (Z) that dicognito leaves as
#: they are: free text that may name a person, and a few device and patient details.
#: Keep one with ``Deidentifier(keep=...)`` when a study needs it and it was checked.
REMOVED: tuple[str, ...] = (
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "Allergies",
    "CommentsOnThePerformedProcedureStep",
    "DerivationDescription",
    "DeviceSerialNumber",
    "ImageComments",
    "InterpretationText",
    "MedicalAlerts",
    "PatientAge",
    "PatientBirthTime",
    "PatientComments",
    "PatientSize",
    "PatientWeight",
    "PerformedProcedureStepDescription",
    "ProtocolName",
    "ReasonForTheRequestedProcedure",
    "RequestedProcedureDescription",
    "SeriesDescription",
    "StudyComments",
    "StudyDescription",
    "TextComments",
    "TextString",
)

#: Modalities whose images often carry burned-in text (PS3.15 E.1.1 asks to
#: check them): secondary capture, ultrasound, other, external camera,
#: endoscopy, scanned documents.
BURNED_IN_RISK_MODALITIES = frozenset({"DOC", "ES", "OT", "SC", "US", "XC"})

# Offsets of the per-patient date shift, in whole days (times of day are kept,
# so intervals inside a patient's record stay exact): 62 to 730 days back, as
# dicognito's own single offset.
_MIN_SHIFT_DAYS = 62
_MAX_SHIFT_DAYS = 730


class MappingTable:
    """Original -> pseudonym pairs, in an SQLite file the user keeps apart from the data.

    A de-identified cohort must not carry the key back to the patients: the
    table is written only when asked for, to the path given, and the cohort
    job refuses a path inside its output tree. Rows are
    ``(kind, original, pseudonym)`` with ``kind`` a DICOM keyword
    (``PatientID``, ``PatientName``, ``AccessionNumber``, ``StudyInstanceUID``,
    ``SeriesInstanceUID``) or ``DateShiftDays`` (per patient ID). Safe to use from
    several threads and processes (SQLite's own locking).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS mapping ("
                "kind TEXT NOT NULL, original TEXT NOT NULL, pseudonym TEXT NOT NULL, "
                "PRIMARY KEY (kind, original))"
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:
                yield db
        finally:
            db.close()

    def record(self, pairs: Iterable[tuple[str, str, str]]) -> None:
        """Add ``(kind, original, pseudonym)`` rows (a pair seen before is kept once)."""
        rows = [(k, o, p) for k, o, p in pairs if o]
        if not rows:
            return
        with self._lock, self._connect() as db:
            db.executemany("INSERT OR IGNORE INTO mapping VALUES (?, ?, ?)", rows)

    def pseudonym(self, kind: str, original: str) -> str | None:
        """The pseudonym recorded for ``original``, or ``None``."""
        with self._lock, self._connect() as db:
            row = db.execute(
                "SELECT pseudonym FROM mapping WHERE kind = ? AND original = ?", (kind, original)
            ).fetchone()
        return None if row is None else str(row[0])

    def original(self, kind: str, pseudonym: str) -> str | None:
        """The original value behind ``pseudonym`` (re-identification), or ``None``."""
        with self._lock, self._connect() as db:
            row = db.execute(
                "SELECT original FROM mapping WHERE kind = ? AND pseudonym = ?", (kind, pseudonym)
            ).fetchone()
        return None if row is None else str(row[0])

    def rows(self) -> list[tuple[str, str, str]]:
        """Every row, sorted."""
        with self._lock, self._connect() as db:
            return [
                (str(k), str(o), str(p))
                for k, o, p in db.execute("SELECT * FROM mapping ORDER BY kind, original")
            ]


class _PerPatientDates(ElementAnonymizer):
    """Shift DA/DT (and the TM beside a DA) by the current patient's offset, or keep them."""

    def __init__(self) -> None:
        self.shifter: DateTimeAnonymizer | None = None

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        if data_element.VR not in ("DA", "DT"):
            return False
        if self.shifter is None:  # dates kept: claim them so nothing else touches them
            return True
        return bool(self.shifter(dataset, data_element))

    def describe_actions(self) -> Iterator[str]:
        yield "Shift DA and DT elements (and the TM beside a DA) by a keyed per-patient offset"


class _Removed(ElementAnonymizer):
    """Delete the named elements (dicognito's own stripper compares tags one by one)."""

    def __init__(self, keywords: Iterable[str]) -> None:
        tags = (pydicom.datadict.tag_for_keyword(k) for k in keywords)
        self.tags = frozenset(int(t) for t in tags if t is not None)

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        if int(data_element.tag) in self.tags:
            del dataset[data_element.tag]
            return True
        return False

    def describe_actions(self) -> Iterator[str]:
        yield "Remove the free text and details the Basic profile removes (REMOVED)"


class _Kept(ElementAnonymizer):
    """Leave the named elements as they are (an explicit choice of the user)."""

    def __init__(self, keywords: Iterable[str]) -> None:
        tags = (pydicom.datadict.tag_for_keyword(k) for k in keywords)
        self.tags = frozenset(int(t) for t in tags if t is not None)

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        return int(data_element.tag) in self.tags

    def describe_actions(self) -> Iterator[str]:
        yield "Keep the elements named by the user"


class Deidentifier:
    """Keyed, repeatable de-identification (PS3.15 Basic profile) built on dicognito.

    Args:
        key: the secret that makes pseudonyms repeatable: the same key gives
            the same pseudonyms and UIDs across instances, runs and machines;
            another key gives unrelated ones. Keep it like a password: with it
            and an original value one can confirm a pseudonym.
        shift_dates: shift every date and date-time by a whole number of days
            (62 to 730 back) drawn from the key and the patient's original
            Patient ID: the same for all of one patient's instances, so
            intervals survive. ``False`` keeps dates as they are (the
            *Retain Longitudinal Temporal Information Full Dates* option).
        burned_in: what to do with an instance whose pixels may carry
            identifying text (see :meth:`burned_in_risk`): ``"refuse"`` raises
            :class:`~aiodicomnet.errors.BurnedInAnnotationRefused`;
            ``"flag"`` de-identifies the header, records the instance in
            :attr:`flagged` and leaves the pixels to a later review.
        keep: keywords to leave untouched (for example ``("SeriesDescription",)``
            after checking that the site's descriptions name nobody).
        mapping: a :class:`MappingTable` to record original -> pseudonym pairs
            in; ``None`` (the default) records nothing.

    One instance may be shared by threads (a lock serialises the calls; each
    takes ~1 ms).
    """

    def __init__(
        self,
        key: str,
        *,
        shift_dates: bool = True,
        burned_in: BurnedInPolicy = "refuse",
        keep: Iterable[str] = (),
        mapping: MappingTable | None = None,
    ) -> None:
        if not key:
            raise ValueError("a de-identification key is required (pseudonyms derive from it)")
        if burned_in not in ("refuse", "flag"):
            raise ValueError(f"burned_in must be 'refuse' or 'flag', not {burned_in!r}")
        self._key = key.encode()
        self.shift_dates = shift_dates
        self.burned_in: BurnedInPolicy = burned_in
        self.keep = tuple(keep)
        self.mapping = mapping
        #: original SOP Instance UIDs flagged under ``burned_in="flag"``, with the reason.
        self.flagged: dict[str, str] = {}
        unknown = [k for k in self.keep if pydicom.datadict.tag_for_keyword(k) is None]
        if unknown:
            raise ValueError(f"not DICOM keywords: {', '.join(unknown)}")
        self._anonymizer = Anonymizer(seed=self._derive("dicognito").hex())
        self._dates = _PerPatientDates()
        removed = [k for k in REMOVED if k not in self.keep]
        # add_element_handler puts a handler first: the last added runs first.
        self._anonymizer.add_element_handler(_Removed(removed))
        self._anonymizer.add_element_handler(self._dates)
        self._anonymizer.add_element_handler(_Kept(self.keep))
        self._lock = threading.Lock()

    def _derive(self, purpose: str, value: str = "") -> bytes:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def date_shift_days(self, patient_id: str) -> int:
        """The (negative) number of days this patient's dates move by (0 when not shifting)."""
        if not self.shift_dates:
            return 0
        span = _MAX_SHIFT_DAYS - _MIN_SHIFT_DAYS
        n = int.from_bytes(self._derive("date-shift", patient_id)[:8], "big")
        return -(_MIN_SHIFT_DAYS + n % span)

    def pseudonym_uid(self, uid: str) -> str:
        """The UID that ``uid`` becomes in every de-identified instance."""
        ds = Dataset()
        ds.StudyInstanceUID = uid
        with self._lock:
            self._anonymizer.anonymize(_with_meta(ds))
        return str(ds.StudyInstanceUID)

    @staticmethod
    def burned_in_risk(ds: Dataset) -> str | None:
        """Why ``ds``'s pixels may carry identifying text, or ``None``.

        At risk: Burned In Annotation ``YES``; or, without an explicit ``NO``,
        a modality of :data:`BURNED_IN_RISK_MODALITIES`, a secondary capture
        SOP class, or Image Type ``SECONDARY`` / ``SCREEN SAVE``.
        """
        flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if flag == "YES":
            return "Burned In Annotation is YES"
        if flag == "NO" or "PixelData" not in ds:
            return None
        modality = str(ds.get("Modality", "") or "").upper()
        if modality in BURNED_IN_RISK_MODALITIES:
            return (
                f"modality {modality} often has burned-in text and Burned In Annotation is not NO"
            )
        sop_class = UID(str(ds.get("SOPClassUID", "")))
        if "Secondary Capture" in sop_class.name:
            return "a secondary capture without Burned In Annotation NO"
        image_type = {str(v).upper() for v in (ds.get("ImageType") or [])}
        if image_type & {"SECONDARY", "SCREEN SAVE"}:
            return "Image Type SECONDARY or SCREEN SAVE without Burned In Annotation NO"
        return None

    def deidentify(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (its File Meta too) and return it.

        Raises:
            BurnedInAnnotationRefused: under ``burned_in="refuse"``, for an
                instance at risk (nothing is changed).
        """
        original_uid = str(ds.get("SOPInstanceUID", ""))
        risk = self.burned_in_risk(ds)
        if risk is not None:
            if self.burned_in == "refuse":
                raise BurnedInAnnotationRefused(original_uid, risk)
            self.flagged[original_uid] = risk
        patient_id = str(ds.get("PatientID", "") or "")
        originals = {k: str(ds.get(k, "") or "") for k in _MAPPED}
        shift = self.date_shift_days(patient_id)
        _with_meta(ds)
        with self._lock:
            self._dates.shifter = DateTimeAnonymizer(shift * 24) if self.shift_dates else None
            self._anonymizer.anonymize(ds)
        ds.remove_private_tags()
        # dicognito says YES only with Burned In Annotation NO; here the burned-in
        # policy decided: an instance let through is YES, a flagged one NO.
        ds.PatientIdentityRemoved = "NO" if risk is not None else "YES"
        ds.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.shift_dates else "UNMODIFIED"
        )
        ds.DeidentificationMethodCodeSequence = _method_codes(self.shift_dates)
        if self.mapping is not None:
            pairs = [(k, v, str(ds.get(k, "") or "")) for k, v in originals.items()]
            if self.shift_dates:
                pairs.append(("DateShiftDays", patient_id, str(shift)))
            self.mapping.record(pairs)
        return ds

    def transform(self, incoming: IncomingInstance) -> IncomingInstance:
        """The de-identified copy of an instance arriving by C-STORE (call in a worker thread).

        The data set is decoded, de-identified and encoded again in its
        transfer syntax (a deflated one is written as Explicit VR Little
        Endian); encapsulated pixel data is carried as it is.
        """
        ts = incoming.transfer_syntax_uid
        if ts.is_deflated:
            # already inflated once, within the storage's limit, by the check before this
            data = zlib.decompress(incoming.encoded, -zlib.MAX_WBITS)
            ds = read_dataset(io.BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
            ts = ExplicitVRLittleEndian
        else:
            ds = read_dataset(incoming.open(), ts.is_implicit_VR, ts.is_little_endian)
        self.deidentify(ds)
        return IncomingInstance(
            sop_class_uid=incoming.sop_class_uid,
            sop_instance_uid=str(ds.SOPInstanceUID),
            transfer_syntax_uid=ts,
            encoded=_encode(ds, ts),
            calling_ae=incoming.calling_ae,
            called_ae=incoming.called_ae,
            remote_ae=incoming.remote_ae,
            peer=incoming.peer,
            association_id=incoming.association_id,
            message_id=incoming.message_id,
            move_originator_ae=incoming.move_originator_ae,
            move_originator_message_id=incoming.move_originator_message_id,
        )

    async def received(self, instance: ReceivedInstance) -> FileDataset:
        """A de-identified copy of a received instance's data set (decoded in a worker thread).

        For instances taken from a receive stream or a retrieve; the instance
        itself (its file, if any) is left as it is.
        """

        def work() -> FileDataset:
            ds = copy.deepcopy(instance.dataset)
            self.deidentify(ds)
            return ds

        return await run_in_thread(work, name="aiodicomnet-deidentify")


class DeidentifyingStorage(Storage):
    """A storage policy that de-identifies each instance, then hands it to ``inner``.

    Runs in the association's thread before the instance is acknowledged, so
    nothing identifying is ever written: ``DeidentifyingStorage(deid,
    DiskStorage(root, layout))`` lays the files out by their *new* values.
    An instance refused by the burned-in policy is answered ``0xC001`` (and
    its original SOP Instance UID kept in :attr:`refused`); its
    :meth:`store` raises :class:`~aiodicomnet.storage.InvalidDataset` caused
    by :class:`~aiodicomnet.errors.BurnedInAnnotationRefused`.
    """

    def __init__(self, deidentifier: Deidentifier, inner: Storage) -> None:
        self.deidentifier = deidentifier
        self.inner = inner
        #: original SOP Instance UID -> reason, for instances refused here.
        self.refused: dict[str, str] = {}
        #: original SOP Instance UID -> reason, for instances stored here but
        #: flagged by the burned-in policy (``burned_in="flag"``).
        self.flagged: dict[str, str] = {}
        self._lock = threading.Lock()

    def bind(self) -> Storage:
        """Bind the inner storage to the event loop; this wrapper shares its refusals."""
        inner = self.inner.bind()
        if inner is self.inner:
            return self
        bound = DeidentifyingStorage(self.deidentifier, inner)
        bound.refused = self.refused
        bound.flagged = self.flagged
        bound._lock = self._lock
        return bound

    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        """De-identify ``incoming`` and store the result with the inner storage."""
        try:
            clean = self.deidentifier.transform(incoming)
        except BurnedInAnnotationRefused as exc:
            with self._lock:
                self.refused[str(incoming.sop_instance_uid)] = exc.reason
            # a refusal by policy, answered and logged as such (not as a crash)
            raise InvalidDataset(str(exc), status=_REFUSED) from exc
        uid = str(incoming.sop_instance_uid)
        reason = self.deidentifier.flagged.get(uid)
        if reason is not None:
            with self._lock:
                self.flagged[uid] = reason
        return self.inner.store(clean)

    def discard(self, instance: ReceivedInstance) -> None:
        """Undo the inner storage's store."""
        self.inner.discard(instance)

    def describe(self) -> str:
        """``"de-identified, then <inner>"``."""
        return f"de-identified, then {self.inner.describe()}"


_MAPPED = (
    "PatientID",
    "PatientName",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)


def _method_codes(shift_dates: bool) -> Sequence:
    """PS3.16 CID 7050 codes for what was applied (PS3.15 E.1.1 asks to record them)."""
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if shift_dates:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    else:
        codes.append(("113106", "Retain Longitudinal Temporal Information Full Dates Option"))
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return Sequence(items)


def _with_meta(ds: Dataset) -> Dataset:
    # dicognito walks file_meta too; a bare Dataset has none
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    return ds


def _encode(ds: Dataset, ts: UID) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = ts.is_little_endian
    fp.is_implicit_VR = ts.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()
