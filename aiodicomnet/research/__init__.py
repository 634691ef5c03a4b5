"""Research pipelines: de-identification and cohort retrieval over the client.

Recipes beside the client (the client never imports them), with optional
dependencies of their own (``pip install aiodicomnet[research]``): dicognito
for de-identification, Dask distributed for :mod:`.distributed`.
``import aiodicomnet`` does not import this package.

- :mod:`.deid`: :class:`~.deid.Deidentifier`, :class:`~.deid.DeidentifyingStorage`,
  :class:`~.deid.MappingTable`.
- :mod:`.cohort`: :func:`~.cohort.run_cohort` and the cohort list it reads.
- :mod:`.manifest`: what a cohort job knows of each row and study, kept so it resumes.
- :mod:`.distributed`: the same job sharded by study over a Dask cluster.
"""
