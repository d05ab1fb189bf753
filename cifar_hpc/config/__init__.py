"""Settings and the typed run config: what a run is, before anything runs.

``settings`` (TOML files, dotted ``--set`` keys, merging and coercion), ``train_config`` (``TrainConfig``
with one dataclass per concern, validation, the ``run_id``), ``resolve`` (the precedence of defaults, a
config file, flags and ``--set`` that ``cifar-hpc train`` applies).
Imports: ``base``.
"""
