"""trainyard: training facility software for particle-physics ML."""

__version__ = "0.1.0"
