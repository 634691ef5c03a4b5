"""Generated test data (re-exported from :mod:`aiodicomnet.samples`)."""

from aiodicomnet.samples import (
    PATIENTS,
    Corpus,
    iter_large_ct,
    make_corpus,
    make_dataset,
    make_series,
    uid,
    write_files,
)

__all__ = [
    "PATIENTS",
    "Corpus",
    "iter_large_ct",
    "make_corpus",
    "make_dataset",
    "make_series",
    "uid",
    "write_files",
]
