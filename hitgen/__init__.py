"""Render "Which Robot Do You Trust?" task batches from explanation files (paper 3.4, Fig. 5)."""

__version__ = "0.1.0"
