"""One run under Lightning, in its own folder: everything that happens inside a job.

The model (``models``, ``module``, ``schedule``), the data loaders (``loaders``), the tricks and their
callbacks (``tricks``, ``callbacks``), the run's files (``run_folder``, ``results``, ``checkpoints``,
``metrics_log``, ``attempts``, ``timing``, ``progress``), telemetry (``gpu_monitor``, ``telemetry``), the
W&B mode and the loggers (``wandb_mode``, ``run_loggers``), the run itself (``train``, in named steps, with
``devices``, ``fit_facts``, ``unfinished`` and ``provenance``) and the in-task runner of several runs (``pack``).
Imports: ``base``, ``config``, ``data``, ``cluster``; never the study, report or submit layers.
"""
