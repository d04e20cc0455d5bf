"""Exceptions that carry a message meant for the user.

Every error raised for bad input derives from :class:`WavediffError`. Its message is one
line that names what is wrong (the file, the value) and what to do about it; the CLI prints
it as ``error: <message>`` and exits non-zero, without a traceback.
"""

from __future__ import annotations


class WavediffError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(WavediffError, ValueError):
    """A configuration value, key or combination is invalid."""


class AudioError(WavediffError):
    """An audio file cannot be read, is empty, or has the wrong sample rate or shape."""


class MelError(WavediffError, ValueError):
    """A mel spectrogram has the wrong shape, convention, or non-finite values."""


class CheckpointError(WavediffError):
    """A checkpoint cannot be loaded: missing, corrupt, untrusted, or of an unknown version."""
