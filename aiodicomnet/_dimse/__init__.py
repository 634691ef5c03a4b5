"""The DIMSE transport: the one place that touches pynetdicom's internals or crosses threads.

- :mod:`.bridge`: owner threads and bounded streams between a thread and the event loop.
- :mod:`.patches`: every adaptation of pynetdicom (TCP options, reactor lock, ...), each
  a named function that says why; ``tests/test_pynetdicom_patches.py`` checks each on
  real pynetdicom, so a pynetdicom upgrade is audited by running that one file.
- :mod:`.contexts`: every presentation-context decision.
- :mod:`.association`: one negotiated association owned by one thread.
- :mod:`.pool`: association reuse and per-node limits.
- :mod:`.store_plan`: what a C-STORE sends, grouped by SOP class and transfer syntax.

Nothing outside this package (and ``gui/``, which bridges to GUI toolkits) may import
pynetdicom's private names, start threads or cross from a thread to the loop;
``tests/test_boundaries.py`` checks it.
"""
