"""A published segmenter as a lightning_gd `Segmenter`: generated images in [-1, 1] are converted to the
network's input convention (RGB or BGR, its scale, mean and std), resized to the size it was trained at,
segmented in batches on the device of its weights, and the class scores resized back to the image."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from lightning_gd.models.segmenters import Segmenter


class PublishedSegmenter(Segmenter):
    """Wrap `net` (normalised images (B, 3, h, w) → class logits (B, C, h', w'), any h' w').

    Args:
        net: the network; its logits may come at a lower resolution than its input.
        concepts, categories: the vocabulary, in the order of the network's classes.
        mean, std: per-channel normalisation on the network's input scale (`scale` 1: [0, 1]; 255: [0, 255]).
        bgr: whether the network takes BGR channel order.
        scale: 1.0 for inputs in [0, 1], 255.0 for [0, 255].
        size: the short side the network was trained at (None: the image's own size).
        batch_size: images per forward pass.
        output: `logits` (the network returns logits) or `probs` (it returns probabilities).
    """

    def __init__(
        self,
        net: nn.Module,
        concepts: tuple[str, ...] | list[str],
        categories: dict[str, str] | None = None,
        mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
        std: tuple[float, float, float] = (1.0, 1.0, 1.0),
        bgr: bool = False,
        scale: float = 1.0,
        size: int | None = None,
        batch_size: int = 16,
        output: str = "logits",
        forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.concepts = tuple(concepts)
        self.categories = dict(categories or {c: "object" for c in self.concepts})
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.bgr, self.scale, self.size, self.batch_size, self.output = bgr, scale, size, batch_size, output
        self._forward = forward  # how to call net, when it is not net(x) → logits

    def fingerprint_settings(self) -> dict:
        forward = getattr(self._forward, "__qualname__", type(self._forward).__qualname__) if self._forward else None
        return {
            "mean": tuple(self.mean.flatten().tolist()),
            "std": tuple(self.std.flatten().tolist()),
            "bgr": self.bgr,
            "scale": self.scale,
            "size": self.size,
            "output": self.output,
            "forward": forward,
            "concepts": self.concepts,
        }

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → the network's input convention, at its training size."""
        x = (x + 1) / 2 * self.scale
        if self.bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        if self.size is not None and min(x.shape[-2:]) != self.size:
            h, w = x.shape[-2:]
            k = self.size / min(h, w)
            x = F.interpolate(x, size=(round(h * k), round(w * k)), mode="bilinear", align_corners=False)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        device = next(iter(self.net.parameters()), self.mean).device
        out = []
        for chunk in x.split(self.batch_size):
            y = self.normalise(chunk.to(device))
            y = self._forward(self.net, y) if self._forward is not None else self.net(y)
            if self.output == "probs":
                y = y.clamp_min(1e-12).log()
            out.append(F.interpolate(y, size=chunk.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(out).to(x.device)
