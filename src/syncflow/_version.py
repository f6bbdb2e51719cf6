"""The one place the version is written: `syncflow.__version__`, the package metadata (pyproject.toml reads it) and
the User-Agent every request sends."""

__version__ = "0.1.0"
