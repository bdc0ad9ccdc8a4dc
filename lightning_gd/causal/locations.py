"""Training locations of the causal search (§S-6.4), fixed per sample index so they do not depend on batch
size, epoch or rank: each sample contributes an ablation term where c covers most of a featuremap location (if
c is present) and an insertion term at the best of `candidates` random c-free locations where setting every
unit to k_c makes c appear (if any does). Each term is one that the intervention can change there."""

from __future__ import annotations

import torch

from lightning_gd.causal.interventions import at_locations, coverage, intervene, location_mask
from lightning_gd.latents import rng
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit


@torch.no_grad()
def training_locations(
    split: LayerSplit,
    segmenter: Segmenter,
    concept_index: int,
    k_c: torch.Tensor,
    indices: torch.Tensor,
    z: torch.Tensor,
    r: torch.Tensor,
    candidates: int = 4,
    location_seed: int = 0,
) -> torch.Tensor:
    """(B, 2) flat featuremap locations per sample: where to ablate, where to insert (−1: none)."""
    c, m, size = concept_index, candidates, tuple(r.shape[-2:])
    present = coverage(segmenter.labels(split.f(r, z)) == c, size).flatten(1)  # (B, hw)
    best, where = present.max(1)
    ablation_at = torch.where(best > 0, where, torch.full_like(where, -1))
    choices = candidate_locations(present == 0, indices, m, location_seed).to(r.device)  # (B, m)
    valid = choices >= 0
    flat = choices.clamp(min=0).flatten()  # (B·m,)
    everything = torch.ones(r.shape[1], device=r.device)
    edited = intervene(r.repeat_interleave(m, 0), everything, location_mask(flat, size), k_c)
    after = coverage(segmenter.labels(split.f(edited, z.repeat_interleave(m, 0))) == c, size)
    gained = at_locations(after, flat).view(-1, m) * valid  # (B, m)
    top, arg = gained.max(1)
    insertion_at = torch.where(top > 0, choices.gather(1, arg[:, None])[:, 0], torch.full_like(top, -1).long())
    return torch.stack([ablation_at, insertion_at], 1)


def candidate_locations(free: torch.Tensor, indices: torch.Tensor, m: int, location_seed: int) -> torch.Tensor:
    """(B, m) random locations among the `free` ones (B, hw) of each sample, drawn from a generator seeded by the
    sample index (repeated when fewer than m are free; −1 when none is)."""
    choices = []
    for b, i in enumerate(indices.tolist()):
        weights = free[b].float().cpu()
        if weights.sum() == 0:
            choices.append(torch.full((m,), -1, dtype=torch.long))
            continue
        gen = rng(location_seed, i, "training_locations")
        picks = torch.multinomial(weights, min(m, int(weights.sum())), replacement=False, generator=gen)
        choices.append(torch.cat([picks, picks[:1].repeat(m - len(picks))]))
    return torch.stack(choices)
