"""A study: its grid as data, the runs it expands into, and what its folder records of them.

``plan`` (cells, grids, planned runs), ``grid`` (reading and expanding grids), ``design`` (which
comparisons say what they claim), ``choose`` (``--cells``/``--seeds``/``--set`` filters), ``recorded``
(``study.json``, the recorded runs, finding studies), ``run_state`` and ``states`` (where each run stands),
``run_logs`` (a run's log, by id).
Imports: ``base``, ``config``, ``data``, ``cluster``, ``training`` (file names and result readers).
"""
