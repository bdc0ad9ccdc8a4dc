"""The vocabulary of an open-vocabulary segmenter (`lightning_gd.zoo.prompts`): lines, comma-separated lines and
vocabulary files give the same concepts; categories come from the line, the `categories` option or the default;
duplicates, empty prompts, too many concepts and unknown categories are errors that name the line."""

from __future__ import annotations

import pytest

from lightning_gd.world.render import CATEGORIES
from lightning_gd.zoo.prompts import MAX_CONCEPTS, MAX_PROMPTS, Concept, read_concepts

FILE = """\
# what a face generator may draw
glasses: eyeglasses | a pair of glasses | sunglasses

smile [part]: a smiling mouth | a smile, teeth showing
  beard [ Part ]
hair [material]: hair | a hairstyle
"""


def test_a_vocabulary_file_gives_names_categories_and_prompts(tmp_path):
    path = tmp_path / "faces.txt"
    path.write_text(FILE)
    assert read_concepts(str(path)) == (
        Concept("glasses", ("eyeglasses", "a pair of glasses", "sunglasses"), "object"),
        Concept("smile", ("a smiling mouth", "a smile, teeth showing"), "part"),
        Concept("beard", ("beard",), "part"),
        Concept("hair", ("hair", "a hairstyle"), "material"),
    )
    assert read_concepts(path) == read_concepts(str(path))


def test_lists_and_comma_separated_lines_are_the_same_vocabulary():
    expected = (Concept("glasses", ("glasses",), "object"), Concept("smile", ("a smile", "grin"), "part"))
    assert read_concepts(["glasses", "smile [part]: a smile | grin"]) == expected
    assert read_concepts("glasses, smile[part]:a smile|grin") == expected
    assert read_concepts(("a  pair of   glasses",)) == (Concept("a pair of glasses", ("a pair of glasses",), "object"),)


def test_categories_fill_in_lines_that_name_none():
    lines = ["sky", "door [part]", "grass"]

    def categories(given):
        return [c.category for c in read_concepts(lines, categories=given)]

    assert categories("material") == ["material", "part", "material"]
    assert categories({"grass": "material"}) == ["object", "part", "material"]
    assert categories(["object", "object", "material"]) == ["object", "part", "material"]
    with pytest.raises(KeyError, match="categories name concepts that are not in the vocabulary: tree"):
        read_concepts(lines, categories={"tree": "object"})
    with pytest.raises(ValueError, match="2 categories for 3 concepts"):
        read_concepts(lines, categories=["object", "part"])
    with pytest.raises(ValueError, match=r"concept 2: unknown category 'stuff' of 'door'; categories: object, pa"):
        read_concepts(["sky", "door [stuff]"])


def test_duplicates_are_refused_as_the_tokenizer_sees_them(tmp_path):
    with pytest.raises(ValueError, match=r"concept 3: concept 'Smile' is also concept 1; give it once"):
        read_concepts(["smile", "glasses", "Smile: a grin"])
    with pytest.raises(ValueError, match=r"concept 2: the prompt 'A Smile' is also in concept 1 \(smile\)"):
        read_concepts(["smile: a smile | grin", "happy: A  Smile"])
    with pytest.raises(ValueError, match=r"the prompt 'grin' is also in concept 1 \(smile\)"):
        read_concepts(["smile: grin | grin"])
    path = tmp_path / "v.txt"
    path.write_text("glasses\n\n# a comment\nglasses [part]\n")
    with pytest.raises(ValueError, match=r"v\.txt line 4: concept 'glasses' is also .*v\.txt line 1"):
        read_concepts(path)


def test_empty_names_and_prompts_are_refused():
    with pytest.raises(ValueError, match=r"concept 2 of 'glasses,,smile': an empty concept name"):
        read_concepts("glasses,,smile")
    with pytest.raises(ValueError, match=r"concept 1: an empty prompt in 'smile: a smile \|'"):
        read_concepts(["smile: a smile |"])
    with pytest.raises(ValueError, match=r"concept 1: an empty prompt in 'smile:'"):
        read_concepts(["smile:"])
    with pytest.raises(ValueError, match=r"concept 1: an empty concept name in '\[part\]: a door'"):
        read_concepts(["[part]: a door"])
    with pytest.raises(ValueError, match=r"concept 1: 'a \| b' is not a vocabulary line; expected NAME"):
        read_concepts(["a | b"])
    with pytest.raises(ValueError, match="holds no concepts"):
        read_concepts([])


def test_limits_and_the_background_name(tmp_path):
    many = [f"concept{i}" for i in range(MAX_CONCEPTS + 1)]
    with pytest.raises(ValueError, match=f"{MAX_CONCEPTS + 1} concepts; the most .* is {MAX_CONCEPTS}"):
        read_concepts(many)
    assert len(read_concepts(many[:MAX_CONCEPTS])) == MAX_CONCEPTS
    prompts = " | ".join(f"phrasing {i}" for i in range(MAX_PROMPTS + 1))
    with pytest.raises(ValueError, match=f"concept 1: {MAX_PROMPTS + 1} prompts for 'x'; at most {MAX_PROMPTS}"):
        read_concepts([f"x: {prompts}"])
    with pytest.raises(ValueError, match=r"concept 2: 'Background' is the segmenter's own class"):
        read_concepts(["sky", "Background"])
    assert read_concepts(["rest: the background"])[0].prompts == ("the background",)  # a prompt may say it


def test_what_is_not_a_vocabulary_says_what_is(tmp_path):
    with pytest.raises(ValueError, match=r"needs concepts: clipseg:DIR\?concepts=glasses,smile"):
        read_concepts(None)
    with pytest.raises(FileNotFoundError, match=r"vocabulary file not found: .*missing\.txt"):
        read_concepts(str(tmp_path / "missing.txt"))
    with pytest.raises(TypeError, match="concepts are a list of lines, .*; got int"):
        read_concepts(3)


def test_the_shipped_vocabularies_read():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "configs" / "clipseg"
    world = read_concepts(folder / "world.txt")
    assert {c.name: c.category for c in world} == CATEGORIES  # the world segmenter's concepts, in words
    faces = read_concepts(folder / "faces.txt")
    assert {"glasses", "smile", "beard", "hair"} <= {c.name for c in faces}
