"""Errors that reach the user as one clear line: the CLI prints them and exits with code 2 for bad
input (:class:`InputError` and its kinds) and 3 when training diverges."""


class InputError(ValueError):
    """Bad user input: a malformed file, an unknown setting, an impossible request.

    The message is a single line that names the file (and line or row where there is one) and
    what is wrong with it.
    """


class ParameterError(InputError):
    """A function parameter has a value it cannot take.

    The library names the parameter (``k_core``); the command line maps the name to its flag
    (``--k-core``) when it reports the error, so each layer speaks its own vocabulary.
    """

    def __init__(self, parameter: str, value, problem: str) -> None:
        self.parameter = parameter
        self.value = value
        self.problem = problem
        super().__init__(f"{parameter} {value!r}: {problem}")


class MissingExtraError(InputError):
    """A feature needs an optional dependency group that is not installed.

    The message names the feature and the install command, e.g.
    ``text features need the optional extra: pip install 'fitmm[features]'``.
    """


class TrainingDivergedError(ArithmeticError):
    """The training loss or the scores stopped being finite; the message names the epoch and the
    loss term, and the run directory keeps its last checkpoint."""
