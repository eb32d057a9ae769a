"""Errors of the output store."""

__all__ = ["OutputError", "OutputExistsError"]


class OutputError(ValueError):
    """The output store cannot be used; the message names the path and the problem."""


class OutputExistsError(OutputError):
    """An image's output is complete and overwrite was not asked for."""
