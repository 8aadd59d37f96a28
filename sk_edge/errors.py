"""Errors that reach the user as one line, with an exit code.

Anything raised as a :class:`SkEdgeError` is a problem with what the user gave us (a
name, a file, a setting) or with what they asked for; the CLI prints its message and
exits with its code, never a traceback. Every other exception is a bug in sk-edge and
keeps its traceback.
"""


class SkEdgeError(Exception):
    """A failure the user can act on. Exit code 1."""

    exit_code = 1


class UsageError(SkEdgeError):
    """A bad option value: unknown model name, impossible input size... Exit code 2."""

    exit_code = 2


class WeightsError(SkEdgeError):
    """A weights file that cannot be read safely or does not fit the architecture."""


class UnsupportedModelError(SkEdgeError):
    """The model has parts the export passes do not know how to rewrite exactly."""


class ParityError(SkEdgeError):
    """The exported graph does not reproduce the PyTorch model."""
