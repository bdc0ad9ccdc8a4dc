"""Segmenters: image → per-pixel scores over a concept vocabulary with categories.

Dissection needs hard labels; the causal search needs differentiable soft probabilities. Any segmenter the
project uses is a `Segmenter`: it names its `concepts`, their `categories` and the `colours` its label maps are
drawn in, and implements `logits`; `probs`, `labels` and the input checks come from here. `ModuleSegmenter`
wraps any network whose output is logits, probabilities or labels.
"""

from __future__ import annotations

import functools
import numbers
from typing import Literal

import torch
from torch import nn

from lightning_gd.errors import InvalidValue, UnknownName
from lightning_gd.models.images import segmenter_input

SegmenterOutput = Literal["logits", "probs", "labels"]
Colour = tuple[int, int, int]


def default_colours(n: int) -> list[Colour]:
    """n RGB colours for label maps, distinct for any vocabulary in use (5,000 were; UPP has about 1,500): hue,
    saturation and value follow a three-dimensional low-discrepancy sequence (Roberts' R3), so neighbouring indices
    differ in lightness as well as hue and a large vocabulary fills the colour space evenly; a colour that rounds
    onto an earlier one moves on along the hue circle."""
    return list(_palette(n))


@functools.lru_cache(maxsize=8)
def _palette(n: int) -> tuple[Colour, ...]:
    """The palette of `default_colours`, computed once per size (label maps are drawn at every paint stroke)."""
    import colorsys

    a1, a2, a3 = 0.8191725133961645, 0.6710436067037893, 0.5497004779019703  # 1/φ₃, 1/φ₃², 1/φ₃³
    out: list[Colour] = []
    seen: set[Colour] = set()
    for i in range(n):
        hue, sat, val = (0.5 + a1 * i) % 1.0, 0.45 + 0.5 * ((0.5 + a2 * i) % 1.0), 0.55 + 0.4 * ((0.5 + a3 * i) % 1.0)
        colour = (0, 0, 0)
        for step in range(1000):  # at most 1,000 tries; 1,500 concepts need a handful in all
            r, g, b = colorsys.hsv_to_rgb((hue + step * 0.0037) % 1.0, sat, val)
            colour = (round(255 * r), round(255 * g), round(255 * b))
            if colour not in seen:
                break
        seen.add(colour)
        out.append(colour)
    return tuple(out)


def checked_colours(colours, concepts: tuple[str, ...]) -> list[Colour]:
    """One (r, g, b) of integers 0–255 per concept, given as a list in vocabulary order or a {concept: colour} dict."""
    if isinstance(colours, dict):
        missing = [c for c in concepts if c not in colours]
        if missing:
            raise InvalidValue(f"colours: no colour for {', '.join(missing[:6])}")
        colours = [colours[c] for c in concepts]
    colours = list(colours)
    if len(colours) != len(concepts):
        raise InvalidValue(f"{len(colours)} colours for {len(concepts)} concepts")
    for c in colours:
        if len(c) != 3 or not all(isinstance(v, numbers.Integral) and 0 <= v <= 255 for v in c):
            raise InvalidValue(f"a colour is (r, g, b) of integers 0–255, got {c!r}")
    return [tuple(int(v) for v in c) for c in colours]


