"""Generators: any `nn.Module` mapping z (B, z_dim) to images (B, 3, H, W) in [-1, 1].

The contract lightning_gd relies on:
- `z_dim` (attribute, or given to the functions that sample): z is standard normal (B, z_dim), seeded per
  sample index (`lightning_gd.latents`), so a sample is the same whatever the batch size, the number of
  batches or the DDP rank that draws it;
- images in [-1, 1] (checked by the segmenter; up to 1e-3 of slack);
- optionally `probe_layers`: the names of the layers worth dissecting, the first being the default layer of every
  analysis that is given none (the zoo's loaders set it: the ProGAN's layer4, a StyleGAN2's middle layers);
- optionally `forward_from(layer, r)`: the rest of the network after `layer` applied to its output r.
  Without it, an intervention re-runs the whole generator with the layer's output replaced (correct for any
  network, but it pays for the layers before `layer` again: about twice the cost for a middle layer);
  an `nn.Sequential` whose child is the layer needs none.

`GeneratorWrapper` adapts a network that wants another z (shape, distribution) or gives another range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn

from lightning_gd.errors import InvalidValue


def z_dim_of(generator: nn.Module, z_dim: int | None = None) -> int:
    """The latent size: given, or the generator's `z_dim` attribute."""
    z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
    if z_dim is None:
        raise InvalidValue(
            f"cannot tell the latent size of {type(generator).__name__}: give z_dim=… or wrap it with "
            "lightning_gd.zoo.generator(net, z_dim=…) (see the README's 'your own generator and segmenter')"
        )
    return int(z_dim)


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device that exists on this machine, or a ValueError that says what to use instead."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise InvalidValue(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise InvalidValue(f"--device {device}: no CUDA GPU is available (torch {torch.__version__}, {build}); use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidValue(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidValue(f"--device {device}: MPS is not available on this machine; use cpu")
    return dev


def device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards every submodule gets back its own mode (even on error), so a frozen
    eval-mode block inside a training generator stays in eval mode."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def probe_layers(generator: nn.Module) -> tuple[str, ...]:
    """The layers a generator declares worth probing (`probe_layers`, on it or on the network a wrapper holds)."""
    module = generator
    while module is not None:
        declared = getattr(module, "probe_layers", None)
        if declared:
            return tuple(declared)
        inner = getattr(module, "wraps", None)
        module = getattr(module, inner, None) if isinstance(inner, str) else None
    return ()


def default_layer(generator: nn.Module) -> str:
    """The layer an analysis probes when it is given none: the first of the generator's `probe_layers`."""
    declared = probe_layers(generator)
    if declared:
        return declared[0]
    from lightning_gd.models.hooks import layer_names

    names = layer_names(generator)
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    raise InvalidValue(
        f"{type(generator).__name__} declares no probe layers, so there is no default layer: name one (--layer / "
        f"--layers; in Python layer=…), or declare them with zoo.generator(net, probe_layers=[...]); its layers: "
        f"{shown or 'none'}"
    )


Sampler = Literal["normal", "uniform"] | Callable[[torch.Tensor], torch.Tensor]


class GeneratorWrapper(nn.Module):
    """Any image generator as a lightning_gd generator.

    lightning_gd draws z as standard normal (B, z_dim); the wrapper turns it into what `network` expects and
    maps the images into [-1, 1]. Layer names are the network's own (`layer4`, not `network.layer4`).

    Args:
        network: the generator network.
        z_dim: the number of latent values per sample.
        z_shape: the shape of one sample's z as the network takes it, e.g. (z_dim, 1, 1) for a DCGAN
            (default: (z_dim,)).
        sampler: `normal` (z as drawn), `uniform` (each value mapped to U(−1, 1) through the normal CDF), or a
            function of the standard-normal z (B, z_dim) → the network's z (before reshaping to `z_shape`).
        output_range: the network's image range (lo, hi), mapped linearly to [-1, 1] (e.g. (0, 1)).
        probe_layers: the layers worth probing, the first the default layer of the analyses (default: those the
            network declares, if any).
    """

    wraps = "network"  # hooks look layers up inside `network`

    def __init__(
        self,
        network: nn.Module,
        z_dim: int,
        z_shape: tuple[int, ...] | None = None,
        sampler: Sampler = "normal",
        output_range: tuple[float, float] = (-1.0, 1.0),
        probe_layers: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        if sampler not in ("normal", "uniform") and not callable(sampler):
            raise InvalidValue(f"sampler must be 'normal', 'uniform' or a function of z, got {sampler!r}")
        z_shape = tuple(z_shape or (z_dim,))
        if int(torch.tensor(z_shape).prod()) != z_dim:
            raise InvalidValue(f"z_shape {z_shape} does not hold z_dim = {z_dim} values")
        lo, hi = (float(v) for v in output_range)
        if not hi > lo:
            raise InvalidValue(f"output_range must be (low, high) with high > low, got {output_range}")
        self.network, self.z_dim, self.z_shape, self.sampler = network, z_dim, z_shape, sampler
        self.output_range = (lo, hi)
        if probe_layers is not None:
            from lightning_gd.models.hooks import resolve_layer

            if isinstance(probe_layers, str) or not probe_layers:
                raise InvalidValue(f"probe_layers must be a non-empty list of layer names, got {probe_layers!r}")
            for name in probe_layers:
                resolve_layer(network, name)  # an unknown name fails here, listing the valid ones
            self.probe_layers = tuple(probe_layers)

    def fingerprint_settings(self) -> dict:
        sampler = self.sampler if isinstance(self.sampler, str) else getattr(self.sampler, "__qualname__", "callable")
        return {"z_dim": self.z_dim, "z_shape": self.z_shape, "sampler": sampler, "output_range": self.output_range}

    def network_z(self, z: torch.Tensor) -> torch.Tensor:
        """Standard-normal z (B, z_dim) → the network's input (B, *z_shape)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise InvalidValue(f"expected z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        if self.sampler == "uniform":
            z = torch.special.ndtr(z) * 2 - 1
        elif callable(self.sampler):
            z = self.sampler(z)
        return z.reshape(z.shape[0], *self.z_shape)

    def to_unit_range(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.output_range
        return x if (lo, hi) == (-1.0, 1.0) else (x - lo) * (2.0 / (hi - lo)) - 1.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_unit_range(self.network(self.network_z(z)))

    def can_forward_from(self, layer: str) -> bool:
        inner = self.network
        names = [name for name, _ in inner.named_children()]
        return hasattr(inner, "forward_from") or (isinstance(inner, nn.Sequential) and layer in names)

    def forward_from(self, layer: str, r: torch.Tensor) -> torch.Tensor:
        inner = self.network
        if hasattr(inner, "forward_from"):
            return self.to_unit_range(inner.forward_from(layer, r))
        names = [name for name, _ in inner.named_children()]
        if not (isinstance(inner, nn.Sequential) and layer in names):
            raise NotImplementedError(f"{type(inner).__name__} cannot run from '{layer}'")
        for child in list(inner.children())[names.index(layer) + 1 :]:
            r = child(r)
        return self.to_unit_range(r)


@contextlib.contextmanager
def quiet_measurement(*modules: nn.Module) -> Iterator[None]:
    """No gradients, eval mode (each module's mode restored, even on error), and the torch RNG left untouched:
    a measurement inside a training run changes nothing the run does."""
    cuda = [d.index for d in {device_of(m) for m in modules} if d.type == "cuda"]
    with eval_mode(*modules), torch.random.fork_rng(devices=cuda), torch.no_grad():
        yield
