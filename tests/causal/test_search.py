"""The causal search (paper §3.2, Eqs. 4–6; §S-6.4) and its ACE evaluation, on `CausalPlantedGenerator`: units 0
and 1 draw the dome, unit 2 is a decoy with exactly the dome's activations that the renderer ignores, unit 3 is
noise. Dissection cannot tell the decoy from the causal units (equal IoU); the search must.

δ, its two terms and their gradient are checked against Eq. 5 written out by hand; the ACE sums against per-image
loops; the Lightning loop end to end (fit, resume, test) with a real Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_gd.causal import ace
from lightning_gd.causal.interventions import concept_means
from lightning_gd.causal.search import CausalSearch
from lightning_gd.latents import LatentDataModule, latents
from lightning_gd.models.hooks import LayerNotFoundError
from tests.helpers import (
    CAUSAL_UNITS,
    CONCEPTS,
    FM,
    SCALE,
    Z_DIM,
    CausalPlantedGenerator,
    CausalPlantedSequential,
    ColourSegmenter,
    EmptyLayerGenerator,
    NoLakeSegmenter,
    dome_cell,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DOME = CONCEPTS.index("dome")
STATE_KEYS = {"alpha", "k_c", "k_insert", "iou", "presence", "prepared", "previous_top"}


def search(out, **kw) -> CausalSearch:
    args = dict(
        concept="dome",
        layer="layer1",
        generator=CausalPlantedGenerator(),
        segmenter=ColourSegmenter(),
        lam=0.1,
        lr=0.1,
        top_n=2,
        kc_samples=32,
        dissect_samples=32,
        random_draws=2,
        cache_dir=None,
        out=out,
        progress=False,
    )
    return CausalSearch(**{**args, **kw})


# ----------------------------------------------------------------------------------------------- δ by hand


def s_c_by_hand(seg, image: torch.Tensor, loc: int) -> torch.Tensor:
    """The soft probability of the dome averaged over the pixels of featuremap location `loc` (one image)."""
    y, x = divmod(loc, FM)
    p = seg.probs(image[None])[0, DOME]
    return p[y * SCALE : (y + 1) * SCALE, x * SCALE : (x + 1) * SCALE].mean()


def delta_by_hand(g, seg, r, alpha, k, locations) -> dict[str, torch.Tensor]:
    """Eq. 5 one sample at a time: x_a' = f((1 − α) ⊙ r at P), x_i' = f(α ⊙ k + (1 − α) ⊙ r at P), with f the
    renderer itself; E[s_c] over the samples that have a location of each kind."""
    abl, ins = [], []
    for b in range(r.shape[0]):
        pa, pi = int(locations[b, 0]), int(locations[b, 1])
        if pa >= 0:
            y, x = divmod(pa, FM)
            ra = r[b].clone()
            ra[:, y, x] = (1 - alpha) * r[b, :, y, x]
            abl.append(s_c_by_hand(seg, g.render(ra[None])[0], pa))
        if pi >= 0:
            y, x = divmod(pi, FM)
            ri = r[b].clone()
            ri[:, y, x] = alpha * k + (1 - alpha) * r[b, :, y, x]
            ins.append(s_c_by_hand(seg, g.render(ri[None])[0], pi))
    zero = alpha.sum() * 0
    ablation = torch.stack(abl).mean() if abl else zero
    insertion = torch.stack(ins).mean() if ins else zero
    return {"delta": insertion - ablation, "ablation": ablation, "insertion": insertion}


@pytest.mark.parametrize("make", [CausalPlantedGenerator, CausalPlantedSequential])
def test_delta_matches_eq5_by_hand(tmp_path, make):
    m = search(tmp_path, generator=make())
    g, seg = m.generator, m.segmenter
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        m.alpha.copy_(torch.rand(CAUSAL_UNITS, generator=gen))
        m.k_insert.copy_(torch.tensor([1.0, 0.8, 1.0, 0.3]))
    z = latents(range(5), Z_DIM, seed=3)
    r = m.split.h(z)
    # ablations in the dome (edge and middle cells), insertions anywhere; −1: this sample has none of that kind
    locations = torch.tensor(
        [
            [dome_cell(r, 0, True), 0],
            [dome_cell(r, 1, False), -1],
            [-1, FM * FM - 1],
            [dome_cell(r, 3, True), 37],
            [dome_cell(r, 4, False), dome_cell(r, 4, True)],
        ]
    )
    got = m.delta(z, r, locations)
    alpha = m.alpha.detach().clone().requires_grad_(True)
    expected = delta_by_hand(g, seg, r, alpha, m.k_insert, locations)
    for key in ("delta", "ablation", "insertion"):
        assert abs(float(got[key].detach()) - float(expected[key].detach())) < 1e-5, key
    assert 0 < float(expected["ablation"].detach()) < 1 and 0 < float(expected["insertion"].detach()) < 1
    # the gradient that trains α is the same; the decoy and the noise unit get none from δ
    got["delta"].backward()
    expected["delta"].backward()
    torch.testing.assert_close(m.alpha.grad, alpha.grad, atol=1e-5, rtol=0)
    assert (m.alpha.grad[:2] > 0).all() and torch.equal(m.alpha.grad[2:], torch.zeros(2))

    # samples without ablation (or insertion) locations contribute a zero term, not a NaN
    only_insertion = locations.clone()
    only_insertion[:, 0] = -1
    terms = m.delta(z, r, only_insertion)
    assert float(terms["ablation"].detach()) == 0
    ref = delta_by_hand(g, seg, r, m.alpha.detach(), m.k_insert, only_insertion)
    assert abs(float(terms["delta"].detach()) - float(ref["insertion"])) < 1e-5


def test_training_locations_follow_s64(tmp_path):
    """Each sample's ablation location is where the dome covers the most of its pixels (here: a cell inside
    it), its insertion location a cell without dome where inserting every unit makes it appear; both fixed per
    sample index, whatever the batch."""
    m = search(tmp_path)
    m.prepare()
    z = latents(range(6), Z_DIM, seed=100)
    r = m.split.h(z)
    idx = torch.arange(6)
    locs = m.training_locations(idx, z, r)
    for b in range(6):
        pa, pi = int(locs[b, 0]), int(locs[b, 1])
        assert float(r[b, 0].flatten()[pa]) == 1  # a cell that the dome covers entirely
        assert pi >= 0 and float(r[b, 0].flatten()[pi]) == 0
    # a fresh search asked for the same samples in another order and split computes the same locations
    other = search(tmp_path)
    other.k_insert.copy_(m.k_insert)
    perm = torch.tensor([4, 1, 5])
    again = other.training_locations(idx[perm], z[perm], r[perm])
    assert torch.equal(again, locs[perm])


def test_prepare_initialises_alpha_from_iou(tmp_path):
    m = search(tmp_path)
    m.prepare()
    assert bool(m.prepared)
    expected = concept_means(m.split, m.segmenter, "dome", n=32, seed=m.hparams.kc_seed, progress=False)
    torch.testing.assert_close(m.k_c, expected["k_c"], atol=0, rtol=0)
    assert float(m.presence) == pytest.approx(float(expected["presence"]))
    torch.testing.assert_close(m.alpha.detach(), m.iou / m.iou.max(), atol=1e-6, rtol=0)
    assert torch.equal(m.alpha.detach()[:3], torch.ones(3))  # the decoy starts level with the causal units
    u = search(tmp_path, init="uniform")
    u.prepare()
    assert torch.equal(u.alpha.detach(), torch.full((CAUSAL_UNITS,), 0.5))


# ----------------------------------------------------------------------------------------------- the search


def test_testing_a_checkpoint_of_another_fit_warns(tmp_path, trainer):
    """`test` of a checkpoint whose ranking is not the one in the folder's causal.json (another fit wrote it)."""
    torch.manual_seed(0)
    m = search(tmp_path / "run", lam=0.1, lr=0.1)
    dm = LatentDataModule(n_train=32, n_val=16, n_test=16, batch_size=16)
    t = trainer(max_epochs=1)
    t.fit(m, dm)
    path = tmp_path / "run" / "causal.json"
    doc = json.loads(path.read_text())
    top = doc["top_units"]
    path.write_text(json.dumps({**doc, "top_units": top[::-1]}))  # as a later fit with another answer would leave
    with pytest.warns(UserWarning, match="comes from another fit than the one that wrote that file"):
        t.test(m, dm)


