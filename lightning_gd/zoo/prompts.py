"""Concepts in words, for an open-vocabulary segmenter (`clipseg:DIR`): each concept has a name, a category and
one or more prompts (phrasings of it, ensembled by averaging their text embeddings).

A vocabulary comes as a list of lines (`zoo.segmenter("clipseg:DIR", concepts=["glasses", "smile [part]"])`), as
comma-separated lines in a spec (`clipseg:DIR?concepts=glasses,smile`), or as a vocabulary file: a path ending in
`.txt` or holding a `/` (`clipseg:DIR?concepts=faces.txt`), one concept a line. A line is

    NAME                                  prompted by its own words, in the default category
    NAME [CATEGORY]                       object, part or material
    NAME [CATEGORY]: PROMPT | PROMPT | …  several phrasings, averaged (prompt ensembling)

so a plain list of prompts, one a line, is a vocabulary too. In a file, blank lines and lines that start with `#`
are skipped, and prompts may hold commas:

    # what a face generator may draw
    glasses: eyeglasses | a pair of glasses | sunglasses
    smile [part]: a smiling mouth | a smile, teeth showing
    beard [part]
    hair [material]: hair | a hairstyle

The names and categories are the segmenter's `concepts` and `categories`, so the dissection's report and unit
browser list and colour units by them. `categories` (a dict by name, a list in order, or one word for all) sets
the category of lines that name none. Limits, each an error that says which line broke it: at most
`MAX_CONCEPTS` concepts and `MAX_PROMPTS` prompts a concept; no empty name or prompt; no name or prompt twice
(compared as the CLIP tokenizer sees them: case and runs of spaces ignored); no concept named `background`, the
segmenter's own class for pixels that no prompt claims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lightning_gd.errors import InvalidValue, UnknownName, WrongType

CATEGORIES = ("object", "part", "material")
BACKGROUND = "background"
MAX_CONCEPTS = 256  # each concept costs a decoder pass per image and a column of every IoU tally
MAX_PROMPTS = 16
_LINE = re.compile(r"^(?P<name>[^\[\]:|]*?)\s*(?:\[(?P<category>[^\]]*)\])?\s*(?::(?P<prompts>.*))?$")


@dataclass(frozen=True)
class Concept:
    name: str
    prompts: tuple[str, ...]
    category: str


def _words(text: str) -> str:
    return " ".join(text.split())


def _key(text: str) -> str:
    """How the CLIP tokenizer sees a text: lower case, runs of white space as one space."""
    return _words(text).casefold()


def parse_line(line: str, where: str, category: str | None = None) -> Concept:
    """One vocabulary line (`NAME [CATEGORY]: PROMPT | PROMPT`) as a Concept; `where` names it in errors."""
    match = _LINE.match(line.strip())
    if match is None:
        raise InvalidValue(
            f"{where}: {line.strip()!r} is not a vocabulary line; expected NAME, NAME [CATEGORY] or "
            "NAME [CATEGORY]: PROMPT | PROMPT (a name holds no '[', ']', ':' or '|')"
        )
    name = _words(match["name"])
    if not name:
        raise InvalidValue(f"{where}: an empty concept name in {line.strip()!r}; every concept needs a name")
    if match["prompts"] is None:
        prompts = (name,)
    else:
        prompts = tuple(_words(p) for p in match["prompts"].split("|"))
        if not all(prompts):
            raise InvalidValue(f"{where}: an empty prompt in {line.strip()!r}; prompts are separated by '|'")
    given = None if match["category"] is None else _words(match["category"]).lower()
    chosen = given or category or CATEGORIES[0]
    if chosen not in CATEGORIES:
        raise InvalidValue(f"{where}: unknown category {chosen!r} of {name!r}; categories: {', '.join(CATEGORIES)}")
    return Concept(name, prompts, chosen)


def _lines(concepts: str | Path | list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(where, line) pairs from a vocabulary file, a comma-separated string or a list of lines."""
    if isinstance(concepts, str) and ("/" in concepts or concepts.endswith(".txt")):
        concepts = Path(concepts)
    if isinstance(concepts, Path):
        path = concepts.expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path} (one concept a line, see docs/models.md)")
        numbered = enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        kept = [(i, line) for i, line in numbered if line.strip() and not line.lstrip().startswith("#")]
        return [(f"{path} line {i}", line) for i, line in kept]
    if isinstance(concepts, str):
        return [(f"concept {i} of {concepts!r}", item) for i, item in enumerate(concepts.split(","), 1)]
    if isinstance(concepts, (list, tuple)) and all(isinstance(c, str) for c in concepts):
        return [(f"concept {i}", item) for i, item in enumerate(concepts, 1)]
    raise WrongType(
        "concepts are a list of lines, comma-separated lines or a vocabulary file (.txt); "
        f"got {type(concepts).__name__}"
    )


