"""Errors a user can act on: their message is one line that names the file and what is wrong."""


class UserError(Exception):
    """Bad input or configuration; shown to the user as-is (CLI: one line, exit 2)."""


class DatasetError(UserError, ValueError):
    """A dataset file is missing, malformed or inconsistent."""