def test_a_lambda_that_outweighs_the_effect_is_reported(tmp_path, trainer, capsys):
    """λ far above what δ is worth: every α shrinks towards 0, and the search says so with the λ to try."""
    torch.manual_seed(0)
    m = search(tmp_path / "run", lam=30.0, lr=0.1)
    trainer(max_epochs=3).fit(m, LatentDataModule(n_train=64, n_val=16, n_test=16, batch_size=16))
    assert float(m.alpha.detach().max()) < 0.05
    said = json.loads((tmp_path / "run" / "causal.json").read_text())["diagnosis"]
    assert said.startswith("α collapsed: every α is below 0.05") and "λ = 30" in said
    assert f"warning: {said}\n" in capsys.readouterr().out


def test_search_tells_the_decoy_apart(tmp_path, trainer):
    torch.manual_seed(0)
    m = search(tmp_path / "run", lam=0.1, lr=0.1)
    dm = LatentDataModule(n_train=64, n_val=16, n_test=16, batch_size=16)
    t = trainer(max_epochs=3, logger=TensorBoardLogger(tmp_path / "tb", default_hp_metric=False))
    t.fit(m, dm)
    iou = m.iou
    print(f"\nIoU {iou.tolist()}\nα {m.alpha.tolist()}")
    # dissection: the decoy is indistinguishable from the causal units
    assert float(iou[0]) > 0.5 and float(iou[3]) < 0.1
    assert float(iou[:3].max() - iou[:3].min()) < 1e-6
    # the search: units 0 and 1 stay saturated, the decoy (no gradient from δ, only λ‖α‖) and the noise fall
    alpha = m.alpha.detach()
    assert set(m.ranking()[:2].tolist()) == {0, 1}
    assert float(alpha[:2].min()) > 0.9
    assert float(alpha[2]) < 0.5 and float(alpha[3]) < 0.5
    assert float(alpha[:2].min() - alpha[2]) > 0.4
    causal = json.loads((tmp_path / "run" / "causal.json").read_text())
    assert causal["top_units"] == [0, 1] and causal["global_step"] == 3 * 4
    assert causal["diagnosis"] is None  # α ranks the two units by itself: neither collapsed nor saturated
    assert (tmp_path / "run" / "alpha.safetensors").is_file()

    assert float(t.callback_metrics["val/removed_top2"]) == pytest.approx(1.0)
    check_tensorboard_run(t.logger.log_dir, float(t.callback_metrics["val/removed_top2"]), [3, 7, 11])

    t.test(m, dm)
    assert (tmp_path / "run" / "ace.json").is_file()
    summary = json.loads((tmp_path / "run" / "ace.json").read_text())
    assert summary["top_units"] == [0, 1] and summary["n_test"] == 16
    assert summary["removed_at_top_n"]["alpha"] >= 0.99  # ablating the α top-2 removes every dome pixel
    assert summary["ablation_removed"]["alpha"][summary["sizes"].index(2)] >= 0.99
    assert summary["insertion_at_top_n"]["alpha"]["ace"] > 0
    acc = events(t.logger.log_dir)
    assert acc.Scalars("test/removed_top2_alpha")[-1].value == pytest.approx(summary["removed_at_top_n"]["alpha"])
    assert not [tag for tag in acc.Tags()["scalars"] if tag.startswith("hp/")]  # no charts of one point
    assert acc.Scalars("test/removed_top2_alpha")[-1].step == t.global_step  # after the fit's curves, not at 0
    # the Trainer-free evaluation on the same held-out z (test seed 102), in other batches: the same curves
    rankings = {"alpha": m.ranking(), "iou": m.iou_ranking()}
    ev = ace.evaluate(
        m.generator, m.segmenter, "layer1", "dome", rankings, k_c=m.k_insert, n=16, seed=102, batch_size=5, top_n=2
    )
    assert ev["sizes"] == summary["sizes"] and ev["presence"] == pytest.approx(summary["presence"])
    for name in rankings:
        assert ev["ablation_removed"][name] == pytest.approx(summary["ablation_removed"][name])


