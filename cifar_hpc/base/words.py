"""Counts in words, for every line a user reads: "1 run", "2 runs", never "1 runs" or "run(s)"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural unless ``count`` is 1 (``plural``: for nouns that
    do not just take an s, e.g. "batches")."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
