"""The error type for a user's mistake, importable from every layer of the package.

Library code raises :class:`UserError` (or a subclass) when the input is wrong — a config, a
file, a record, an output directory in use — with a message that says what, where and how to
fix it. The console scripts (:mod:`rar_jax.cli`) print such errors as one line and exit with
status 2; every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input whose message says what, where and how to fix it."""