def events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def check_tensorboard_run(log_dir, removed: float, epoch_ends: list[int]) -> None:
    """The run opens on a layout of the search, logs α and the top-n set at the scalars' steps (Lightning logs an
    epoch's scalars at the step of its last batch; not at the epoch number), and has the validation's removed
    share as its hparam metric instead of a −1 placeholder."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = events(log_dir)
    tags = acc.Tags()
    val_steps = sorted({e.step for e in acc.Scalars("val/removed_top2")})  # the hparam metric: the last one again
    assert val_steps == epoch_ends == [e.step for e in acc.Scalars("epoch")][::2]
    assert [e.step for e in acc.Histograms("train/alpha")] == val_steps
    assert [e.step for e in acc.Tensors("top_2_units/text_summary")] == val_steps
    assert "hp_metric" not in tags["scalars"]
    hp = acc.Scalars("val/removed_top2")[-1]  # the hparam metric is the validation's own tag, at its last step
    assert hp.value == pytest.approx(removed) and hp.step == epoch_ends[-1]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata("_hparams_/experiment").plugin_data.content
    )
    assert [m.name.tag for m in experiment.experiment.metric_infos] == ["val/removed_top2"]
    raw = acc.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0]
    (section,) = layout_pb2.Layout.FromString(raw).category
    charted = {tag for chart in section.chart for tag in chart.multiline.tag}
    assert section.title == "causal search: dome @ layer1"
    assert list(section.chart[0].multiline.tag) == ["val/removed_top2", "test/removed_top2_.*"]  # the result first
    logged = {"train/delta", "train/insertion", "train/ablation", "train/loss", "train/alpha_norm"}
    logged |= {"train/alpha_above_half", "train/top_n_turnover", "val/removed_top2", "test/removed_top2_.*"}
    assert charted == logged  # every scalar the search logs (the tiny Trainer here logs no step scalars)


def test_top_n_outside_the_curve_sizes(tmp_path, trainer):
    """top_n is "the size of the unit set reported, logged and evaluated": with top_n = 3 on a 4-unit layer
    (the default curve is 1, 2, 4) the test must still report the ablation of the α top-3."""
    m = search(tmp_path / "run", top_n=3)
    dm = LatentDataModule(n_train=16, n_val=16, n_test=16, batch_size=16)
    t = trainer(max_epochs=1)
    t.fit(m, dm)
    t.test(m, dm)
    summary = json.loads((tmp_path / "run" / "ace.json").read_text())
    assert summary["top_n"] == 3 and set(summary["top_units"]) >= {0, 1}
    assert summary["removed_at_top_n"]["alpha"] >= 0.99


@pytest.mark.parametrize("path_type", [str, Path], ids=["str_paths", "Path_paths"])
def test_resume_equals_uninterrupted_run(tmp_path, path_type, trainer):
    """Fit 2 epochs at once, or 1 epoch and then resume from last.ckpt to 2 on a fresh module: the same α. Then
    test the checkpoint on another fresh module (the documented `test --ckpt_path <run>/.../last.ckpt`).

    `out` and `cache_dir` are given as str or as pathlib.Path (the default `cache_dir` is a Path): the
    checkpoint must load either way."""
    dm = LatentDataModule(n_train=32, n_val=16, n_test=16, batch_size=16)

    def run(folder, epochs, **fit):
        out, cache = path_type(tmp_path / folder / "out"), path_type(tmp_path / "cache")
        m = search(out, lr=0.03, cache_dir=cache)
        ckpt = ModelCheckpoint(dirpath=tmp_path / folder / "ckpt", save_last=True)
        trainer(max_epochs=epochs, enable_checkpointing=True, callbacks=[ckpt]).fit(m, dm, **fit)
        return m

    whole = run("a", 2)
    first = run("b", 1)
    first_alpha = first.alpha.detach().clone()
    last = tmp_path / "b" / "ckpt" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert set(state) == STATE_KEYS  # no generator or segmenter weights
    assert bool(state["prepared"]) and torch.equal(state["alpha"], first_alpha)

    resumed = run("b", 2, ckpt_path="last")
    assert not torch.allclose(first_alpha, whole.alpha, atol=1e-3)  # the second epoch moved α
    assert torch.allclose(resumed.alpha, whole.alpha, atol=1e-6, rtol=0)
    assert 0.1 < float(whole.alpha[2]) < 0.99  # a partial value: the optimiser state must have been restored
    assert torch.equal(resumed.k_c, whole.k_c) and torch.equal(resumed.iou, whole.iou)

    tested = search(path_type(tmp_path / "tested"), cache_dir=None)
    trainer(max_epochs=1).test(tested, dm, ckpt_path=str(last))
    assert torch.allclose(tested.alpha, whole.alpha, atol=1e-6, rtol=0)
    summary = json.loads((tmp_path / "tested" / "ace.json").read_text())
    assert summary["top_units"] == [0, 1] and summary["removed_at_top_n"]["alpha"] >= 0.99


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input(tmp_path):
    with pytest.raises(KeyError, match="sky, dome, grass") as err:
        search(tmp_path, concept="dom")
    assert "did you mean dome" in str(err.value)
    with pytest.raises(ValueError, match="lam"):
        search(tmp_path, lam=-0.1)
    with pytest.raises(LayerNotFoundError, match="layer1") as err:
        search(tmp_path, layer="layr1")
    assert isinstance(err.value, KeyError)
    with pytest.raises(ValueError, match="'empty' has no units"):
        search(tmp_path, generator=EmptyLayerGenerator(), layer="empty")
    with pytest.raises(ValueError, match="unknown init"):
        search(tmp_path, init="zeros")
    with pytest.raises(ValueError, match="must be positive"):
        search(tmp_path, top_n=0)
    with pytest.raises(ValueError, match="'kc' is not understood.*'k_c\\*M'"):
        search(tmp_path, insertion="kc")


@pytest.mark.parametrize("spec", ["k_c", "k_c*1.25", "q0.9"])
def test_the_insertion_constant_is_the_one_asked_for(tmp_path, spec):
    """k_c stays the paper's mean; the inserted values are k_c, M·k_c or each unit's own quantile over the
    locations of `kc_samples` samples (computed here by hand), and training and the test insert those."""
    m = search(tmp_path, insertion=spec)
    m.prepare()
    k_c = concept_means(m.split, m.segmenter, "dome", n=32, seed=m.hparams.kc_seed, progress=False)["k_c"]
    torch.testing.assert_close(m.k_c, k_c, atol=0, rtol=0)
    if spec.startswith("q"):
        maps = torch.cat([m.split.h(latents(range(i, min(i + 50, 32)), Z_DIM, 0)) for i in range(0, 32, 50)])
        expected = torch.quantile(maps.transpose(0, 1).flatten(1), 0.9, dim=1)
    else:
        expected = k_c * (1.25 if spec == "k_c*1.25" else 1.0)  # (k_c*4 drives the planted renderer out of range)
    torch.testing.assert_close(m.k_insert, expected, atol=1e-6, rtol=0)
    z = latents(range(3), Z_DIM, seed=3)
    r = m.split.h(z)
    locations = torch.tensor([[-1, 0], [-1, 5], [-1, FM * FM - 1]])
    alpha = m.alpha.detach()
    torch.testing.assert_close(
        m.delta(z, r, locations)["insertion"],
        delta_by_hand(m.generator, m.segmenter, r, alpha, expected, locations)["insertion"],
        atol=1e-5,
        rtol=0,
    )


def test_absent_concept_fails_at_fit_start(tmp_path, trainer):
    m = search(tmp_path / "out", concept="lake", segmenter=NoLakeSegmenter())
    dm = LatentDataModule(n_train=16, n_val=16, n_test=16, batch_size=16)
    with pytest.raises(ValueError, match="'lake' does not occur in 32 samples"):
        trainer(max_epochs=1).fit(m, dm)
    assert not bool(m.prepared) and not (tmp_path / "out").exists()


def test_test_before_fit_fails(tmp_path, trainer):
    m = search(tmp_path / "out")
    dm = LatentDataModule(n_train=16, n_val=16, n_test=16, batch_size=16)
    with pytest.raises(RuntimeError, match="no trained α: run .*fit.* first"):
        trainer(max_epochs=1).test(m, dm)
    assert not (tmp_path / "out" / "ace.json").exists()


# ----------------------------------------------------------------------------------------------- data
# The search's seeded z (`lightning_gd.latents.LatentDataModule`).


# ----------------------------------------------------------------------------------------------- DDP

_DDP_TEST = """
import json, sys
sys.path.insert(0, {root!r})
import torch
import pytorch_lightning as pl
from lightning_gd.latents import LatentDataModule
from tests.causal.test_search import search

