"""One run under Lightning, in its own folder: everything that happens inside a job.

The model (``models``, ``module`` with ``epoch_sums``: a step's figures kept on the device, ``schedule``,
``compiling``), the data (``batches``: one seeded, resumable order; ``loaders``), the tricks and their
callbacks (``tricks``, ``callbacks``, ``checkpoint_policy``), the run's files (``run_folder``, ``results``,
``checkpoints``, ``metrics_log``, ``attempts``, ``timing``, ``progress``), telemetry (``gpu_monitor``,
``telemetry``), the W&B mode and the loggers (``wandb_mode``, ``run_loggers``), the run itself (``train``, in
named steps, with ``devices``, ``fit_facts``, ``unfinished`` and ``provenance``) and the in-task runner of
several runs (``pack``).
Imports: ``base``, ``config``, ``data``, ``cluster``; never the study, report or submit layers.
"""
