"""One run under Lightning, in its own folder: everything that happens inside a job.

The model (``models``, ``module``, ``schedule``), the data loaders (``loaders``), the tricks and their
callbacks (``tricks``, ``callbacks``), the run's files (``run_folder``, ``results``, ``checkpoints``,
``metrics_log``, ``attempts``, ``timing``, ``progress``), telemetry (``gpu_monitor``, ``telemetry``), the
W&B mode (``wandb_mode``), the run itself (``train``) and the in-task runner of several runs (``pack``).
Imports: ``base``, ``config``, ``data``, ``cluster``; never the study, report or submit layers.
"""
