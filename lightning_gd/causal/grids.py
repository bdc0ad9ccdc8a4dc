"""The images a causal test's grids show (paper Figs. 1c, 1d, 4), made once by the test on a few held-out samples
and stored beside `ace.json` (`lightning_gd.results.images.AceImages`), so that its page is drawn again without
the networks."""

from __future__ import annotations

import torch

from lightning_gd.causal.ace import window_mask
from lightning_gd.causal.interventions import intervene, location_mask, unit_indicator
from lightning_gd.models.images import to_uint8
from lightning_gd.results.images import AceImages


@torch.no_grad()
def grid_images(module, z: torch.Tensor, locations: torch.Tensor) -> AceImages:
    """On latents `z` (B, Z): the originals, the α top-n and the IoU top-n ablated everywhere, the α top-n
    inserted with k_c in the window of each sample's location `locations` (B,), and each one's labels."""
    split, seg, n = module.split, module.segmenter, module.top_n
    r = split.h(z)  # (B, U, h, w)
    everywhere = torch.ones(1, 1, *r.shape[-2:], device=r.device)

    def ablated(order: torch.Tensor) -> torch.Tensor:
        return split.f(intervene(r, unit_indicator(order[:n], r.shape[1], r.device), everywhere), z)

    locations = locations.to(r.device)
    alpha = unit_indicator(module.ranking()[:n], r.shape[1], r.device)
    x = split.f(r, z)
    images = {
        "original": x,
        "ablated_alpha": ablated(module.ranking()),
        "ablated_iou": ablated(module.iou_ranking()),
        "inserted": split.f(intervene(r, alpha, location_mask(locations, tuple(r.shape[-2:])), module.k_c), z),
    }
    window = window_mask(locations, tuple(r.shape[-2:]), tuple(x.shape[-2:])).cpu()  # (B, H, W)
    return AceImages(
        {name: to_uint8(im).cpu() for name, im in images.items()},
        {name: seg.labels(im).cpu().long() for name, im in images.items()},
        window.bool(),
        list(seg.concepts),
        module.hparams.concept,
        n,
        list(seg.colours),
    )