class Segmenter(nn.Module):
    """Base class. Subclasses set `concepts`, `categories` and implement `logits(x) → (B, C, H, W)`; they may set
    `declared_colours` (one (r, g, b) per concept), else `colours` are `default_colours`."""

    concepts: tuple[str, ...] = ()
    categories: dict[str, str] = {}
    differentiable: bool = True  # whether `probs` carries gradients to the image (the causal search needs it)
    declared_colours: list[Colour] | None = None

    @property
    def colours(self) -> list[Colour]:
        """The colour of each concept's pixels in drawn label maps, in vocabulary order."""
        if not self.declared_colours:
            return default_colours(len(self.concepts))
        return checked_colours(self.declared_colours, self.concepts)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement logits(x) → (B, C, H, W)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs(x)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Soft class probabilities (B, C, H, W), differentiable with respect to x."""
        return self.checked(self.logits(segmenter_input(x))).softmax(1)

    @torch.no_grad()
    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Hard labels (B, H, W): indices into `concepts`."""
        return self.checked(self.logits(segmenter_input(x))).argmax(1)

    def checked(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-pixel scores (B, C, H, W) with one channel per concept and no NaN/Inf, or a ValueError."""
        C = len(self.concepts)
        if scores.ndim != 4 or scores.shape[1] != C:
            raise InvalidValue(
                f"{type(self).__name__} returned scores of shape {tuple(scores.shape)}; expected (B, {C}, H, W), one "
                f"channel per concept of its vocabulary ({', '.join(self.concepts[:6])}{', …' if C > 6 else ''})"
            )
        if not torch.isfinite(scores).all():
            raise InvalidValue(f"{type(self).__name__} returned NaN or Inf scores for these images")
        return scores

    def concept_index(self, concept: str) -> int:
        return concept_lookup(concept, self.concepts, "this segmenter knows")


def concept_lookup(concept: str, names: tuple[str, ...], what: str = "the vocabulary is") -> int:
    """Index of `concept` in `names`, or a KeyError that suggests close names and lists the valid ones."""
    if concept not in names:
        import difflib

        close = difflib.get_close_matches(concept, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownName(f"unknown concept '{concept}'{hint}; {what}: {', '.join(names)}")
    return names.index(concept)


class ModuleSegmenter(Segmenter):
    """Wrap any network that maps images in [-1, 1] to per-pixel class scores.

    Args:
        net: the network.
        concepts: the class names, in the order of the network's classes.
        categories: a category per concept (`object`, `part`, `material`, …; a dict or a list in concept
            order); default: all `object`.
        output: what the network returns: `logits` (B, C, H, W), `probs` (B, C, H, W) that sum to 1 over C
            (used as they are, never softmaxed again), or `labels` (B, H, W) class indices (then `probs` is
            one-hot and not differentiable, so the causal search cannot use it).
        colours: the colour each concept's pixels are drawn in (a list of (r, g, b) in concept order, or a
            {concept: (r, g, b)} dict); default: `default_colours`.
    """

    def __init__(
        self,
        net: nn.Module,
        concepts: tuple[str, ...] | list[str],
        categories: dict[str, str] | list[str] | None = None,
        output: SegmenterOutput = "logits",
        colours: list[Colour] | dict[str, Colour] | None = None,
    ) -> None:
        super().__init__()
        if output not in ("logits", "probs", "labels"):
            raise InvalidValue(f"output must be one of logits, probs, labels; got {output!r}")
        self.net = net
        self.concepts = tuple(concepts)
        if categories is None:
            categories = {c: "object" for c in self.concepts}
        elif not isinstance(categories, dict):
            if len(categories) != len(self.concepts):
                raise InvalidValue(f"{len(categories)} categories for {len(self.concepts)} concepts")
            categories = dict(zip(self.concepts, categories))
        self.categories = dict(categories)
        self.output = output
        self.differentiable = output != "labels"
        self.declared_colours = None if colours is None else checked_colours(colours, self.concepts)

    def fingerprint_settings(self) -> dict:
        return {"output": self.output, "concepts": self.concepts}

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        C = len(self.concepts)
        if self.output == "labels":
            if out.ndim != 3:
                raise InvalidValue(f"segmenter network returned {tuple(out.shape)}; output='labels' expects (B, H, W)")
            if out.numel() and (out.min() < 0 or out.max() >= C):
                raise InvalidValue(f"segmenter labels must be in [0, {C}) for its {C} concepts")
            return nn.functional.one_hot(out.long(), C).permute(0, 3, 1, 2).float()
        if out.ndim != 4 or out.shape[1] != C:
            raise InvalidValue(
                f"segmenter network returned {tuple(out.shape)}; expected (B, {C}, H, W) for its {C} concepts"
            )
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self._scores(x)
        return out if self.output == "logits" else out.clamp_min(1e-12).log()

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == "logits":
            return super().probs(x)
        return self.checked(self._scores(segmenter_input(x)))
