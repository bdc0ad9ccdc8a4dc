"""Interventions on a generator layer (paper §3.2, Eqs. 3 and 5; §S-6.4).

A probed layer splits the generator, `G = f ∘ h`, with featuremap `r = h(z)` of shape (B, U, h, w). Every
intervention here is one blend of `r` towards a target at a set of units and locations:

    r' = r + P ⊙ α ⊙ (target − r)

with `P` a (B or 1, 1, h, w) location mask in [0, 1] and `α` a (U,) unit weight in [0, 1]:
- ablation (Eq. 3, `x_a`): target 0, α the 0/1 indicator of the units;
- insertion (Eq. 3, `x_i`): target `k_c`, the same indicator;
- partial ablation / insertion (Eq. 5, `x_a'`, `x_i'`): a continuous α.

`k_c` (§S-6.4) is each unit's mean activation where concept c is present, every featuremap location weighted
by the fraction of its image pixels that the segmenter labels c (`concept_means`).

`LayerSplit` runs `h` once and `f` as often as needed, which is what makes the causal search cheap: each
optimisation step runs only `f` and the segmenter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from lightning_gd.generators import device_of, latents, z_dim_of
from lightning_gd.hooks import Trace, resolve_layer
from lightning_gd.segmenters import Segmenter

# ----------------------------------------------------------------------------------------------- the maths


def intervene(
    r: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """r + mask ⊙ α ⊙ (target − r): r (B, U, h, w), α (U,), mask (B or 1, 1, h, w), target (U,) or None (= 0)."""
    a = alpha.to(r)[None, :, None, None]  # (1, U, 1, 1)
    m = mask.to(r)
    if target is None:
        return r * (1 - m * a)
    return r + m * a * (target.to(r)[None, :, None, None] - r)


def ablate(r: torch.Tensor, units: torch.Tensor | list[int], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Set `units` to 0 at the locations of `mask` (default: everywhere)."""
    return intervene(r, unit_indicator(units, r.shape[1], r.device), _everywhere(r, mask))


