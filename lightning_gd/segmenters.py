"""Segmenters: image → per-pixel scores over a concept vocabulary with categories.

Dissection needs hard labels; the causal search needs differentiable soft probabilities. Any segmenter
the project uses is a `Segmenter`: it names its `concepts` and their `categories` and implements
`logits`; `probs`, `labels` and the input checks come from here.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_gd.images import check_images


class Segmenter(nn.Module):
    """Base class. Subclasses set `concepts`, `categories` and implement `logits(x) → (B, C, H, W)`."""

    concepts: tuple[str, ...] = ()
    categories: dict[str, str] = {}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs(x)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Soft class probabilities (B, C, H, W), differentiable with respect to x."""
        return self.logits(check_images(x)).softmax(1)

    @torch.no_grad()
    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Hard labels (B, H, W): indices into `concepts`."""
        return self.logits(check_images(x)).argmax(1)

    def concept_index(self, concept: str) -> int:
        return concept_lookup(concept, self.concepts, "this segmenter knows")


def concept_lookup(name: str, names: tuple[str, ...], what: str = "the vocabulary is") -> int:
    """Index of `name` in `names`, or a KeyError that suggests close names and lists the valid ones."""
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown concept '{name}'{hint}; {what}: {', '.join(names)}")
    return names.index(name)


class ModuleSegmenter(Segmenter):
    """Wrap any network that maps images in [-1, 1] to class logits (B, C, H, W)."""

    def __init__(self, net: nn.Module, concepts: tuple[str, ...], categories: dict[str, str] | None = None) -> None:
        super().__init__()
        self.net = net
        self.concepts = tuple(concepts)
        self.categories = dict(categories or {c: "object" for c in concepts})

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if out.ndim != 4 or out.shape[1] != len(self.concepts):
            raise ValueError(
                f"segmenter network returned {tuple(out.shape)}; expected (B, {len(self.concepts)}, H, W) "
                f"for its {len(self.concepts)} concepts"
            )
        return out
