"""From a study's runs to what a reader sees: groups, statistics, rows, tables, plots, W&B.

``grouping`` (runs into settings) and ``versions`` (which version of a cell a row shows),
``significance`` (paired tests, multiplicity, detectable effects), ``aggregate`` and ``table`` (the
comparison table), ``efficiency`` (cost, queue wait), ``run_rows`` and ``status`` (per-run and
per-study views), ``display`` (what the table shows), ``render`` (terminal, Markdown, and the format switch), ``latex``, ``raw_formats`` (CSV, JSON), ``plots``, ``wandb_io``.
Imports: every layer below (``base`` … ``study``); never ``submit`` or ``cli``.
"""
