"""The one base class of the input errors the workflow reports by name.

An entry point (``cli.main``) turns any :class:`InputError` into a one-line message naming
the file, column, row, id or config key, and a non-zero exit, instead of a traceback.
"""


class InputError(ValueError):
    """Bad input: a file, a row, an id, a model directory or a config value."""
