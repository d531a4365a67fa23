"""Errors that reach the user as one clear line instead of a traceback."""


class PrunebenchError(Exception):
    """Bad input or missing files: the CLI prints the message and exits with status 2."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the stage is marked failed."""
