"""The bottom layer: what every other layer may use and that imports nothing of the package.

``errors`` (the user-error types the CLI turns into one line and exit 2), ``console`` (the one set-up of
logging and library chatter, for the CLI and for jobs that never pass through it), ``signals`` (the
requeue signal and who owns it, and noticing a SIGTERM wherever it strikes) and ``words`` (counts in
words: "1 run", "2 runs").
Imports: nothing from ``cifar_hpc``.
"""