torch.set_num_threads(1)
module = search({out!r}, random_draws=1)
data = LatentDataModule(n_train=8, n_val=5, n_test=7, batch_size=2)  # odd sizes: a padded sampler would repeat z
kw = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
pl.Trainer(max_epochs=1, devices=1, enable_checkpointing=False, **kw).fit(module, data)
torch.save(module.alpha.detach(), {out!r} + "/alpha.pt")
pl.Trainer(devices=2, strategy="ddp", **kw).test(module, data)
"""


def test_two_ddp_ranks_test_what_one_process_tests(tmp_path, trainer):
    """The held-out sums of `test` under 2 DDP ranks (each z counted once) equal one process's."""
    import os
    import subprocess
    import sys
    import textwrap

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "ddp").mkdir()
    script = tmp_path / "ddp_test.py"
    script.write_text(textwrap.dedent(_DDP_TEST.format(root=str(root), out=str(tmp_path / "ddp"))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads((tmp_path / "ddp" / "ace.json").read_text())
    module = search(tmp_path / "one", random_draws=1)
    trainer(max_epochs=1).fit(module, LatentDataModule(n_train=8, n_val=5, n_test=7, batch_size=2))
    torch.testing.assert_close(module.alpha.detach(), torch.load(tmp_path / "ddp" / "alpha.pt", weights_only=True))
    trainer(max_epochs=1).test(module, LatentDataModule(n_train=8, n_val=5, n_test=7, batch_size=2))
    one = json.loads((tmp_path / "one" / "ace.json").read_text())
    assert two["n_test"] == one["n_test"] == 7
    for key, curve in one["ablation_removed"].items():
        assert two["ablation_removed"][key] == pytest.approx(curve, rel=1e-9), key
    for key, values in one["insertion_at_top_n"].items():
        assert two["insertion_at_top_n"][key] == pytest.approx(values, rel=1e-9), key
    assert two["presence"] == pytest.approx(one["presence"], rel=1e-9)


def test_a_checkpoint_of_another_search_is_refused(tmp_path, trainer):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    data = LatentDataModule(n_train=4, n_val=2, n_test=2, batch_size=2)
    trainer(max_epochs=1, enable_checkpointing=True, callbacks=[ckpt]).fit(search(tmp_path / "dome"), data)
    other = search(tmp_path / "sky", concept="sky")
    with pytest.raises(ValueError, match="another causal search.*concept: checkpoint 'dome', this run 'sky'"):
        trainer(max_epochs=2, enable_checkpointing=True).fit(
            other, data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
        )
    # the same concept with other settings for α's preparation, another top-n or another insertion constant: also
    # another search
    for changed, said in (
        ({"kc_samples": 16}, "kc_samples: checkpoint 32, this run 16"),
        ({"top_n": 3}, "top_n"),
        ({"insertion": "k_c*4"}, "insertion: checkpoint 'k_c', this run 'k_c\\*4'"),
    ):
        with pytest.raises(ValueError, match=f"another causal search.*{said}"):
            trainer(max_epochs=2, enable_checkpointing=True).fit(
                search(tmp_path / "dome2", **changed), data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
            )


def test_a_checkpoint_from_before_the_insertion_option_inserts_k_c(tmp_path, trainer):
    """A checkpoint written before `insertion` existed (no k_insert, no insertion in its identity) is tested as
    what it was, a k_c search: its inserted values are its k_c."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    data = LatentDataModule(n_train=4, n_val=2, n_test=2, batch_size=2)
    trainer(max_epochs=1, enable_checkpointing=True, callbacks=[ckpt]).fit(search(tmp_path / "dome"), data)
    path = tmp_path / "ckpt" / "last.ckpt"
    old = torch.load(path, map_location="cpu", weights_only=True)
    del old["state_dict"]["k_insert"], old["causal_search"]["insertion"]
    torch.save(old, path)
    m = search(tmp_path / "dome")
    trainer().test(m, data, ckpt_path=str(path))
    assert torch.equal(m.k_insert, old["state_dict"]["k_c"]) and float(m.k_c.abs().sum()) > 0
