"""The cluster as this package sees it: Slurm's CLI, container command lines, profiles, processes.

``slurm`` (the one wrapper around sbatch/squeue/sacct/scontrol), ``containers`` (the one generator of
apptainer/docker/podman command lines), ``image_check`` (what an image holds, asked of the image:
its Python and cifar-hpc against this side's), ``profiles`` (a cluster's settings and time-limit rules),
``processes`` (is a recorded process still alive, on which host).
Imports: ``base``, ``config``.
"""
