"""Streaming statistics for dissection, as torchmetrics `Metric`s whose states are sums, so Lightning's
DDP reduces them exactly and any batch split gives the same answer.

- `UnitHistogram`: per-unit counts of activations in fixed log-spaced bins (mergeable, bounded memory,
  no stored activations) → quantile thresholds (`quantile`) to a small relative bin width, refined by
  linear interpolation inside the bin.
- `UnitConceptHistogram`: the same counts split by the concept under each pixel → the per-unit IQR
  threshold of the paper's Eq. 2 (argmax_t I/H against the unit's best concept).
- `TopK`: the k samples with the largest score per unit (the unit browser's top images).
- `TensorSum`: any tensor summed over batches and ranks (the ACE evaluation's counts).
- `SampleRows`: per-sample rows, each written by the rank that holds the sample (the per-image results of
  per-unit FID and context, gathered in sample order).

Concept masks arrive as *label groups*: a list of (B, H, W) long tensors, each pixel carrying at most one
concept per group (-1 = none) and group g owning concept indices `offsets[g] … offsets[g+1]-1`. One group
holds a segmenter's classes; part concepts (top/bottom halves, left/right halves) are two more groups, so
overlapping concepts never need a dense (B, C, H, W) mask.

The maths are pure functions (`bin_index`, `bin_edges`, `quantile_from_counts`, `iqr_from_counts`,
`iou_from_tallies`) with brute-force twins in the tests.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from lightning_gd.errors import InvalidValue

# Bins: exact zero, and per sign 2^E_MIN … 2^E_MAX split into PER_OCTAVE relative steps (≈ 1.1 % wide at 64).
E_MIN, E_MAX, PER_OCTAVE = -24, 24, 64


def num_bins(per_octave: int = PER_OCTAVE) -> int:
    return 2 * (E_MAX - E_MIN) * per_octave + 1


def bin_index(x: torch.Tensor, per_octave: int = PER_OCTAVE) -> torch.Tensor:
    """Bin of each value, ascending with the value: negatives below the zero bin, positives above it.

    Every bin is (lower, upper] (the zero bin [0, 0]), so `x > upper[b]` exactly when `bin_index(x) > b`: the masks
    the IQR search scores are the masks `r > threshold` that the IoU tally then applies."""
    half = (E_MAX - E_MIN) * per_octave
    mant, expo = torch.frexp(x.float().abs())  # |x| = mant · 2^expo, mant ∈ [0.5, 1)
    step = (mant - 0.5) * (2 * per_octave)  # exact: a power-of-two scaling
    on_edge = (step == step.floor()) & (x > 0)  # a positive value on a lower edge belongs to the bin below
    mag = (expo.long() - E_MIN) * per_octave + step.long() - on_edge.long()
    mag = mag.clamp_(0, half - 1)
    return torch.where(x > 0, half + 1 + mag, torch.where(x < 0, half - 1 - mag, torch.full_like(mag, half)))


def bin_edges(per_octave: int = PER_OCTAVE, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) value edges of every bin, ascending; the zero bin is [0, 0]."""
    half = (E_MAX - E_MIN) * per_octave
    j = torch.arange(half, dtype=dtype)
    expo, frac = E_MIN + torch.div(j, per_octave, rounding_mode="floor"), torch.remainder(j, per_octave)
    lo = (0.5 + frac / (2 * per_octave)) * torch.pow(2.0, expo)
    hi = (0.5 + (frac + 1) / (2 * per_octave)) * torch.pow(2.0, expo)
    zero = torch.zeros(1, dtype=dtype)
    lower = torch.cat([-hi.flip(0), zero, lo])
    upper = torch.cat([-lo.flip(0), zero, hi])
    return lower, upper


