"""The image convention (float (B, 3, H, W) in [-1, 1]): what `check_images` rejects, and the uint8 round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_gd.models.images import check_images, to_float_images, to_uint8


def valid(b: int = 2, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(b, 3, h, w) * 2 - 1


def test_accepts_valid_images_and_returns_them_unchanged():
    x = valid()
    assert check_images(x) is x
    assert check_images(x, size=(8, 8)) is x
    # exact ends, a float64 batch, the tiny overshoot a tanh generator can produce, an empty batch
    check_images(torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    check_images(valid().double())
    check_images(torch.full((1, 3, 2, 2), 1.0005))
    check_images(torch.empty(0, 3, 4, 4))


@pytest.mark.parametrize(
    "x, pattern",
    [
        (torch.zeros(3, 8, 8), r"shape \(B, 3, H, W\), got \(3, 8, 8\)"),  # one image without a batch dim
        (torch.zeros(2, 1, 3, 8, 8), r"shape \(B, 3, H, W\), got \(2, 1, 3, 8, 8\)"),
        (torch.zeros(2, 1, 8, 8), r"shape \(B, 3, H, W\), got \(2, 1, 8, 8\)"),  # greyscale
        (torch.zeros(2, 4, 8, 8), r"shape \(B, 3, H, W\), got \(2, 4, 8, 8\)"),  # RGBA
        (torch.zeros(2, 8, 8, 3), r"shape \(B, 3, H, W\), got \(2, 8, 8, 3\)"),  # channels last
    ],
)
def test_rejects_wrong_shapes(x, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_images(x)


def test_rejects_wrong_size():
    with pytest.raises(ValueError, match="must be 64×64, got 8×16"):
        check_images(valid(h=8, w=16), size=(64, 64))


def test_rejects_values_outside_minus_one_one():
    x = valid() * 127.5 + 127.5  # [0, 255] floats, the classic mistake
    with pytest.raises(ValueError, match=r"\[-1, 1\], got values in \[\d.*, 2\d\d.*\]"):
        check_images(x)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_images(torch.full((1, 3, 2, 2), -1.01))  # below -1 by more than float slack
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_images(torch.full((1, 3, 2, 2), 1.01))


def test_rejects_nan_even_among_valid_values():
    x = valid()
    x[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_images(x)
    with pytest.raises(ValueError, match="NaN"):
        check_images(torch.full((1, 3, 2, 2), float("nan")))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_rejects_integer_images_and_names_the_fix(dtype):
    x = torch.zeros(2, 3, 8, 8, dtype=dtype)
    with pytest.raises(ValueError, match=rf"floating point.*{dtype}.*to_float_images"):
        check_images(x)


def test_error_messages_use_the_given_name_and_non_tensors_are_type_errors():
    with pytest.raises(ValueError, match="^generated samples must"):
        check_images(torch.zeros(2, 1, 8, 8), name="generated samples")
    with pytest.raises(TypeError, match="torch.Tensor, got ndarray"):
        check_images(np.zeros((2, 3, 8, 8), np.float32))


def test_uint8_round_trip_is_exact():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    f = to_float_images(u)
    assert f.dtype == torch.float32
    assert f.min() == -1 and f.max() == 1
    check_images(f)
    assert torch.equal(to_uint8(f), u)


def test_float_round_trip_is_within_half_a_level():
    x = valid(4, 16, 16)
    u = to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == x.shape
    back = to_float_images(u)
    assert (back - x).abs().max() <= 0.5 / 127.5 + 1e-6


def test_to_uint8_maps_the_ends_and_clamps_overshoot():
    x = torch.tensor([-1.2, -1.0, 1.0, 1.3]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert to_uint8(x)[0, 0, 0].tolist() == [0, 0, 255, 255]


def test_segmenters_clamp_an_unclamped_generators_overshoot_only():
    from lightning_gd.models.images import segmenter_input

    x = torch.tensor([-1.3, -1.0, 0.2, 1.0, 1.2]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert segmenter_input(x)[0, 0, 0].tolist() == pytest.approx([-1.0, -1.0, 0.2, 1.0, 1.0])
    inside = torch.zeros(1, 3, 2, 2)
    assert segmenter_input(inside) is inside
    with pytest.raises(ValueError, match=r"got values in \[0, 255\] \(an unclamped generator may overshoot"):
        segmenter_input(torch.tensor([0.0, 255.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
