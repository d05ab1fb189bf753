"""A study: its grid as data, the runs it expands into, and what its folder records of them.

``plan`` (cells, grids, planned runs), ``grid`` (reading and expanding grids), ``design`` (which
comparisons say what they claim), ``choose`` (``--cells``/``--seeds``/``--set`` filters), ``manifest``
(``study.json`` and its job records), ``folders`` (which folders are studies and runs), ``recorded``
(a study's recorded runs, and a run by id), ``run_state`` and ``states`` (where each run stands),
``run_logs`` (a run's log).
Imports: ``base``, ``config``, ``data``, ``cluster``, ``training`` (file names and result readers).
"""