def quantile_from_counts(counts: torch.Tensor, q: float | torch.Tensor, per_octave: int = PER_OCTAVE) -> torch.Tensor:
    """Per-row q-quantile (U,) of histograms (U, bins), interpolating linearly inside the bin; q is one level or
    one per row (U,)."""
    q = torch.as_tensor(q, dtype=torch.float64, device=counts.device)
    if bool(((q < 0) | (q > 1)).any()):
        raise InvalidValue(f"quantile level must be in [0, 1], got {q.tolist()}")
    counts = counts.double()
    cum = counts.cumsum(1)  # (U, bins)
    total = cum[:, -1:]
    if (total == 0).any():
        raise ValueError("quantile of a unit with no observations; was the histogram updated?")
    target = (q[:, None] if q.ndim else q) * total
    b = torch.searchsorted(cum, target).clamp_(max=counts.shape[1] - 1)  # first bin with cum ≥ target
    before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
    inside = counts.gather(1, b).clamp(min=1)
    lower, upper = (e.to(counts.device)[b] for e in bin_edges(per_octave))
    t = ((target - before) / inside).clamp(0, 1)
    return (lower + t * (upper - lower)).squeeze(1)


SIGNIFICANT_G = 10.83  # χ²(1 dof) at p = 0.001: the G-test value 2·N·I above which a mask tells about a concept


