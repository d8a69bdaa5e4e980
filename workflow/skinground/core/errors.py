"""The input errors the workflow reports by name.

An entry point (``script.run`` / ``script.main``) turns any :class:`InputError` into a one-line
message naming the file, column, row, id or config key, and a non-zero exit, instead of a
traceback.
"""


class InputError(ValueError):
    """Bad input: a file, a row, an id, a model directory or a config value."""


class ModelLoadError(InputError):
    """A model or adapter directory is missing, incomplete, or holds the wrong kind of model."""


class OverlapError(InputError):
    """A query image is also in the database (test and train sets must be disjoint)."""
