"""Settings and the typed run config: what a run is, before anything runs.

``settings`` (TOML files, dotted ``--set`` keys, merging and coercion), ``train_config`` (``TrainConfig``
with one dataclass per concern, validation), ``identity`` (the settings that make the ``run_id``, and
what a run's seeds share), ``resolve`` (the precedence of defaults, a
config file, flags and ``--set`` that ``cifar-hpc train`` applies), ``keys`` (dotted keys checked against
``TrainConfig``, with the closest valid one: ``--set`` and the grids read them alike).
Imports: ``base``.
"""