def _defaults(categories: dict[str, str] | list[str] | str | None, lines: list[tuple[str, str]]) -> list[str | None]:
    """The category each line gets when it names none."""
    if categories is None or isinstance(categories, str):
        return [categories] * len(lines)
    if isinstance(categories, dict):
        names = [_words(_LINE.match(line.strip())["name"]) if _LINE.match(line.strip()) else "" for _, line in lines]
        unknown = sorted(set(categories) - set(names))
        if unknown:
            raise UnknownName(f"categories name concepts that are not in the vocabulary: {', '.join(unknown)}")
        return [categories.get(n) for n in names]
    if len(categories) != len(lines):
        raise InvalidValue(f"{len(categories)} categories for {len(lines)} concepts; give one per concept, in order")
    return list(categories)


def read_concepts(
    concepts: str | Path | list[str] | tuple[str, ...] | None,
    categories: dict[str, str] | list[str] | str | None = None,
) -> tuple[Concept, ...]:
    """The checked vocabulary (see the module doc) from lines, comma-separated lines or a vocabulary file."""
    if concepts is None:
        raise InvalidValue(
            "an open-vocabulary segmenter needs concepts: clipseg:DIR?concepts=glasses,smile, a vocabulary file "
            "(clipseg:DIR?concepts=faces.txt, one concept a line), or zoo.segmenter('clipseg:DIR', concepts=[...])"
        )
    lines = _lines(concepts)
    if not lines:
        raise InvalidValue(f"the vocabulary {concepts!s} holds no concepts")
    if len(lines) > MAX_CONCEPTS:
        raise InvalidValue(f"{len(lines)} concepts; the most an open-vocabulary segmenter takes is {MAX_CONCEPTS}")
    defaults = _defaults(categories, lines)
    parsed = tuple(parse_line(line, where, default) for (where, line), default in zip(lines, defaults))
    _check_unique(parsed, [where for where, _ in lines])
    return parsed


def _check_unique(concepts: tuple[Concept, ...], wheres: list[str]) -> None:
    names: dict[str, str] = {}
    prompts: dict[str, str] = {}
    for concept, where in zip(concepts, wheres):
        if _key(concept.name) == BACKGROUND:
            raise InvalidValue(
                f"{where}: {concept.name!r} is the segmenter's own class for pixels no prompt claims; name the concept "
                "differently (its prompts may still say 'background')"
            )
        if _key(concept.name) in names:
            raise InvalidValue(f"{where}: concept {concept.name!r} is also {names[_key(concept.name)]}; give it once")
        names[_key(concept.name)] = where
        if len(concept.prompts) > MAX_PROMPTS:
            raise InvalidValue(f"{where}: {len(concept.prompts)} prompts for {concept.name!r}; at most {MAX_PROMPTS}")
        for prompt in concept.prompts:
            if _key(prompt) in prompts:
                raise InvalidValue(
                    f"{where}: the prompt {prompt!r} is also in {prompts[_key(prompt)]}; a prompt given twice "
                    "would make two concepts the same (or weigh one phrasing double)"
                )
            prompts[_key(prompt)] = f"{where} ({concept.name})"