def insert(
    r: torch.Tensor, units: torch.Tensor | list[int], k: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Set `units` to k (U,) at the locations of `mask` (default: everywhere)."""
    return intervene(r, unit_indicator(units, r.shape[1], r.device), _everywhere(r, mask), k)


def _everywhere(r: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(1, 1, *r.shape[-2:], device=r.device) if mask is None else mask


def unit_indicator(units: torch.Tensor | list[int], num_units: int, device=None) -> torch.Tensor:
    """(U,) float: 1 at the listed unit indices, 0 elsewhere."""
    units = torch.as_tensor(units, dtype=torch.long).flatten()
    if units.numel() and (units.min() < 0 or units.max() >= num_units):
        raise IndexError(f"unit indices must be in [0, {num_units}); got {units.tolist()}")
    out = torch.zeros(num_units, device=device)
    out[units.to(out.device)] = 1.0
    return out


def location_mask(locations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,) flat featuremap locations → (B, 1, h, w) one-hot masks."""
    h, w = size
    if locations.numel() and (locations.min() < 0 or locations.max() >= h * w):
        raise IndexError(f"locations must be in [0, {h * w}) for a {h}×{w} featuremap")
    mask = torch.zeros(locations.shape[0], h * w, device=locations.device)
    mask[torch.arange(locations.shape[0], device=locations.device), locations] = 1.0
    return mask.view(-1, 1, h, w)


def coverage(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per featuremap location, the mean of a per-pixel map over its pixels: (B, H, W) → (B, h, w).

    With a 0/1 concept mask this is the fraction of each location covered by the concept; with soft
    probabilities it is the concept's mean probability there."""
    return F.adaptive_avg_pool2d(scores[:, None].float(), size)[:, 0]


def at_locations(maps: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps read at (B,) flat locations → (B,)."""
    return maps.flatten(1).gather(1, locations[:, None].long())[:, 0]


# ----------------------------------------------------------------------------------------------- h and f


class LayerSplit:
    """`h(z)` → r and `f(r)` → x for a generator split at `layer`.

    How `f` runs, in order of preference:
    1. the generator's own `forward_from(layer, r)` (the world's generator has one);
    2. an `nn.Sequential` generator whose top-level child is `layer`: the children after it;
    3. otherwise the whole generator again with the layer's output replaced by r (correct for any module,
       but it pays for `h` once more; it needs the z that produced r, passed as `f(r, z)`).
    The split is checked once against `G(z)` on a probe batch, so a wrong `forward_from` fails loudly.
    """

    def __init__(self, generator: nn.Module, layer: str, z_dim: int | None = None, check: bool = True) -> None:
        self.generator = generator
        self.layer = layer
        self.module = resolve_layer(generator, layer)
        self.z_dim = z_dim_of(generator, z_dim)
        self._tail = self._sequential_tail(generator, layer)
        if hasattr(generator, "forward_from"):
            self.strategy = "forward_from"
        elif self._tail is not None:
            self.strategy = "sequential"
        else:
            self.strategy = "replay"
        if check:
            self._check()

    @staticmethod
    def _sequential_tail(generator: nn.Module, layer: str) -> nn.Sequential | None:
        if not isinstance(generator, nn.Sequential):
            return None
        names = [name for name, _ in generator.named_children()]
        if layer not in names:
            return None
        return nn.Sequential(*list(generator.children())[names.index(layer) + 1 :])

    def h(self, z: torch.Tensor) -> torch.Tensor:
        """The featuremap (B, U, h, w) at `layer`; the rest of the generator does not run."""
        with Trace(self.generator, self.layer, stop=True) as tr:
            self.generator(z)
        r = tr.output
        if not isinstance(r, torch.Tensor) or r.ndim != 4:
            shape = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ValueError(f"layer '{self.layer}' must output a featuremap (B, units, h, w); got {shape}")
        if r.shape[1] == 0:
            raise ValueError(f"layer '{self.layer}' has no units (its featuremap has 0 channels)")
        return r

    def f(self, r: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The image from a (possibly edited) featuremap r."""
        if self.strategy == "forward_from":
            return self.generator.forward_from(self.layer, r)
        if self.strategy == "sequential":
            return self._tail(r)
        if z is None:
            raise ValueError(
                f"{type(self.generator).__name__} has no forward_from(layer, r) and is not an nn.Sequential, "
                "so f(r) re-runs the generator: pass the z that produced r"
            )
        with Trace(self.generator, self.layer, edit_output=lambda out: r, retain_output=False):
            return self.generator(z)

    def edited(self, z: torch.Tensor, edit: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """G(z) with the featuremap edited: f(edit(h(z)))."""
        return self.f(edit(self.h(z)), z)

    @torch.no_grad()
    def _check(self) -> None:
        z = latents([0, 1], self.z_dim, seed=12_345).to(device_of(self.generator))
        expected = self.generator(z)
        got = self.f(self.h(z), z)
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4, rtol=1e-3):
            raise ValueError(
                f"f(h(z)) differs from G(z) for layer '{self.layer}' (strategy {self.strategy}); "
                f"check {type(self.generator).__name__}.forward_from"
            )


# ----------------------------------------------------------------------------------------------- k_c


@torch.no_grad()
def concept_means(
    split: LayerSplit,
    segmenter: Segmenter,
    concept: str,
    n: int = 500,
    seed: int = 0,
    batch_size: int = 50,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """k_c (§S-6.4): per unit, Σ w·r / Σ w over n samples and all locations, w = the fraction of each
    featuremap location covered by c. Also returns `presence`, the mean fraction of the images' pixels
    labelled c. Raises if c never occurs in the sample."""
    c = segmenter.concept_index(concept)
    dev = device_of(split.generator)
    weighted, total, pixels, count = None, 0.0, 0.0, 0
    chunks = torch.arange(n).split(batch_size)
    for idx in tqdm(chunks, desc=f"k[{concept}]", disable=not progress, leave=False):
        z = latents(idx, split.z_dim, seed).to(dev)
        r = split.h(z).float()
        mask = segmenter.labels(split.f(r, z)) == c  # (B, H, W)
        w = coverage(mask, tuple(r.shape[-2:]))  # (B, h, w)
        part = torch.einsum("buhw,bhw->u", r.double(), w.double())
        weighted = part if weighted is None else weighted + part
        total += float(w.double().sum())
        pixels += float(mask.double().mean((1, 2)).sum())
        count += len(idx)
    if total == 0:
        raise ValueError(
            f"concept '{concept}' does not occur in {n} samples of the generator (seed {seed}); "
            "choose another concept or a larger sample"
        )
    return {"k": (weighted / total).float().cpu(), "presence": torch.tensor(pixels / count)}
