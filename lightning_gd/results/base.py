"""What every result class shares: a dataclass whose fields are the top-level keys of one JSON file, saved with
its schema version, strictly (no NaN) and atomically, and loaded only through its schema.

Schema versions: a file records `"version": N`. A file without one was written before the field existed and is
read as version 1 when its layout is version 1's (a file that was a bare list, e.g. `emergence.json`, is read as
the list field of version 1); it is still checked field by field. A version below `OLDEST` or above `VERSION` is
refused with the command that writes the file again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lightning_gd.cache import atomic_write
from lightning_gd.results.schema import FieldError, Fields, Maybe, ResultError, describe

VERSION_KEY = "version"

R = TypeVar("R", bound="ResultFile")


@dataclass
class ResultFile:
    FILE: ClassVar[str]  # its name in a results folder
    SCHEMA: ClassVar[Fields]  # the document's shape, the version key left out
    WRITTEN_BY: ClassVar[str]  # the command that writes it, for the errors that ask to rerun it
    VERSION: ClassVar[int] = 1  # the schema this code writes
    OLDEST: ClassVar[int] = 1  # the oldest schema this code reads
    LIST_FIELD: ClassVar[str | None] = None  # a file without a version that is a bare list holds this field

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)  # keys no field names

    # ------------------------------------------------------------------------------------------ documents

    def document(self) -> dict:
        """The JSON document: the schema version, then every field; an optional field that is None is left out
        unless its schema allows null (then null says "recorded, and undefined")."""
        doc: dict[str, Any] = {VERSION_KEY: self.VERSION}
        nullable = {name for name, checker in self.SCHEMA.optional.items() if isinstance(checker, Maybe)}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and (value is not None or f.name in self.SCHEMA.required or f.name in nullable):
                doc[f.name] = value
        return {**doc, **self.extra}

    @classmethod
    def check_document(cls, doc: dict) -> None:
        """Raise `FieldError` where `doc` (without its version) is not this result: the schema, then `rules`."""
        cls.SCHEMA.check(doc, "")
        cls.rules(doc)

    @classmethod
    def rules(cls, doc: dict) -> None:
        """Rules between fields, beyond each field's own shape (a class adds its own)."""

    @classmethod
    def from_document(cls: type[R], raw: Any, source: str | Path = "the document") -> R:
        """The result in a parsed JSON document, checked; `source` names it in errors."""
        try:
            doc = cls._current(raw, source)
            cls.check_document(doc)
        except FieldError as err:
            raise ResultError(f"{source}: {err.path + ': ' if err.path else ''}{err.message}") from None
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in doc.items() if k in names}, extra={k: v for k, v in doc.items() if k not in names}
        )

    @classmethod
    def _current(cls, raw: Any, source: str | Path) -> dict:
        """`raw` as a document of schema `VERSION`, its version key removed."""
        if cls.LIST_FIELD is not None and isinstance(raw, list):
            raw = {cls.LIST_FIELD: raw}
        if not isinstance(raw, dict):
            raise FieldError("", f"expected an object (a {cls.FILE} document), got {describe(raw)}")
        doc = dict(raw)
        version = doc.pop(VERSION_KEY, 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise FieldError(VERSION_KEY, f"expected an integer schema version, got {describe(version)}")
        if version > cls.VERSION:
            raise ResultError(
                f"{source}: schema version {version} is newer than this lightning_gd reads ({cls.VERSION}): "
                f"upgrade lightning_gd, or write it again with `{cls.WRITTEN_BY}`"
            )
        if version < cls.OLDEST:
            raise ResultError(
                f"{source}: schema version {version} is older than this lightning_gd reads "
                f"({cls.OLDEST}{'' if cls.OLDEST == cls.VERSION else f' to {cls.VERSION}'}): write it again with "
                f"`{cls.WRITTEN_BY}`"
            )
        return doc

    # ------------------------------------------------------------------------------------------ files

    @classmethod
    def path_in(cls, path: str | Path) -> Path:
        """The file: `path` itself, or `FILE` inside it when it is a folder."""
        path = Path(path)
        return path / cls.FILE if path.is_dir() else path

    def save(self, folder: str | Path) -> Path:
        """Write `FILE` into `folder`, checked first: a result that would not load again is not written."""
        path = Path(folder) / self.FILE
        doc = self.document()
        try:
            self.check_document({k: v for k, v in doc.items() if k != VERSION_KEY})
        except FieldError as err:
            raise ResultError(f"cannot save {path}: {err.path + ': ' if err.path else ''}{err.message}") from None
        return atomic_write(path, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """The result in `path` (a folder holding `FILE`, or the file itself), checked field by field."""
        file = cls.path_in(path)
        if not file.is_file():
            raise FileNotFoundError(f"no {cls.FILE} at {file} (`{cls.WRITTEN_BY}` writes it)")
        try:
            raw = json.loads(file.read_bytes())
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            raise ResultError(f"{file} is not a readable {cls.FILE}: {err}") from None
        except RecursionError:  # a small file can nest deeper than the parser's stack
            raise ResultError(f"{file} is not a readable {cls.FILE}: nested too deeply") from None
        return cls.from_document(raw, file)
