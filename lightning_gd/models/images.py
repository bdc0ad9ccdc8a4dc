"""Checks and conversions for image batches: the one place that knows the project's image convention,
float (B, 3, H, W) in [-1, 1]."""

from __future__ import annotations

import torch

from lightning_gd.errors import InvalidValue, WrongType

# Generators overshoot tanh ranges a little through interpolation and float error; more is a bug.
_RANGE_SLACK = 1e-3
# Published generators are unclamped (ProGAN, StyleGAN2 reach about ±1.3): segmenters clamp up to this overshoot;
# beyond it the images are almost surely in another convention ([0, 255]), which is an error.
OVERSHOOT = 0.5


def check_images(
    x: torch.Tensor, name: str = "images", size: tuple[int, int] | None = None, slack: float = _RANGE_SLACK
) -> torch.Tensor:
    """Raise a ValueError that says what is wrong unless `x` is float (B, 3, H, W) in [-1, 1] (± `slack`)."""
    _checked_range(x, name, size, slack)
    return x


def _checked_range(
    x: torch.Tensor, name: str = "images", size: tuple[int, int] | None = None, slack: float = _RANGE_SLACK
) -> tuple[float, float]:
    """`check_images`' checks; returns the images' (min, max) ((0, 0) when empty)."""
    if not isinstance(x, torch.Tensor):
        raise WrongType(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise InvalidValue(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if size is not None and tuple(x.shape[2:]) != tuple(size):
        raise InvalidValue(f"{name} must be {size[0]}×{size[1]}, got {x.shape[2]}×{x.shape[3]}")
    if not x.is_floating_point():
        raise InvalidValue(
            f"{name} must be floating point in [-1, 1], got dtype {x.dtype} (convert with to_float_images)"
        )
    if x.numel():
        lo, hi = x.min().item(), x.max().item()
        if lo != lo or hi != hi:
            raise InvalidValue(f"{name} contain NaN")
        if lo < -1 - slack or hi > 1 + slack:
            hint = (
                " (an unclamped generator may overshoot to ±1.5; for another range wrap it with "
                "zoo.generator(net, output_range=(low, high)))"
                if slack >= OVERSHOOT
                else ""
            )
            raise InvalidValue(f"{name} must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")
        return lo, hi
    return 0.0, 0.0


def segmenter_input(x: torch.Tensor) -> torch.Tensor:
    """Generated images as a segmenter sees them: checked, with an unclamped generator's overshoot (up to
    `OVERSHOOT`) clamped to [-1, 1]."""
    lo, hi = _checked_range(x, slack=OVERSHOOT)
    return x if -1.0 <= lo and hi <= 1.0 else x.clamp(-1.0, 1.0)  # in range: untouched (every gradient kept)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) in [-1, 1] → uint8 (B, 3, H, W), rounding as image writers do."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float in [-1, 1]."""
    return x.float().div(127.5).sub(1.0)
