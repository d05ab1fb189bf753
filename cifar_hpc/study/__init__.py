"""A study: its grid as data, the runs it expands into, and what its folder records of them.

``plan`` (cells, grids, planned runs, a run's name), ``grid`` (reading and expanding grids), ``ablation``
(the cells an ``[ablation]`` table generates), ``design`` (which
comparisons say what they claim), ``choose`` (``--cells``/``--seeds``/``--set`` filters), ``manifest``
(``study.json`` and its job records), ``folders`` (which folders are studies and runs), ``recorded``
(a study's recorded runs), ``run_lookup`` (a run by id, and its copies in other studies),
``variants`` (``train --from-run``'s changed runs, recorded in the study), ``run_state`` and
``states`` (where each run stands), ``run_logs`` (a run's log).
Imports: ``base``, ``config``, ``data``, ``cluster``, ``training`` (file names and result readers).
"""
