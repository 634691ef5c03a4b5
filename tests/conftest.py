"""Shared fixtures. Real peers live in tests/peers/ (pytest plugins)."""

from __future__ import annotations

pytest_plugins = [
    "tests.peers.orthanc",
    "tests.peers.dcmtk",
]