def iqr_from_counts(
    joint: torch.Tensor, per_octave: int = PER_OCTAVE, samples_per_count: float = 1.0, q: float = 0.99
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (unit, concept) threshold maximising the information quality ratio I/H (paper Eq. 2).

    joint: (U, C, bins) counts of pixels with concept c whose activation of unit u falls in each bin,
    plus a last concept row C-1 that must be "all pixels" (so marginals are exact for overlapping concepts).
    Candidate thresholds are the upper edges of the bins that hold values. The plug-in I of a finite sample is
    positive even for a unit that knows nothing of the concept, and its maximum over hundreds of thresholds
    lands anywhere (a noise unit's mask could cover nearly the whole image and so overlap any large concept).
    A threshold is therefore a candidate only when its I is significant: G = 2·N·I ≥ `SIGNIFICANT_G`, with
    N = pixels × `samples_per_count` the effective sample size (pixels upsampled from one featuremap location
    are not independent: pass locations per pixel). Where no threshold is significant the ratio is 0 and the
    threshold the unit's q-quantile, as in the `quantile` mode.
    Returns (thresholds (U, C-1), ratio (U, C-1)).
    """
    joint = joint.double()
    total = joint[:, -1:, :]  # (U, 1, bins): all pixels
    per_c = joint[:, :-1, :]  # (U, C, bins)
    n = total.sum(-1, keepdim=True)  # (U, 1, 1)
    above_c = per_c.flip(-1).cumsum(-1).flip(-1)  # count of concept pixels in bins ≥ b
    above = total.flip(-1).cumsum(-1).flip(-1)
    # threshold "above upper edge of bin b" ⇒ mask = bins > b: shift the suffix sums by one bin.
    a_c = torch.cat([above_c[..., 1:], torch.zeros_like(above_c[..., :1])], -1)  # |mask ∧ c|
    a = torch.cat([above[..., 1:], torch.zeros_like(above[..., :1])], -1)  # |mask|
    c_tot = per_c.sum(-1, keepdim=True)  # |c|
    p11, p10, p01 = a_c / n, (a - a_c) / n, (c_tot - a_c) / n
    p00 = (1 - p11 - p10 - p01).clamp(min=0)
    pm, pc = p11 + p10, p11 + p01

    def plogp(p):
        return torch.where(p > 0, p * p.clamp(min=1e-300).log(), torch.zeros_like(p))

    h_joint = -(plogp(p11) + plogp(p10) + plogp(p01) + plogp(p00))
    mi = -(plogp(pm) + plogp(1 - pm) + plogp(pc) + plogp(1 - pc)) - h_joint  # I = H(M) + H(C) − H(M, C)
    ratio = torch.where(h_joint > 0, mi / h_joint.clamp(min=1e-300), torch.zeros_like(mi))
    # only the upper edges of bins that hold values are candidates: an empty bin's mask repeats the one of the
    # nearest full bin below it, and below the lowest full bin the mask is every pixel (a dead unit would get it)
    significant = 2 * n * samples_per_count * mi >= SIGNIFICANT_G
    ratio = ratio.masked_fill((total == 0) | ~significant, -1.0)
    best = ratio.argmax(-1)  # (U, C)
    _, upper = bin_edges(per_octave)
    thresholds, best_ratio = upper.to(joint.device)[best], ratio.gather(-1, best[..., None]).squeeze(-1)
    uninformative = best_ratio < 0  # (U, C): no significant threshold
    if uninformative.any():
        fallback = quantile_from_counts(total[:, 0], q, per_octave)  # (U,)
        thresholds = torch.where(uninformative, fallback[:, None].to(thresholds), thresholds)
    return thresholds, best_ratio.clamp(min=0)


def iou_from_tallies(inter: torch.Tensor, unit_area: torch.Tensor, concept_area: torch.Tensor) -> torch.Tensor:
    """IoU (U, C) = I / (|unit mask| + |concept| − I), 0 where both are empty."""
    union = unit_area.double()[:, None] + concept_area.double()[None, :] - inter.double()
    return torch.where(union > 0, inter.double() / union.clamp(min=1), torch.zeros_like(union))


def _flat_units(acts: torch.Tensor) -> torch.Tensor:
    """(B, U, H, W) → (U, B·H·W)."""
    return acts.transpose(0, 1).reshape(acts.shape[1], -1)


class UnitHistogram(Metric):
    """Per-unit activation histogram in fixed log-spaced bins; `quantile(q)` gives thresholds (U,)."""

    full_state_update = False

    def __init__(self, num_units: int, per_octave: int = PER_OCTAVE, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_units, self.per_octave = num_units, per_octave
        self.add_state("counts", torch.zeros(num_units, num_bins(per_octave), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, acts: torch.Tensor) -> None:
        """acts: (B, U, H, W) activations, already at the resolution the quantile is taken at."""
        if acts.shape[1] != self.num_units:
            raise ValueError(f"expected {self.num_units} units, got featuremap {tuple(acts.shape)}")
        nb = self.counts.shape[1]
        idx = bin_index(_flat_units(acts), self.per_octave)  # (U, P)
        idx += torch.arange(self.num_units, device=idx.device)[:, None] * nb
        self.counts += torch.bincount(idx.flatten(), minlength=self.num_units * nb).view(self.num_units, nb)

    def compute(self) -> torch.Tensor:
        return self.counts

    def quantile(self, q: float | torch.Tensor) -> torch.Tensor:
        """Per-unit q-quantile (U,) at one level or one per unit (U,); under DDP the counts of all ranks are summed
        first."""
        return quantile_from_counts(self.compute(), q, self.per_octave).float()


# Counts are summed and IQR ratios computed a block of units at a time, so that besides the state only one block's
# keys or float64 temporaries are alive: `IQR_BYTES_PER_CELL` is the peak of `iqr_from_counts` per count it reads
# (measured: 114-126 bytes for blocks of 1-4 units of 1,501 × 1,537 counts).
BLOCK_CELLS, BLOCK_KEYS, IQR_BYTES_PER_CELL = 2**22, 2**23, 128


def count_dtype(max_count: int | None) -> torch.dtype:
    """int32 when no count can reach 2^31 (`max_count`: the most pixels a unit can be seen at, over every rank),
    else int64."""
    return torch.int32 if max_count is not None and max_count < 2**31 else torch.long


def concept_histogram_bytes(
    num_units: int, num_concepts: int, max_count: int | None = None, per_octave: int = 16
) -> int:
    """Bytes of `UnitConceptHistogram`'s state: units × (concepts + 1) × bins counts of `count_dtype(max_count)`."""
    itemsize = torch.empty(0, dtype=count_dtype(max_count)).element_size()
    return num_units * (num_concepts + 1) * num_bins(per_octave) * itemsize


class UnitConceptHistogram(Metric):
    """Per (unit, concept) activation histograms for the IQR threshold; concepts come as label groups.

    The state is units × (concepts + 1) × bins counts (`concept_histogram_bytes`), int32 when `max_count` (the most
    pixels of one unit over the whole sample, every rank together) says they fit. Besides it, `update` adds the keys
    of `BLOCK_KEYS` pixel-concept pairs at a time, and `compute` reads blocks of at most `block_cells` counts (a
    block is one unit where a unit alone is larger). Under DDP, `compute` sums each block over the ranks in place
    of torchmetrics' gather, which would hold every rank's whole state on each rank."""

    full_state_update = False

    def __init__(
        self,
        num_units: int,
        num_concepts: int,
        per_octave: int = 16,
        max_count: int | None = None,
        block_cells: int = BLOCK_CELLS,
        **kwargs,
    ) -> None:
        super().__init__(sync_on_compute=False, **kwargs)
        self.num_units, self.num_concepts, self.per_octave = num_units, num_concepts, per_octave
        self.max_count, self.seen = max_count, 0
        self.shape = (num_units, num_concepts + 1, num_bins(per_octave))  # last row: all pixels
        self.block = max(1, block_cells // (self.shape[1] * self.shape[2]))  # units per block
        # torchmetrics keeps a copy of a state's default for `reset` (and moves it with the metric): an empty one
        # here, as `reset` makes the zeros again, rather than a second state's worth of zeros
        self.add_state("counts", torch.zeros(0, dtype=count_dtype(max_count)), dist_reduce_fx="sum")
        self.counts = torch.zeros(self.shape, dtype=count_dtype(max_count))

    def update(self, acts: torch.Tensor, groups: list[torch.Tensor], offsets: list[int]) -> None:
        U, C1, nb = self.counts.shape
        P = acts.shape[0] * acts.shape[2] * acts.shape[3]
        self.seen += P
        if self.max_count is not None and self.seen > self.max_count:
            raise ValueError(f"{self.seen} pixels per unit, more than the max_count={self.max_count} it was sized for")
        labelled = []  # per group: the labelled pixels (K,) and their concept's offset in a unit's counts (K,)
        for labels, off in zip(groups, offsets):
            lab = labels.flatten()  # (P,) concept within group, -1 = none
            keep = (lab >= 0).nonzero().squeeze(1)
            labelled.append((keep, (lab.index_select(0, keep).long() + off) * nb))  # long: no small-dtype overflow
        per_unit = P + sum(len(keep) for keep, _ in labelled)
        step = max(1, BLOCK_KEYS // max(per_unit, 1))  # units per step: the counts are added to in place
        flat = self.counts.view(-1)
        for u0 in range(0, U, step):
            idx = bin_index(_flat_units(acts[:, u0 : u0 + step]), self.per_octave)  # (b, P)
            base = torch.arange(u0, u0 + idx.shape[0], device=idx.device)[:, None] * (C1 * nb)
            keys = [(base + (C1 - 1) * nb + idx).flatten()]
            keys += [(base + con[None, :] + idx.index_select(1, keep)).flatten() for keep, con in labelled]
            keys = torch.cat(keys)
            flat.index_add_(0, keys, torch.ones(len(keys), dtype=flat.dtype, device=flat.device))

    def reset(self) -> None:
        device = self.counts.device
        super().reset()
        self.counts, self.seen = torch.zeros(self.shape, dtype=self.counts.dtype, device=device), 0

    def compute(self, samples_per_count: float = 1.0, q: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
        """(thresholds (U, C), ratio (U, C)) of `iqr_from_counts`, a block of units at a time."""
        group = self.process_group
        ranks = torch.distributed.get_world_size(group) if _distributed() else 1
        out = []
        for u0 in range(0, self.num_units, self.block):
            block = self.counts[u0 : u0 + self.block]
            if ranks > 1:  # every rank runs the same blocks in the same order
                block = block.clone()
                torch.distributed.all_reduce(block, group=group)
            out.append(iqr_from_counts(block, self.per_octave, samples_per_count, q))
        return torch.cat([t for t, _ in out]), torch.cat([r for _, r in out])


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class TensorSum(Metric):
    """A float64 sum of fixed-shape tensors, reduced across DDP ranks."""

    full_state_update = False

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor) -> None:
        self.total += value.to(self.total)

    def compute(self) -> torch.Tensor:
        return self.total


class SampleRows(Metric):
    """Per-sample rows (M, *shape) of the samples `wanted` (M,) (ascending sample indices), in sample order: each
    row is written by the rank that holds its sample and the states are summed across DDP ranks, where every other
    rank adds zeros, so every rank gets every row exactly (the per-image results of an analysis, gathered)."""

    full_state_update = False

    def __init__(self, wanted: torch.Tensor | int, shape: tuple[int, ...] = (), dtype=torch.float64) -> None:
        super().__init__()
        wanted = torch.arange(wanted) if isinstance(wanted, int) else torch.as_tensor(wanted).long()
        self.register_buffer("wanted", wanted, persistent=False)
        self.add_state("rows", torch.zeros(len(wanted), *shape, dtype=dtype), dist_reduce_fx="sum")

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """values (B, *shape) of samples `indices` (B,); samples that are not wanted are ignored."""
        indices = indices.to(self.wanted.device)
        pos = torch.searchsorted(self.wanted, indices).clamp(max=len(self.wanted) - 1)
        hit = self.wanted[pos] == indices
        self.rows[pos[hit]] = values[hit.to(values.device)].to(self.rows)

    def compute(self) -> torch.Tensor:
        return self.rows


def relative_peaks(r: torch.Tensor) -> torch.Tensor:
    """(B, U) score of each unit's peak in each image: its maximum activation over the featuremap divided by the
    image's mean |peak| over all units.

    Ranking a unit's top images by the raw peak lets an image that is loud in every unit top most units' lists
    (on the world GAN's layer4 one sample was among the top 6 images of 97 of 128 units). Dividing by the image's
    level ranks instead the images where this unit stands out; it uses one image only, so any batch split or
    rank count gives the same scores."""
    peaks = r.amax((2, 3)).float()  # (B, U)
    level = peaks.abs().mean(1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    # a louder image lowers the score whatever its sign: a negative peak (a layer before its activation) is
    # multiplied by the level rather than divided, which would lift it towards 0
    return torch.where(peaks >= 0, peaks / level, peaks * level)


class TopK(Metric):
    """The k samples with the largest score per unit; states gather across DDP ranks and are re-ranked."""

    full_state_update = False

    def __init__(self, num_units: int, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("values", torch.full((k, num_units), -float("inf")), dist_reduce_fx="cat")
        self.add_state("indices", torch.full((k, num_units), -1, dtype=torch.long), dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, indices: torch.Tensor) -> None:
        """scores (B, U) for samples `indices` (B,)."""
        vals = torch.cat([self.values, scores.float()])
        idx = torch.cat([self.indices, indices.to(self.indices)[:, None].expand_as(scores)])
        # ties broken by the smaller sample index, so any batch split or rank count picks the same samples
        self.values, self.indices = _topk_stable(vals, idx, self.k)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        # under DDP, torchmetrics stacks the ranks' tensor states (world, k, U) before the "cat": flatten them
        U = self.values.shape[-1]
        vals, idx = _topk_stable(self.values.reshape(-1, U), self.indices.reshape(-1, U), self.k)
        return vals.T, idx.T  # (U, k)


def _topk_stable(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(idx, dim=0, stable=True)
    vals, idx = vals.gather(0, order), idx.gather(0, order)
    top = torch.argsort(vals, dim=0, descending=True, stable=True)[:k]
    return vals.gather(0, top), idx.gather(0, top)
