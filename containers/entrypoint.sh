#!/bin/sh
# cifar-hpc-entrypoint — the image's ENTRYPOINT.
#   docker run IMAGE train --epochs 1 ...        runs `cifar-hpc train --epochs 1 ...`
#   docker run IMAGE cifar-hpc train ...         runs it as given (slurm/train.sbatch appends `cifar-hpc train ...`)
#   docker run IMAGE python3 -c '...'            any other command on PATH runs as given
#   docker run IMAGE                             `cifar-hpc --help`
# `exec`: the command replaces this shell, so signals (srun's USR2 for requeue, TERM) reach it directly.
set -e
if [ "$#" -eq 0 ]; then
  set -- cifar-hpc --help
elif [ "${1#-}" != "$1" ] || ! command -v "$1" >/dev/null 2>&1; then
  set -- cifar-hpc "$@"   # an option or a cifar-hpc subcommand (train, submit, collect, ...)
fi
exec "$@"
