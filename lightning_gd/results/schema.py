"""The shapes results files must have, checked field by field so that a wrong one is named where it is wrong.

A schema is built from a few small checkers: `NUMBER` (finite: JSON has no NaN, and a NaN read back would
compare false with every threshold and pass silently), `INT`, `STR`, `BOOL`, `Maybe` (null allowed),
`ListOf`, `MapOf` (an object with any keys), `Fields` (an object with named keys) and `Either`. A checker raises
`FieldError(path, message)`; the loader turns it into a `ResultError` that names the file too:
`out/dissect.json: layers.layer4.units[3].iou: expected a finite number, got NaN`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from lightning_gd.errors import InvalidValue


class ResultError(InvalidValue):
    """A results file that is not the result it should be (unreadable JSON, an unknown schema version, a field of
    the wrong shape), or a result that cannot be saved as one; the message names the file and the field."""


class FieldError(Exception):
    """A value of the wrong shape at `path` (e.g. `units[3].iou`), before the file's name is known."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or 'the document'}: {message}")
        self.path, self.message = path, message


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def key_path(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` when the key is not a plain name (a concept such as `door-t`)."""
    if _NAME.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def describe(value) -> str:
    """A value as an error message shows it: its type, and short values themselves."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("…" if len(value) > 40 else "")
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Checker:
    expected = "a value"

    def check(self, value, path: str) -> None:
        if not self.accepts(value):
            raise FieldError(path, f"expected {self.expected}, got {describe(value)}")

    def accepts(self, value) -> bool:
        return True


class _Number(Checker):
    expected = "a finite number"

    def accepts(self, value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Int(Checker):
    expected = "an integer"

    def accepts(self, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)


class _Str(Checker):
    expected = "a string"

    def accepts(self, value) -> bool:
        return isinstance(value, str)


class _Bool(Checker):
    expected = "true or false"

    def accepts(self, value) -> bool:
        return isinstance(value, bool)


NUMBER, INT, STR, BOOL, ANY = _Number(), _Int(), _Str(), _Bool(), Checker()


class Maybe(Checker):
    """`inner`, or null (a number that is undefined, e.g. a share of an empty set)."""

    def __init__(self, inner: Checker) -> None:
        self.inner = inner
        self.expected = f"{inner.expected} or null"

    def check(self, value, path: str) -> None:
        if value is None:
            return
        try:
            self.inner.check(value, path)
        except FieldError as err:
            if err.path != path:  # wrong deeper inside: that field says more
                raise
            raise FieldError(path, f"expected {self.expected}, got {describe(value)}") from None


class Either(Checker):
    """The first of `options` that the value fits (e.g. a list of units, or a list of lists of units)."""

    def __init__(self, *options: Checker) -> None:
        self.options = options
        self.expected = " or ".join(o.expected for o in options)

    def check(self, value, path: str) -> None:
        errors = []
        for option in self.options:
            try:
                option.check(value, path)
                return
            except FieldError as err:
                errors.append(err)
        deepest = max(errors, key=lambda e: len(e.path))
        if deepest.path == path:  # no option fitted even its outer shape
            raise FieldError(path, f"expected {self.expected}, got {describe(value)}")
        raise deepest  # the option that fitted furthest says the most


class ListOf(Checker):
    def __init__(self, item: Checker, min_len: int = 0, length: int | None = None) -> None:
        self.item, self.min_len, self.length = item, min_len, length
        self.expected = f"a list of {item.expected.removeprefix('a ').removeprefix('an ')}s"

    def check(self, value, path: str) -> None:
        if not isinstance(value, (list, tuple)):  # a tuple is a list once written
            raise FieldError(path, f"expected {self.expected}, got {describe(value)}")
        if self.length is not None and len(value) != self.length:
            raise FieldError(path, f"expected {self.length} items, got {len(value)}")
        if len(value) < self.min_len:
            raise FieldError(path, f"expected at least {self.min_len} item(s), got {len(value)}")
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")


class MapOf(Checker):
    """An object whose keys are names (concepts, layers, rankings) and whose values are all `value`."""

    def __init__(self, value: Checker) -> None:
        self.value = value
        self.expected = "an object"

    def check(self, value, path: str) -> None:
        if not isinstance(value, dict):
            raise FieldError(path, f"expected an object, got {describe(value)}")
        for key, item in value.items():
            self.value.check(item, key_path(path, key))


class Fields(Checker):
    """An object with `required` keys and `optional` ones (checked when present). Other keys are kept, not
    checked: a later writer may record more."""

    def __init__(self, required: dict[str, Checker], optional: dict[str, Checker] | None = None) -> None:
        self.required, self.optional = required, optional or {}
        self.expected = "an object"

    def check(self, value, path: str) -> None:
        if not isinstance(value, dict):
            raise FieldError(path, f"expected an object, got {describe(value)}")
        for key, checker in self.required.items():
            if key not in value:
                raise FieldError(key_path(path, key), f"missing (expected {checker.expected})")
            checker.check(value[key], key_path(path, key))
        for key, checker in self.optional.items():
            if key in value:
                checker.check(value[key], key_path(path, key))

    @property
    def names(self) -> Iterable[str]:
        return [*self.required, *self.optional]


def require(condition: bool, path: str, message: str) -> None:
    """A rule between fields (a ranking that indexes the table beside it, a label in the vocabulary)."""
    if not condition:
        raise FieldError(path, message)


def finite_or_none(value):
    """NaN and ±inf as None, through lists and dicts: how a value that is undefined (a share of an
    empty set, an unsampled cell) is stored."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value
