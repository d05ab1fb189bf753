"""CIFAR-10 on disk: its layout, its files, getting them safely, and a fingerprint of them.

``layout`` (folder and file names, completeness), ``cifar_files`` (reading the pickled batches, verifying
them, writing GENERATED data in the same format), ``fetch`` (download once under a lock that works on
NFS/Lustre, atomic swaps, staging to node-local scratch), ``fingerprint`` (what identifies a data set in a
run's id).
Imports: ``base``, ``config``.
"""
