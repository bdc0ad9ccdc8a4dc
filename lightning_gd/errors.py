"""The project's user errors: mistakes a user can correct (a bad value, an unknown name, a file of the wrong
kind, a missing optional package). The command line prints these as one line and exits with status 2; any
other exception is a bug in lightning_gd and is shown with its traceback.

Each class also derives from the built-in exception that code calling the library catches (`InvalidValue` is a
`ValueError`, `UnknownName` a `KeyError`, …), so `except ValueError` keeps working from Python.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave cannot be used; the message says what was wrong and what was expected."""


class InvalidValue(UserError, ValueError):
    """A value out of range, of the wrong form, or inconsistent with another option or file."""


class UnknownName(UserError, KeyError):
    """A name (layer, concept, spec, key) that does not exist; the message lists the valid ones."""

    def __str__(self) -> str:  # a KeyError's own str() is the repr of its argument: quotes around a sentence
        return str(self.args[0]) if self.args else ""


class WrongType(UserError, TypeError):
    """An object of the wrong kind where the user chose one (a module that is not a generator, …)."""


class OutOfRange(UserError, IndexError):
    """An index (a unit, a location) outside what the network has."""


class MissingPackage(UserError, ImportError):
    """An optional package that a chosen feature needs is not installed; the message says how to install it."""


class UnknownAttribute(UserError, AttributeError):
    """A dotted path (`generator`, `nets.G`) naming an attribute the object does not have."""


class NotReady(UserError, RuntimeError):
    """A step asked for before the one it needs (testing a search that was never fitted, …)."""
