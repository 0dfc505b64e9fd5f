"""Exceptions whose message is one sentence a user can act on.

Every error the library raises on bad input is a `HartError`; the CLI prints its message on one line
and exits with status 2 instead of showing a traceback. The message names the thing that is wrong
(file, key, shape, field, word) and what was expected.
"""


class HartError(Exception):
    """Base class: a problem with the user's input, files or environment, not a bug."""


class ConfigError(HartError, ValueError):
    """A configuration field has an invalid value, type or name."""


class CheckpointError(HartError):
    """A checkpoint folder or file is missing, incomplete or does not match the model."""


class PromptError(HartError, ValueError):
    """A prompt cannot be encoded (empty, or words the model does not know)."""


class DependencyError(HartError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""
