"""Flask HIT server: serves task batches to workers (local, MTurk, Prolific); answers go to SQL."""

__version__ = "0.1.0"
