"""The transplant probe: does a generator represent an object locally at a layer?

Copy the whole featuremap of a square of `region` × `region` locations where a real concept is drawn (the
donor: the square of one sample that the concept covers most) into a square of another sample where the concept
is absent (the recipient), run the rest of the generator, and measure how much of the recipient square's image
window the segmenter now labels as the concept, against how much of the donor's window it covered:

    reproduced = E[share of c in the recipient window after the transplant] / E[share of c in the donor window]

A generator whose layer holds objects locally reproduces most of the donor's object (ratio near 1); one that
paints objects from context or from texture spread over many locations reproduces little. Unlike an insertion
of k_c into a few units, nothing here depends on a choice of units or constants: it is the cheapest test of a
candidate world and GAN after an hour of training. Results are also split by the recipient window's majority
concept (its background), since later layers may draw an object on grass and not in the sky.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

from lightning_gd.causal.interventions import coverage
from lightning_gd.errors import InvalidValue
from lightning_gd.latents import latent_batches, rng
from lightning_gd.models.generators import device_of
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit

RECIPIENT_STREAM = 1_000_003  # recipients' z come from seed + this: a stream apart from the donors'


@dataclass
class TransplantResult:
    """The probe's answer for one concept and square size. Shares are fractions of a window's pixels."""

    concept: str
    layer: str
    region: int  # side of the square in featuremap locations
    window_px: int  # side of the square's image window in pixels
    samples: int  # donor/recipient pairs drawn
    pairs: int  # pairs with a donor square at least `min_donor` covered and a concept-free recipient square
    donor_share: float
    kept_share: float  # the concept's share of the recipient window after the transplant
    before_share: float  # … and before it (0 by construction; kept as a check)
    by_background: dict[str, dict[str, float]] = field(default_factory=dict)  # background → pairs, kept_share

    @property
    def reproduced(self) -> float:
        return self.kept_share / self.donor_share if self.donor_share > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "reproduced": self.reproduced}


def square_coverage(is_c: torch.Tensor, size: tuple[int, int], region: int) -> torch.Tensor:
    """(B, H, W) concept mask → (B, h−region+1, w−region+1): the fraction of each region × region square of
    featuremap locations (its image window) that the concept covers."""
    return F.avg_pool2d(coverage(is_c, size)[:, None], region, stride=1)[:, 0]


def _pick(cover: torch.Tensor, min_donor: float, indices: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, the donor square (the most covered one; -1 if under min_donor) and a random concept-free
    recipient square (-1 if none), as flat indices into the (h−region+1)·(w−region+1) squares.
    `cover` is (2, B, hs, ws): donors' coverage first, recipients' second. The random choice of pair i depends on
    (seed, i) only, so batch sizes do not change the answer."""
    donor_cover, recipient_cover = cover[0].flatten(1), cover[1].flatten(1)
    best, donor = donor_cover.max(1)
    donor[best < min_donor] = -1
    free = recipient_cover == 0  # (B, squares)
    draws = torch.stack(
        [torch.rand(free.shape[1], generator=rng(seed, int(i), "transplant_recipients")) for i in indices]
    )
    scores = draws.to(free.device) * free  # a uniform choice among the free squares
    recipient = scores.argmax(1)
    recipient[~free.any(1)] = -1
    return donor, recipient


def _batch_pairs(
    split: LayerSplit, segmenter: Segmenter, c: int, region: int, z_d, z_r, idx, seed: int, min_donor: float
) -> tuple[int, list[tuple[float, float, float, int]]]:
    """One batch of donor/recipient pairs: the window side in pixels, and per counted pair the concept's share
    of the donor window, of the recipient window before and after the transplant, and the recipient window's
    majority label."""
    r_d, r_r = split.h(z_d), split.h(z_r)
    size = tuple(r_d.shape[-2:])
    if region > min(size):
        raise InvalidValue(f"region {region} is larger than layer '{split.layer}' ({size[0]}×{size[1]})")
    lab_d, lab_r = segmenter.labels(split.f(r_d, z_d)), segmenter.labels(split.f(r_r, z_r))
    scale = lab_d.shape[-1] // size[1]
    window = region * scale
    cover = torch.stack([square_coverage(lab == c, size, region) for lab in (lab_d, lab_r)])
    donor, recipient = _pick(cover.cpu(), min_donor, idx, seed)
    keep = torch.nonzero((donor >= 0) & (recipient >= 0))[:, 0].tolist()
    if not keep:
        return window, []
    ws = size[1] - region + 1
    cells = [(int(donor[i]) // ws, int(donor[i]) % ws, int(recipient[i]) // ws, int(recipient[i]) % ws) for i in keep]
    edited = r_r[keep].clone()
    for row, (i, (dy, dx, ry, rx)) in enumerate(zip(keep, cells)):  # donor y, x; recipient y, x
        edited[row, :, ry : ry + region, rx : rx + region] = r_d[i, :, dy : dy + region, dx : dx + region]
    after = segmenter.labels(split.f(edited, z_r[keep]))
    out = []
    for row, (i, cell) in enumerate(zip(keep, cells)):
        dy, dx, ry, rx = (v * scale for v in cell)
        win_d = lab_d[i, dy : dy + window, dx : dx + window]
        win_r = lab_r[i, ry : ry + window, rx : rx + window]
        kept = after[row, ry : ry + window, rx : rx + window]
        shares = [float((w == c).float().mean()) for w in (win_d, win_r, kept)]
        out.append((*shares, int(torch.mode(win_r.flatten()).values)))
    return window, out


@torch.no_grad()
def transplant(
    split: LayerSplit,
    segmenter: Segmenter,
    concept: str,
    n: int = 200,
    region: int = 1,
    seed: int = 0,
    batch_size: int = 50,
    min_donor: float = 0.5,
    progress: bool = True,
) -> TransplantResult:
    """Run the probe over n donor/recipient pairs (donor i: sample i of `seed`; recipient i: sample i of
    seed + RECIPIENT_STREAM). A pair counts when its donor square is at least `min_donor` covered by the
    concept and the recipient has a square where the concept is absent."""
    c = segmenter.concept_index(concept)
    dev = device_of(split.generator)
    rows: list[tuple[float, float, float, int]] = []
    window = 0
    donors = latent_batches(n, split.z_dim, seed, batch_size, dev, f"transplant {concept}", progress, sharded=False)
    recipients = latent_batches(n, split.z_dim, seed + RECIPIENT_STREAM, batch_size, dev, sharded=False)
    for (idx, z_d), (_, z_r) in zip(donors, recipients):
        window, batch = _batch_pairs(split, segmenter, c, region, z_d, z_r, idx, seed, min_donor)
        rows += batch
    by_bg: dict[int, list[float]] = {}
    for _, _, kept, bg in rows:
        by_bg.setdefault(bg, []).append(kept)
    mean = [sum(col) / max(len(rows), 1) for col in list(zip(*rows))[:3]] if rows else [0.0, 0.0, 0.0]
    return TransplantResult(
        concept=concept,
        layer=split.layer,
        region=region,
        window_px=window,
        samples=n,
        pairs=len(rows),
        donor_share=mean[0],
        before_share=mean[1],
        kept_share=mean[2],
        by_background={
            segmenter.concepts[k]: {"pairs": len(v), "kept_share": sum(v) / len(v)} for k, v in sorted(by_bg.items())
        },
    )
