"""The one submission path: from a grid to runs on a cluster (or on this machine).

``launch`` (what to run, what to skip, record it; asked through ``options.SubmitOptions``), ``batch`` (what one
job runs), ``executors`` (Slurm job arrays through submitit) and
``local_runs`` (this machine), ``pack_plan`` (runs per array task), ``dry_run`` (the plan without
submitting), ``doctor`` (checks before spending GPU-hours).
Imports: every layer below; never ``cli``.
"""
