"""Errors a user can act on: their message is one line that names the file and what is wrong.

They are ``ValueError``s, as scikit-learn's input errors are, so library callers can catch them
the usual way; the CLI and the pages show their message as-is.
"""


class UserError(ValueError):
    """Bad input or configuration; shown to the user as-is (CLI: one line, exit 2)."""


class DatasetError(UserError):
    """A dataset file is missing, malformed or inconsistent."""


class NotFittedError(UserError, AttributeError):
    """A model was used before ``fit`` (as scikit-learn's: both a ``ValueError`` and an ``AttributeError``)."""
