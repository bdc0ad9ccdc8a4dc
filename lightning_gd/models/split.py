"""A generator split at a probed layer, `G = f ∘ h`: `r = h(z)` is the featuremap (B, U, h, w), `f(r)` the image.

`h` runs once per batch and `f` as often as needed, which is what makes interventions cheap: the causal
search, the ACE evaluation and the painting page run only `f` (and the segmenter) on edited featuremaps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.hooks import Trace, resolve_layer


def check_featuremap(output, layer: str) -> torch.Tensor:
    """The layer's output as a float featuremap (B, U, h, w); a clear error for anything else or NaN/Inf."""
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        hint = " (a tuple: name the featuremap's element)" if isinstance(output, (tuple, list)) else ""
        raise InvalidValue(f"layer '{layer}' must output a featuremap (B, units, h, w); got {shape}{hint}")
    if output.shape[1] == 0:
        raise InvalidValue(f"layer '{layer}' has no units (its featuremap has 0 channels)")
    if not torch.isfinite(output).all():
        raise InvalidValue(f"layer '{layer}' produced NaN or Inf activations")
    return output.float()


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
        if hasattr(generator, "forward_from") and getattr(generator, "can_forward_from", lambda _: True)(layer):
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
        check_featuremap(tr.output, self.layer)
        return tr.output

    def f(self, r: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The image from a (possibly edited) featuremap r."""
        if self.strategy == "forward_from":
            return self.generator.forward_from(self.layer, r)
        if self.strategy == "sequential":
            return self._tail(r)
        if z is None:
            raise InvalidValue(
                f"{type(self.generator).__name__} has no forward_from(layer, r) and is not an nn.Sequential, "
                "so f(r) re-runs the generator: pass the z that produced r"
            )
        with Trace(self.generator, self.layer, edit_output=lambda out, layer: r, retain_output=False):
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
            raise InvalidValue(
                f"f(h(z)) differs from G(z) for layer '{self.layer}' (strategy {self.strategy}); "
                f"check {type(self.generator).__name__}.forward_from"
            )
