"""Statistics and figures (paper Fig. 8, Fig. 9) from collected Likert answers."""

__version__ = "0.1.0"
