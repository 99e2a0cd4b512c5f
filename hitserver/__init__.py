"""Flask HIT server: serves task batches to workers (local, MTurk, Prolific), stores answers in SQL."""

__version__ = "0.1.0"
