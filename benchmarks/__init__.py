"""Side-by-side benchmarks of aiodicomnet against raw pynetdicom and DCMTK.

Run them all with ``./scripts/bench`` (or ``python -m benchmarks.run``); see
``benchmarks/README.md``.
"""
