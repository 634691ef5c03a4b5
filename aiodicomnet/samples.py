"""Sample DICOM data generated with pydicom: nothing is downloaded.

``make_dataset`` builds one CT or MR instance with a small random 16-bit
pixel matrix; ``make_series`` a series; ``make_corpus`` a small hierarchy of
patients, studies and series (CT and MR, one patient with a non-ASCII name
in ISO_IR 192); ``write_files`` saves datasets as Part 10 files. The demo,
the tests and the benchmarks all use these.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

__all__ = [
    "Corpus",
    "iter_large_ct",
    "make_corpus",
    "make_dataset",
    "make_series",
    "write_files",
]

UID_ROOT = "1.2.826.0.1.3680043.10.1455."  # prefix used for all generated UIDs


def uid() -> str:
    """A new UID under our sample-data root."""
    return str(generate_uid(prefix=UID_ROOT))


def make_dataset(
    *,
    patient_id: str = "PAT001",
    patient_name: str = "Doe^John",
    birth_date: str = "19700101",
    sex: str = "M",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    study_date: str = "20240115",
    study_time: str = "101500",
    study_description: str = "CT HEAD",
    accession: str = "ACC001",
    study_id: str = "1",
    series_number: int = 1,
    series_description: str = "AXIAL",
    modality: str = "CT",
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    charset: str | None = None,
    seed: int | None = None,
) -> Dataset:
    """One image instance (CT or MR) with a small random 16-bit pixel matrix."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or uid()
    ds.StudyInstanceUID = study_uid or uid()
    ds.SeriesInstanceUID = series_uid or uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.StudyDescription = study_description
    ds.AccessionNumber = accession
    ds.StudyID = study_id
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = study_date
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0.0, 0.0, float(instance_number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
    rng = random.Random(seed if seed is not None else instance_number)
    ds.PixelData = rng.randbytes(rows * columns * 2)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def make_series(
    n: int, *, study_uid: str | None = None, series_uid: str | None = None, **kwargs: Any
) -> list[Dataset]:
    """``n`` instances of one series (shared study and series UIDs).

    Other keyword arguments go to :func:`make_dataset`.
    """
    study_uid = study_uid or uid()
    series_uid = series_uid or uid()
    return [
        make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, **kwargs)
        for i in range(n)
    ]


@dataclass
class Corpus:
    """A generated hierarchy; ``datasets`` holds every instance."""

    datasets: list[Dataset] = field(default_factory=list)

    def patients(self) -> set[str]:
        return {ds.PatientID for ds in self.datasets}

    def studies(self, patient_id: str | None = None) -> set[str]:
        return {
            ds.StudyInstanceUID
            for ds in self.datasets
            if patient_id is None or ds.PatientID == patient_id
        }

    def series(self, study_uid: str | None = None) -> set[str]:
        return {
            ds.SeriesInstanceUID
            for ds in self.datasets
            if study_uid is None or ds.StudyInstanceUID == study_uid
        }

    def instances(self, series_uid: str | None = None) -> list[Dataset]:
        return [
            ds for ds in self.datasets if series_uid is None or ds.SeriesInstanceUID == series_uid
        ]


PATIENTS = [
    # (id, name, birth, sex, charset)
    ("PAT001", "Doe^John", "19700101", "M", None),
    ("PAT002", "Smith^Jane", "19850612", "F", None),
    ("PAT003", "Müller^Jürgen", "19601224", "M", "ISO_IR 192"),
]


def make_corpus(instances_per_series: int = 3) -> Corpus:
    """3 patients; 2 studies each (a CT and an MR); 2 series per study."""
    corpus = Corpus()
    for p, (pid, name, birth, sex, charset) in enumerate(PATIENTS):
        for s, (modality, desc, date) in enumerate(
            [("CT", "CT HEAD", f"2024011{p}"), ("MR", "MR KNEE", f"2023{p + 3:02d}20")]
        ):
            study_uid = uid()
            for r in range(2):
                corpus.datasets.extend(
                    make_series(
                        instances_per_series,
                        patient_id=pid,
                        patient_name=name,
                        birth_date=birth,
                        sex=sex,
                        charset=charset,
                        study_uid=study_uid,
                        study_date=date,
                        study_time=f"{10 + s:02d}{r}000",
                        study_description=desc,
                        accession=f"ACC{p}{s}",
                        study_id=str(s + 1),
                        modality=modality,
                        series_number=r + 1,
                        series_description=f"{desc} SERIES {r + 1}",
                    )
                )
    return corpus


def write_files(directory: Path, datasets: Iterable[Dataset]) -> list[Path]:
    """Write each dataset as ``<SOPInstanceUID>.dcm`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def iter_large_ct(n: int, rows: int = 512, columns: int = 512) -> Iterator[Dataset]:
    """``n`` slices of a rows x columns 16-bit CT series (benchmarks)."""
    study_uid, series_uid = uid(), uid()
    for i in range(n):
        yield make_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=i + 1,
            rows=rows,
            columns=columns,
        )
