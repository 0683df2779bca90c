"""The package version, importable from every layer (configs and model cards record it)."""

__version__ = "0.1.0"
