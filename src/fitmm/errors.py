"""Errors that reach the user as one clear line (the CLI prints them and exits with code 2)."""


class InputError(ValueError):
    """Bad user input: a malformed file, an unknown setting, an impossible request.

    The message is a single line that names the file (and line or row where there is one) and
    what is wrong with it.
    """
