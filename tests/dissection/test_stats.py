"""Every streaming statistic of the dissection against a brute-force twin: independent, slow, obvious code."""

from __future__ import annotations

import bisect
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_gd.dissection.bands import BandTally
from lightning_gd.dissection.stats import (
    E_MAX,
    E_MIN,
    SIGNIFICANT_G,
    TopK,
    UnitConceptHistogram,
    UnitHistogram,
    bin_edges,
    bin_index,
    iou_from_tallies,
    iqr_from_counts,
    num_bins,
    quantile_from_counts,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def splits(x: torch.Tensor, batch_size: int, *others: torch.Tensor):
    """Consecutive batches of x (and of the tensors aligned with it)."""
    for i in range(0, x.shape[0], batch_size):
        yield (x[i : i + batch_size], *(o[i : i + batch_size] for o in others))


# ----------------------------------------------------------------------------------------------- bins


def wide_values(n: int, seed: int = 0) -> torch.Tensor:
    """float32 values of magnitudes 2^-24 … 2^23, both signs, zeros, and values exactly on bin edges."""
    g = gen(seed)
    mag = torch.pow(2.0, torch.empty(n, dtype=torch.float64).uniform_(E_MIN, E_MAX - 1, generator=g))
    sign = torch.randint(0, 3, (n,), generator=g).double() - 1  # -1, 0, 1
    lower, upper = bin_edges(16)
    on_edges = lower[torch.randint(0, len(lower), (200,), generator=g)]  # exactly representable in float32
    return torch.cat([sign * mag, on_edges, -on_edges, torch.zeros(5)]).float()


@pytest.mark.parametrize("per_octave", [64, 16])
def test_bins_contain_their_values(per_octave):
    x = wide_values(5000)
    lower, upper = bin_edges(per_octave)
    assert len(lower) == len(upper) == num_bins(per_octave)
    assert (lower <= upper).all() and (upper[:-1] <= lower[1:]).all()  # ascending, disjoint
    zero = (E_MAX - E_MIN) * per_octave
    touch = lower[1:] == upper[:-1]  # contiguous, except for the gaps ±(0, 2^(E_MIN-1)) around the zero bin
    assert touch.sum() == len(touch) - 2 and not touch[zero - 1] and not touch[zero]
    b = bin_index(x, per_octave)
    assert b.min() >= 0 and b.max() < num_bins(per_octave)
    xd = x.double()
    assert (lower[b] <= xd).all() and (xd <= upper[b]).all()
    assert (b[x == 0] == zero).all() and (b[x > 0] > zero).all() and (b[x < 0] < zero).all()


@pytest.mark.parametrize("per_octave", [64, 16])
def test_bin_index_twin(per_octave):
    """Brute force: a value belongs to the bin (lower, upper] it lies in, i.e. its bin number is the number of
    upper edges below it. That is the property IQR needs: value > upper[b] exactly when its bin is above b."""
    x = wide_values(3000, seed=1)
    _, upper = bin_edges(per_octave)
    up = upper.tolist()
    expected = torch.tensor([bisect.bisect_left(up, v) for v in x.double().tolist()])
    b = bin_index(x, per_octave)
    assert torch.equal(b, expected)
    for j in torch.randint(0, len(up), (50,), generator=gen(2)).tolist() + [len(up) // 2]:
        assert torch.equal(x.double() > up[j], b > j), up[j]


def test_bins_are_monotone_and_clamp_out_of_range():
    x = torch.cat([wide_values(4000, seed=3), torch.tensor([1e-30, -1e-30, 1e30, -1e30, float(2**30)])])
    xs = x.sort().values
    b = bin_index(xs)
    assert (b[1:] >= b[:-1]).all()
    assert bin_index(torch.tensor([1e30])).item() == num_bins() - 1
    assert bin_index(torch.tensor([-1e30])).item() == 0


# ----------------------------------------------------------------------------------------------- quantile


def featuremaps(seed: int, leaky: bool, n: int = 64) -> torch.Tensor:
    """(n, 3, 16, 16): units of scale 1e-3, 1, 1e3; ReLU'd (many exact zeros) or LeakyReLU'd (negatives)."""
    r = torch.randn(n, 3, 16, 16, generator=gen(seed)) * torch.tensor([1e-3, 1.0, 1e3])[None, :, None, None]
    r = r + 0.3 * r.abs().mean((0, 2, 3), keepdim=True)
    return F.leaky_relu(r, 0.1) if leaky else F.relu(r)


@pytest.mark.parametrize("leaky", [False, True])
def test_quantile_matches_torch_quantile(leaky):
    r = featuremaps(0, leaky)
    values = r.transpose(0, 1).reshape(3, -1).double()  # (U, P)
    h = UnitHistogram(3)
    h.update(r)
    for q in (0.99, 0.5) + ((0.01,) if leaky else ()):
        est = h.quantile(q).double()
        ref = torch.quantile(values, q, dim=1)
        # within a bin width (≤ 1.56 % relative; in practice ≈ 0.1 %) of the exact quantile
        assert ((est - ref).abs() <= 0.015 * ref.abs()).all(), (q, est, ref)
        if q == 0.99:
            above = (values > est[:, None]).double().mean(1)
            assert ((above - 0.01).abs() <= 0.001).all(), above


def test_quantile_takes_one_level_per_unit():
    """Per-unit levels (the one-pass dissection's bands) give each unit what its own scalar level gives."""
    h = UnitHistogram(3)
    h.update(featuremaps(1, True))
    levels = torch.tensor([0.97, 0.5, 0.9975], dtype=torch.float64)
    want = torch.stack([h.quantile(float(q))[u] for u, q in enumerate(levels)])
    assert torch.equal(h.quantile(levels), want)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        h.quantile(torch.tensor([0.5, 1.5, 0.5]))


def test_quantile_of_mostly_zero_units_is_zero():
    r = torch.zeros(4, 2, 8, 8)
    r[:, 1, 0, 0] = 1.0  # 1/64 of the pixels are positive
    h = UnitHistogram(2)
    h.update(r)
    assert torch.equal(h.quantile(0.9), torch.zeros(2))
    assert ((r.transpose(0, 1).reshape(2, -1) > h.quantile(0.9)[:, None]).float().mean(1) <= 1 / 64).all()


@pytest.mark.parametrize("leaky", [False, True])
def test_histogram_counts_are_batch_split_invariant(leaky):
    r = featuremaps(1, leaky)
    results = []
    for bs in (1, 7, 64):
        h = UnitHistogram(3)
        for (chunk,) in splits(r, bs):
            h.update(chunk)
        results.append((h.counts.clone(), h.quantile(0.99)))
    for counts, q in results[1:]:
        assert torch.equal(counts, results[0][0]) and torch.equal(q, results[0][1])
    assert results[0][0].sum(1).tolist() == [64 * 256] * 3


# ----------------------------------------------------------------------------------------------- IQR


def concept_data(seed: int, quantize: str | None = None):
    """Activations (B, 3, 6, 6) of 3 units (one tied to concept 0, one random leaky, one dead) and two label
    groups: group 0 holds concepts 0 and 1, group 1 concept 2, which overlaps them."""
    g = gen(seed)
    B, H, W = 6, 6, 6
    g0 = torch.randint(-1, 2, (B, H, W), generator=g)  # concepts 0, 1 (-1 none)
    g1 = torch.randint(-1, 1, (B, H, W), generator=g)  # concept 2 (offset 2)
    r = torch.empty(B, 3, H, W)
    r[:, 0] = (g0 == 0).float() * 2.0 + torch.randn(B, H, W, generator=g)
    r[:, 1] = F.leaky_relu(torch.randn(B, H, W, generator=g), 0.2)
    r[:, 2] = 0.0  # dead unit: its only candidate threshold is 0, an empty mask
    if quantize == "bf16":  # an eighth of the values then sit exactly on a bin edge
        r = r.bfloat16().float()
    elif quantize == "grid":  # steps of 1/32: in [0.5, 1) every value is on a bin edge and the bins are all full
        r = (r * 32).round() / 32
    return r, [g0, g1], [0, 2], 3


def brute_iqr(r: torch.Tensor, groups, offsets, C: int, per_octave: int = 16) -> dict:
    """{(unit, concept): {t: I/H}} over the upper edges t of the bins actually hit, where I/H is that of the
    2×2 joint distribution of (r > t, concept), counted with dense boolean masks."""
    _, upper = bin_edges(per_octave)
    concept = torch.zeros(C, *groups[0].shape, dtype=torch.bool)
    for lab, off in zip(groups, offsets):
        for c in range(lab.max().item() + 1):
            concept[off + c] |= lab == c

    def ent(ps):
        return -sum(x * math.log(x) for x in ps if x > 0)

    table = {}
    for u in range(r.shape[1]):
        ru = r[:, u].double()
        candidates = sorted(set(upper[bin_index(r[:, u], per_octave).flatten()].tolist()))
        for c in range(C):
            table[u, c] = {}
            for t in candidates:
                m, k = ru > t, concept[c]
                n = m.numel()
                p = [
                    [(~m & ~k).sum().item() / n, (~m & k).sum().item() / n],
                    [(m & ~k).sum().item() / n, (m & k).sum().item() / n],
                ]
                h_joint = ent([p[0][0], p[0][1], p[1][0], p[1][1]])
                h_m = ent([p[0][0] + p[0][1], p[1][0] + p[1][1]])
                h_c = ent([p[0][0] + p[1][0], p[0][1] + p[1][1]])
                mi = h_m + h_c - h_joint
                if 2 * n * mi >= SIGNIFICANT_G:  # only thresholds whose I is significant are candidates
                    table[u, c][t] = mi / h_joint if h_joint > 0 else 0.0
    return table


@pytest.mark.parametrize("quantize", [None, "bf16", "grid"])
def test_iqr_matches_brute_force(quantize):
    r, groups, offsets, C = concept_data(0, quantize)
    h = UnitConceptHistogram(3, C)
    h.update(r, groups, offsets)
    thr, ratio = h.compute()
    table = brute_iqr(r, groups, offsets, C)
    exact = 0
    for (u, c), ratios in table.items():
        if not ratios:  # nothing significant: ratio 0 and the unit's q = 0.99 level, as in quantile mode
            level = quantile_from_counts(h.counts[u, -1][None].double(), 0.99, 16)[0]
            assert ratio[u, c] == 0 and thr[u, c] == level, (u, c)
            exact += 1
            continue
        best = max(ratios.values())
        first = min(t for t, v in ratios.items() if v >= best - 1e-12)  # the smallest maximiser
        assert abs(ratio[u, c].item() - best) <= 1e-5, (u, c)
        # I/H cannot tell a mask from its complement, so two thresholds can tie exactly (in exact arithmetic) and
        # rounding picks one: the package's threshold must be a candidate whose I/H is the maximum
        assert thr[u, c].item() in ratios and abs(ratios[thr[u, c].item()] - best) <= 1e-12, (u, c)
        exact += thr[u, c].item() == first
    assert exact >= len(table) - 1
    assert (thr[2] == 0).all() and (ratio[2] == 0).all()  # the dead unit: empty mask, no information
    assert ratio[0, 0] > 0.2 and ratio[0, 0] == ratio.max()  # unit 0 is about concept 0
    assert torch.equal(iqr_from_counts(h.counts, 16)[0], thr)
    assert h.counts[:, -1].sum(-1).tolist() == [r[:, 0].numel()] * 3


def test_iqr_counts_are_batch_split_invariant():
    r, groups, offsets, C = concept_data(1)
    results = []
    for bs in (1, 4, 6):
        h = UnitConceptHistogram(3, C)
        for chunk, a, b in splits(r, bs, *groups):
            h.update(chunk, [a, b], offsets)
        results.append(h.counts.clone())
    assert all(torch.equal(c, results[0]) for c in results[1:])


def brute_concept_counts(r: torch.Tensor, groups, offsets, C: int, per_octave: int = 16) -> torch.Tensor:
    """(U, C + 1, bins) counts one pixel at a time: each pixel's bin in its concepts' rows and the last row."""
    bins = bin_index(r, per_octave)  # (B, U, H, W)
    counts = torch.zeros(r.shape[1], C + 1, num_bins(per_octave), dtype=torch.long)
    for b, y, x in torch.cartesian_prod(*(torch.arange(n) for n in groups[0].shape)).tolist():
        present = [off + int(lab[b, y, x]) for lab, off in zip(groups, offsets) if lab[b, y, x] >= 0]
        for u in range(r.shape[1]):
            for row in [*present, C]:
                counts[u, row, bins[b, u, y, x]] += 1
    return counts


def test_iqr_state_is_bounded_by_blocks_and_sized_int32_with_the_same_answer(monkeypatch):
    """One unit per block (as at the paper's scale: 512 units × 1,501 rows × 1,537 bins), in `update` and in
    `compute`, and int32 counts give the counts of the pixel-by-pixel twin, and thresholds and ratios identical to
    one pass of `iqr_from_counts` over the whole state (the computation before blocks)."""
    from lightning_gd.dissection import stats

    r, groups, offsets, C = concept_data(2)
    whole = UnitConceptHistogram(3, C)
    blocks = UnitConceptHistogram(3, C, max_count=r[:, 0].numel(), block_cells=1)
    assert whole.counts.dtype == torch.long and blocks.counts.dtype == torch.int32 and blocks.block == 1
    for chunk, a, b in splits(r, 4, *groups):
        whole.update(chunk, [a, b], offsets)
        with monkeypatch.context() as patch:
            patch.setattr(stats, "BLOCK_KEYS", 1)  # one unit per step
            blocks.update(chunk, [a, b], offsets)
    assert torch.equal(blocks.counts.long(), brute_concept_counts(r, groups, offsets, C))
    assert torch.equal(whole.counts, blocks.counts.long())
    thr, ratio = blocks.compute(0.5)
    one_pass = iqr_from_counts(whole.counts, 16, 0.5)
    assert torch.equal(thr, one_pass[0]) and torch.equal(ratio, one_pass[1])
    assert ratio[0, 0] > 0.2  # unit 0 is about concept 0: there is an answer to compare


def test_iqr_state_sizes():
    from lightning_gd.dissection.stats import concept_histogram_bytes, count_dtype

    assert (
        count_dtype(None) == torch.long and count_dtype(2**31) == torch.long and count_dtype(2**31 - 1) == torch.int32
    )
    # the paper's scale: 512 units, 1,500 concepts + all pixels, 1,537 bins, 500 images of 64 × 64 strided pixels
    assert concept_histogram_bytes(512, 1500, 500 * 64 * 64) == 512 * 1501 * 1537 * 4
    assert UnitConceptHistogram(2, 3, max_count=10).counts.nbytes == concept_histogram_bytes(2, 3, 10)
    h = UnitConceptHistogram(1, 1, max_count=2 * 16)
    h.update(torch.randn(2, 1, 4, 4), [torch.zeros(2, 4, 4, dtype=torch.long)], [0])
    with pytest.raises(ValueError, match="more than the max_count=32"):  # int32 counts could overflow past it
        h.update(torch.randn(1, 1, 4, 4), [torch.zeros(1, 4, 4, dtype=torch.long)], [0])
    # torchmetrics' copy of the default (for `reset`) is empty, not a second state; `reset` makes the zeros again
    assert h._defaults["counts"].numel() == 0
    h.reset()
    assert torch.equal(h.counts, torch.zeros(1, 2, num_bins(16), dtype=torch.int32)) and h.seen == 0
    h.update(torch.randn(2, 1, 4, 4), [torch.zeros(2, 4, 4, dtype=torch.long)], [0])
    assert h.counts[0, 0].sum() == h.counts[0, 1].sum() == 32


# ----------------------------------------------------------------------------------------------- IoU


def iou_data(seed: int):
    g = gen(seed)
    B, H, W = 5, 8, 8
    r = torch.randn(B, 4, H, W, generator=g)
    groups = [
        torch.randint(-1, 3, (B, H, W), generator=g),  # concepts 0, 1, 2
        torch.randint(-1, 2, (B, H, W), generator=g),  # concepts 3, 4 (overlap group 0)
        torch.randint(-1, 1, (B, H, W), generator=g),  # concept 5; concept 6 never present
    ]
    r[:, 0] += 3 * (groups[0] == 1).float()  # unit 0 follows concept 1
    thresholds = torch.tensor([1.0, 0.5, 100.0, -0.2])  # unit 2's mask is always empty
    return r, groups, [0, 3, 5], 7, thresholds


def brute_iou(r, thresholds, groups, offsets, C):
    U = r.shape[1]
    out = torch.zeros(U, C, dtype=torch.float64)
    for u in range(U):
        m = r[:, u] > thresholds[u]
        for c in range(C):
            g = max(i for i, off in enumerate(offsets) if c >= off)  # the group owning concept c
            cm = groups[g] == c - offsets[g]
            union = (m | cm).sum().item()
            out[u, c] = (m & cm).sum().item() / union if union else 0.0
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_iou_matches_dense_masks(batch_size):
    r, groups, offsets, C, thresholds = iou_data(0)
    t = BandTally(thresholds, thresholds, C, bins=0)  # the fixed-threshold tally of the IQR mode
    for chunk, *gs in splits(r, batch_size, *groups):
        t.update(chunk, gs, offsets)
    iou = t.iou()
    expected = brute_iou(r, thresholds, groups, offsets, C)
    torch.testing.assert_close(iou, expected, atol=1e-5, rtol=0)
    assert not iou.isnan().any()
    assert (iou[2] == 0).all() and (iou[:, 6] == 0).all()  # empty mask, concept never present
    assert iou[0].argmax() == 1 and iou[0, 1] > 0.4
    state = t.compute()
    above = state["counts"][:, :, 1]
    torch.testing.assert_close(iou_from_tallies(above[:, :-1], above[:, -1], state["concept_area"]), iou)


def test_iou_of_two_empty_sets_is_zero():
    z = torch.zeros(2, 3, dtype=torch.long)
    assert torch.equal(
        iou_from_tallies(z, torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long)),
        torch.zeros(2, 3, dtype=torch.float64),
    )


# ----------------------------------------------------------------------------------------------- top-k


def brute_topk(scores: torch.Tensor, indices: torch.Tensor, k: int):
    out = []
    for u in range(scores.shape[1]):
        pairs = sorted(zip(scores[:, u].tolist(), indices.tolist()), key=lambda p: (-p[0], p[1]))
        out.append([i for _, i in pairs[:k]])
    return torch.tensor(out)


def test_topk_is_batch_split_invariant_and_breaks_ties_by_index():
    n, U, k = 40, 3, 5
    scores = torch.randn(n, U, generator=gen(0))
    scores[:, 1] = torch.randint(0, 3, (n,), generator=gen(1)).float()  # many ties
    scores[:, 2] = 1.0  # all tied: the k smallest indices
    indices = torch.randperm(n, generator=gen(2)) + 10  # the sample arrives shuffled
    expected = brute_topk(scores, indices, k)
    assert expected[2].tolist() == list(range(10, 15))
    for bs in (1, 7, n):
        m = TopK(U, k)
        for s, i in splits(scores, bs, indices):
            m.update(s, i)
        vals, idx = m.compute()
        assert idx.shape == (U, k) and torch.equal(idx, expected), bs
        row = indices.argsort()[idx - 10]  # where each picked sample sits in `scores`
        assert torch.equal(vals, scores[row, torch.arange(U)[:, None]])


def test_topk_with_fewer_samples_than_k():
    m = TopK(2, 4)
    m.update(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([5, 2]))
    vals, idx = m.compute()
    assert idx[:, :2].tolist() == [[2, 5], [5, 2]]


def test_iqr_of_a_noise_unit_is_zero_with_the_quantile_threshold():
    """A unit independent of the concepts: its plug-in I/H is positive by chance at some threshold (before, one at
    the bottom of the range, whose mask covers almost every pixel and so overlaps any large concept)."""
    g = torch.Generator().manual_seed(0)
    labels = (torch.arange(32)[None, :, None] >= 16).long().expand(64, 32, 32).contiguous()  # top / bottom half
    noise = torch.rand(64, 1, 32, 32, generator=g)
    h = UnitConceptHistogram(1, 2)
    h.update(noise, [labels], [0])
    thr, ratio = h.compute()
    assert (ratio == 0).all()
    covered = (noise > thr[0, 0]).float().mean().item()
    assert abs(covered - 0.01) < 0.002  # the top 1 %, not nearly everything
    signal = (labels[:, None] == 1).float() + 0.3 * torch.randn(64, 1, 32, 32, generator=g)
    h = UnitConceptHistogram(1, 2)
    h.update(signal, [labels], [0])
    thr, ratio = h.compute()
    assert ratio[0, 1] > 0.4 and abs((signal > thr[0, 1]).float().mean().item() - 0.5) < 0.05


def test_sample_rows_put_each_sample_in_its_row_whatever_the_split_and_the_ranks():
    from lightning_gd.dissection.stats import SampleRows

    values = torch.randn(9, 3, 2, dtype=torch.float64)
    wanted = torch.tensor([1, 4, 5, 8])
    for world in (1, 2, 3):  # each rank's rows, then the sum that the DDP reduction takes
        states = [SampleRows(wanted, (3, 2)) for _ in range(world)]
        for rank, state in enumerate(states):
            mine = torch.arange(rank, 9, world)  # sample i on rank i mod world, as the loaders give them
            for part in mine.split(2):
                state.update(part, values[part])
        total = sum(s.compute() for s in states)
        assert torch.equal(total, values[wanted]), world
    everything = SampleRows(9, (), torch.long)
    everything.update(torch.tensor([8, 0]), torch.tensor([5, 7]))
    assert everything.compute().tolist() == [7, 0, 0, 0, 0, 0, 0, 0, 5]
