"""The DIMSE transport: the one place that touches pynetdicom's internals or crosses threads.

- :mod:`.bridge`: owner threads, bounded streams between a thread and the event loop,
  and :func:`~.bridge.run_in_thread` (blocking calls in a joined thread of our own).
- :mod:`.portal`: the event loop as seen from an association thread (async callbacks).
- :mod:`.patches`: every adaptation of pynetdicom (TCP options, reactor lock, bounded
  kill, PDU limits, ...), each a named function that says why;
  ``tests/test_pynetdicom_patches.py`` checks each on real pynetdicom, so a pynetdicom
  upgrade is audited by running that one file (and ``tests/test_hostile_peers.py``).
- :mod:`.reactors`: pynetdicom's two reactor threads per association, waiting for
  events instead of sleeping 1 ms between looks.
- :mod:`.wire`: the fast data path: DIMSE messages framed into PDUs by the sending
  thread and written to the socket; files sent as they are, never decoded.
- :mod:`.acceptor`: the server side: our accept loop, and the door before an association.
- :mod:`.receivers`: receiver processes of a server (``workers=N``): connections handed
  over, instances delivered back to the server's stream.
- :mod:`.contexts`: every presentation-context decision.
- :mod:`.transcode`: converting an instance to a transfer syntax the peer accepted.
- :mod:`.association`: one negotiated association owned by one thread (the requestor side).
- :mod:`.pool`: association reuse and per-node limits.
- :mod:`.connector`: how a client gets an association: limit, pool, retry once.
- :mod:`.store_plan`: a C-STORE of many instances, one outcome each.
- :mod:`.incoming`: a received C-STORE in the library's own words, and the SCP step.

Nothing outside this package (and ``gui/``, which bridges to GUI toolkits) may import
pynetdicom's private names, start threads or cross from a thread to the loop;
``tests/test_boundaries.py`` checks it.
"""
