"""Errors smokeflow raises for bad input: each names the file and the problem.

The CLI and the app catch :class:`SmokeflowError` and show its message instead of a stack trace.
"""

from __future__ import annotations

import os


class SmokeflowError(Exception):
    """Base class of every error meant for the user (printed without a traceback)."""


class DataError(SmokeflowError, ValueError):
    """Input data (image, video, dataset layout, npz) is missing, unreadable or inconsistent.

    ``path`` is the offending file or folder; the message always starts with it.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class CheckpointError(SmokeflowError, ValueError):
    """A checkpoint folder or weights file is missing, truncated, corrupt or does not fit the model."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(SmokeflowError, ValueError):
    """A YAML config has an unknown key, a wrong type or a value out of range."""
