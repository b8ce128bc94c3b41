"""The package version (read by the build backend and by every file the workbench writes)."""

__version__ = "0.1.0"
