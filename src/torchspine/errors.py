"""The base class of torchspine's own errors: problems with the user's input, not with the code.

The command line prints these as one line and exits with status 2; anything else (``TypeError``, ``KeyError``, ...)
is a bug and keeps its traceback. Subclasses also derive from the built-in class that describes them best
(``ValueError`` for bad content), so ``except ValueError`` keeps working for library callers.
"""

from __future__ import annotations

__all__ = ["MissingDependencyError", "TorchspineError", "UnknownNameError", "UsageError"]


class TorchspineError(Exception):
    """A user-facing error of torchspine: a bad file, argument or configuration, with a message that says which."""


class UsageError(TorchspineError, ValueError):
    """A bad argument or input (a value, a file's content, a data set): the message says which and what is expected."""


class UnknownNameError(TorchspineError, KeyError):
    """A name that is not registered (an experiment, ...); the message suggests close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(TorchspineError, ImportError):
    """An optional dependency a feature needs is not installed; the message says which extra to install."""
