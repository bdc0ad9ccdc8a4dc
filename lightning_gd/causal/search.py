"""Causal unit search (paper §3.2, Eqs. 5–6; §S-6.4) as a Lightning training loop.

`CausalSearch` learns α ∈ [0, 1]^U, the only trainable parameter, for one concept c at one layer:

    loss = −δ_α + λ‖α‖₂,   δ_α = E[s_c(x_i')] − E[s_c(x_a')]

with `x_a' = f((1 − α) ⊙ r at P)` (partial ablation) and `x_i' = f(α ⊙ k + (1 − α) ⊙ r at P)` (partial
insertion), `s_c` the segmenter's soft probability of c averaged over the image pixels of the featuremap
location P. The generator and segmenter are frozen and live outside the module's state, so checkpoints hold
α, k_c and the IoU only. Per batch, `h(z)` runs once (no gradient); `f` and the segmenter run on the edited
featuremaps, forward and backward, at training locations fixed per sample (`lightning_gd.causal.locations`).
α starts at IoU_{u,c} / max_v IoU_{v,c} from a dissection of the layer (cached), is projected back to [0, 1]
after every optimiser step, and the answer is the top-n units of α. `test` measures the ablation curve and
the insertion effect on held-out z (`lightning_gd.causal.ace`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_gd import zoo
from lightning_gd.cache import Cache, check_writable, fingerprint, save_atomic, staged
from lightning_gd.causal import ace
from lightning_gd.causal import tensorboard as tb_views
from lightning_gd.causal.diagnosis import diagnose, stale_checkpoint
from lightning_gd.causal.interventions import concept_means, insertion_values, parse_insertion, partial_effect
from lightning_gd.causal.locations import training_locations
from lightning_gd.dissection.recipe import dissect
from lightning_gd.dissection.stats import TensorSum
from lightning_gd.errors import InvalidValue, NotReady
from lightning_gd.latents import latents
from lightning_gd.models.generators import default_layer
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit
from lightning_gd.results import CausalSearchResult

InitMode = Literal["iou", "uniform"]


class CausalSearch(LightningModule):
    """Find the units of `layer` that cause `concept` by optimising a continuous intervention α.

    Args:
        concept: the concept to cause (a name in the segmenter's vocabulary).
        layer: the generator layer whose units are searched (default: the generator's default layer, the first of
            its `probe_layers`).
        generator: a zoo spec (`world`, …) or a generator module (class_path + init_args); default: the
            embedded world's GAN.
        generator_weights: a local weights file for `generator` (safetensors, or a torch file read weights-only).
        segmenter: a zoo spec or a `lightning_gd.models.segmenters.Segmenter`; default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        lam: λ, the weight of ‖α‖₂ in the loss (≥ 0).
        lr: Adam learning rate for α.
        init: `iou` (α_u = IoU_{u,c} / max IoU, §S-6.4) or `uniform` (all 0.5).
        top_n: size of the unit set reported, logged and evaluated.
        candidates: random locations tried per sample when looking for an insertion location.
        location_seed: seed of those locations and of the test's insertion locations.
        kc_samples: samples for k_c, the per-unit mean activation where c is present (§S-6.4).
        kc_seed: seed of that sample.
        insertion: the value inserted units are set to, in training, in the search for insertion locations and in
            the test's insertion effect: 'k_c' (the paper's, the default), 'k_c*M' (M times it) or 'qP' (each
            unit's P-quantile over every location of `kc_samples` samples), as `context --insertion` takes.
        dissect_samples: samples of the dissection that gives the IoU (initialisation and IoU ranking).
        dissect_seed: seed of that dissection.
        eval_sizes: n of the test's ablation curve (default: 1, 2, 5, 10, 15, 20, 30, … up to U).
        random_draws: random unit sets per n in the test's baseline.
        out: folder for the result (α, ranking, ACE report); default `out/causal/<concept>-<layer>`.
        cache_dir: folder for cached k_c and dissection stages (None: no cache).
        progress: show progress bars for the preparation passes.
        bf16: run the training steps (locations, edits, the generator from `layer` on, the segmenter) in
            bfloat16 autocast where the device has it (CPU; CUDA with bf16); α, its optimiser, k_c, the
            dissection, validation and test stay float32. On 2 CPU cores the default search took 155 s instead of
            224 s, and its top-20 units agreed in 19 of 20 with float32's (a world ProGAN checkpoint).
    """

    written: tuple[Path, ...] | list[Path] = ()  # the files the last fit or test wrote (the command line lists them)

    def __init__(
        self,
        concept: str,
        layer: str | None = None,
        generator: nn.Module | str | None = None,
        generator_weights: Path | None = None,
        segmenter: Segmenter | str | None = None,
        z_dim: int | None = None,
        lam: float = 0.1,
        lr: float = 0.01,
        init: InitMode = "iou",
        top_n: int = 20,
        candidates: int = 4,
        location_seed: int = 0,
        kc_samples: int = 500,
        kc_seed: int = 10,
        insertion: str = "k_c",
        dissect_samples: int = 1000,
        dissect_seed: int = 0,
        eval_sizes: list[int] | None = None,
        random_draws: int = 3,
        out: Path | None = None,
        cache_dir: Path | None = Path("out/cache"),
        progress: bool = True,
        bf16: bool = True,
    ) -> None:
        super().__init__()
        _check_settings(lam, init, top_n, candidates, random_draws, kc_samples, dissect_samples)
        parse_insertion(insertion)  # an unknown form fails here, before any network is loaded
        # paths as strings: checkpoints are read back with weights_only=True, which refuses pathlib objects
        out, cache_dir, generator_weights = (None if p is None else str(p) for p in (out, cache_dir, generator_weights))
        self.save_hyperparameters(ignore=["generator", "segmenter"])
        G = zoo.generator(generator, weights=generator_weights).eval().requires_grad_(False)
        seg = zoo.segmenter(segmenter).eval().requires_grad_(False)
        if not seg.differentiable:
            raise InvalidValue(f"{type(seg).__name__} gives labels only; the causal search needs soft probabilities")
        # a plain dict, not submodules: the frozen networks stay out of state_dict and checkpoints
        self.frozen = {"generator": G, "segmenter": seg}
        self.names = {
            "generator": zoo.describe(generator, "generator"),
            "segmenter": zoo.describe(segmenter, "segmenter"),
        }
        self.concept_index = seg.concept_index(concept)
        if layer is None:  # the generator's own default layer, recorded so a checkpoint names what it searched
            layer = self.hparams["layer"] = default_layer(G)
            if hasattr(self, "_hparams_initial"):  # the copy Lightning logs as hparams.yaml
                self._hparams_initial["layer"] = layer
        self.split = LayerSplit(G, layer, z_dim)
        self.z_dim = self.split.z_dim
        with torch.no_grad():
            r = self.split.h(latents([0], self.z_dim, kc_seed))
        U = r.shape[1]
        self.fm_size = tuple(r.shape[-2:])
        self.top_n = min(top_n, U)
        self.out = Path(out) if out is not None else Path("out/causal") / f"{concept}-{layer}"
        check_writable(self.out)  # now, not after the search (nothing is created yet)
        self.alpha = nn.Parameter(torch.zeros(U))  # (U,)
        for name, shape in (("k_c", (U,)), ("k_insert", (U,)), ("iou", (U,)), ("presence", ())):
            self.register_buffer(name, torch.zeros(shape))
        self.register_buffer("prepared", torch.zeros((), dtype=torch.bool))
        self.register_buffer("previous_top", torch.full((self.top_n,), -1, dtype=torch.long))
        self._locations: dict[int, tuple[int, int]] = {}
        self.sizes = ace.curve_sizes(U, eval_sizes, self.top_n)
        self.ranking_names = ["alpha", "iou", *[f"random{i}" for i in range(random_draws)]]
        self.val_sums = TensorSum((2,))
        self.test_sums = nn.ModuleDict(ace.sum_metrics(len(seg.concepts), len(self.ranking_names), len(self.sizes)))
        self._grid_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._removed_val: float | None = None  # the last validation's share of c removed by the top-n
        self._report = ""  # the result lines of fit or test, printed in teardown, after every progress bar

    @property
    def generator(self) -> nn.Module:
        return self.frozen["generator"]

    @property
    def segmenter(self) -> Segmenter:
        return self.frozen["segmenter"]

    @property
    def num_units(self) -> int:
        return self.alpha.numel()

    def _to_device(self) -> None:
        for net in self.frozen.values():
            net.to(self.device)

    def prepare(self) -> None:
        """k_c, the IoU of every unit with c, and α's initial value (each rank computes the same)."""
        hp = self.hparams
        ids = {"generator": fingerprint(self.generator), "segmenter": fingerprint(self.segmenter)}
        cache = Cache(hp.cache_dir, write=self._trainer is None or self._trainer.is_global_zero)
        kc = cache.tensors(
            "k_c",
            {**ids, "layer": hp.layer, "concept": hp.concept, "n": hp.kc_samples, "seed": hp.kc_seed},
            lambda: concept_means(
                self.split, self.segmenter, hp.concept, hp.kc_samples, hp.kc_seed, progress=hp.progress
            ),
            label=f"{hp.concept}-{hp.layer}",
        )
        result = dissect(
            self.generator,
            hp.layer,
            self.segmenter,
            n=hp.dissect_samples,
            seed=hp.dissect_seed,
            z_dim=self.z_dim,
            cache_dir=hp.cache_dir,
            progress=hp.progress,
        )
        iou = result.layers[hp.layer].iou[:, result.vocabulary.index(hp.concept)]
        k_insert = insertion_values(hp.insertion, kc["k_c"], self.split, n=hp.kc_samples, progress=hp.progress)
        with torch.no_grad():
            self.k_c.copy_(kc["k_c"])
            self.k_insert.copy_(k_insert)
            self.presence.copy_(kc["presence"])
            self.iou.copy_(iou)
            if hp.init == "iou" and iou.max() > 0:
                self.alpha.copy_(iou / iou.max())
            else:
                self.alpha.fill_(0.5)
            self.prepared.fill_(True)

    @functools.cached_property
    def _identity(self) -> dict[str, str]:
        """What a checkpoint of this search must match; computed once (the networks are frozen)."""
        return {
            "concept": self.hparams.concept,
            "layer": self.hparams.layer,
            "generator": fingerprint(self.generator, code=False),
            "segmenter": fingerprint(self.segmenter, code=False),
            # what α, k_c and the IoU in the checkpoint were made with: a resumed run must report its own
            **{key: self.hparams[key] for key in ("kc_samples", "kc_seed", "dissect_samples", "dissect_seed", "init")},
            "insertion": self.hparams.insertion,
            "top_n": self.top_n,
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["causal_search"] = self._identity

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """α and k_c belong to one concept, layer and pair of networks: refuse a checkpoint of another search."""
        self.fit_step = int(checkpoint.get("global_step", 0))  # where a test of it sits on the fit's x-axis
        state = checkpoint.get("state_dict", {})
        if "k_c" in state and "k_insert" not in state:  # a checkpoint from before the insertion option inserted k_c
            state["k_insert"] = state["k_c"].clone()
        saved = checkpoint.get("causal_search")
        if saved is None:
            return
        saved = {"insertion": "k_c", **saved}
        mine = self._identity
        wrong = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if wrong:
            what = ", ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in wrong.items())
            raise InvalidValue(
                f"this checkpoint is from another causal search ({what}); nothing was run or written. Test or "
                "resume it with the config it was trained with (e.g. --config configs/causal/<concept>.yaml), and "
                "give each search its own checkpoint folder (ModelCheckpoint dirpath, as those configs do)"
            )

    def on_fit_start(self) -> None:
        self._to_device()
        tb_views.lay_out(self)
        if not bool(self.prepared):  # a resumed run has them from its checkpoint
            self.prepare()

    def on_validation_start(self) -> None:
        self._to_device()

    def on_test_start(self) -> None:
        self._to_device()
        tb_views.lay_out(self)
        if not bool(self.prepared):
            raise NotReady(
                "this CausalSearch has no trained α: run `python -m lightning_gd fit` first and test its checkpoint "
                "(`python -m lightning_gd test --config <the fit config> --ckpt_path <run>/checkpoints/last.ckpt`)"
            )
        if self.trainer.is_global_zero and (said := stale_checkpoint(self.out, self.ranking()[: self.top_n].tolist())):
            rank_zero_warn(said)

    @torch.no_grad()
    def training_locations(self, indices: torch.Tensor, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """(B, 2) per sample: its ablation location and its insertion location (−1: none), fixed per index."""
        missing = [j for j, i in enumerate(indices.tolist()) if i not in self._locations]
        if missing:
            sel = torch.tensor(missing, device=r.device)
            found = training_locations(
                self.split,
                self.segmenter,
                self.concept_index,
                self.k_insert,
                indices[sel],
                z[sel],
                r[sel],
                self.hparams.candidates,
                self.hparams.location_seed,
            )
            for j, loc in zip(missing, found.tolist()):
                self._locations[int(indices[j])] = (loc[0], loc[1])
        return torch.tensor([self._locations[int(i)] for i in indices.tolist()], device=r.device)

    def delta(self, z: torch.Tensor, r: torch.Tensor, locations: torch.Tensor) -> dict[str, torch.Tensor]:
        """δ_α and its two terms on a batch (`interventions.partial_effect`)."""
        return partial_effect(
            self.split, self.segmenter, self.concept_index, self.alpha, self.k_insert, z, r, locations
        )

    def training_step(self, batch, batch_idx: int):
        kind = self.device.type
        on = bool(self.hparams.get("bf16")) and (kind == "cpu" or (kind == "cuda" and torch.cuda.is_bf16_supported()))
        with torch.autocast("cuda" if kind == "cuda" else "cpu", dtype=torch.bfloat16, enabled=on):
            return self._training_step(batch)

    def _training_step(self, batch):
        indices, z = batch
        with torch.no_grad():
            r = self.split.h(z)
        locations = self.training_locations(indices, z, r)
        if not (locations >= 0).any():
            # nothing to learn from in this batch (no c, nowhere to insert it); a zero loss rather than None
            # keeps DDP ranks in step
            return self.alpha.sum() * 0
        terms = self.delta(z, r, locations)
        norm = self.alpha.norm()
        loss = -terms["delta"] + self.hparams.lam * norm
        B = len(z)
        self.log("train/loss", loss, batch_size=B, prog_bar=True)
        self.log("train/delta", terms["delta"], batch_size=B, prog_bar=True)
        self.log("train/ablation", terms["ablation"], batch_size=B)
        self.log("train/insertion", terms["insertion"], batch_size=B)
        self.log("train/alpha_norm", norm, batch_size=B)
        self.log("train/alpha_above_half", (self.alpha > 0.5).sum().float(), batch_size=B)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        with torch.no_grad():
            self.alpha.clamp_(0.0, 1.0)  # projection onto [0, 1]^U after each step

    def ranking(self) -> torch.Tensor:
        """Units by α, largest first; ties (e.g. several units clamped at 1) broken by IoU, then by index."""
        by_iou = self.iou_ranking()
        return by_iou[torch.sort(-self.alpha.detach().cpu()[by_iou], stable=True).indices]

    def iou_ranking(self) -> torch.Tensor:
        return torch.sort(-self.iou.detach().cpu(), stable=True).indices

    def on_train_epoch_end(self) -> None:
        top = self.ranking()[: self.top_n].to(self.previous_top.device)
        if (self.previous_top >= 0).all():
            turnover = self.top_n - len(set(top.tolist()) & set(self.previous_top.tolist()))
            self.log("train/top_n_turnover", float(turnover))
        self.previous_top.copy_(top)
        tb = self._tensorboard()
        if tb is not None:  # on the scalars' x-axis (steps), beside this epoch's scalars
            tb_views.log_alpha(tb, self.alpha, top.tolist(), tb_views.epoch_end_step(self))

    def _tensorboard(self):
        return tb_views.writer(self.logger) if self.trainer.is_global_zero else None

    def configure_optimizers(self):
        return torch.optim.Adam([self.alpha], lr=self.hparams.lr)

    def validation_step(self, batch, batch_idx: int) -> None:
        _, z = batch
        original, ablated = ace.ablation_counts(
            self.split, self.segmenter, z, self.ranking()[None].to(z.device), [self.top_n]
        )
        self.val_sums.update(torch.stack([original[self.concept_index], ablated[0, 0, self.concept_index]]))

    def on_validation_epoch_end(self) -> None:
        original, ablated = self.val_sums.compute()
        self.val_sums.reset()
        removed = float(1 - ablated / original) if original > 0 else 0.0
        self.log(f"val/removed_top{self.top_n}", removed, prog_bar=True)
        self._removed_val = self._removed_val if self.trainer.sanity_checking else removed

    def result(self) -> dict:
        """The search's answer: settings, the top-n units, and every unit's α and IoU, ranked by α."""
        order, alpha = self.ranking().tolist(), self.alpha.detach().cpu()
        return {
            "concept": self.hparams.concept,
            "layer": self.hparams.layer,
            "settings": dict(self.hparams),
            "presence": float(self.presence),
            "top_n": self.top_n,
            "top_units": order[: self.top_n],
            "units": [{"unit": u, "alpha": float(alpha[u]), "iou": float(self.iou[u])} for u in order],
            "epochs": self.current_epoch,
            "global_step": self.global_step,
            "diagnosis": diagnose(alpha, self.top_n, self.hparams.lam),
        }

    def save_result(self) -> Path:
        """α, k_c, IoU and the ranking as safetensors, the rest as JSON, under `out`."""
        tensors = {"alpha": self.alpha.detach(), "k_c": self.k_c, "iou": self.iou, "ranking": self.ranking()}
        with staged(self.out) as stage:
            save_atomic(tensors, stage / "alpha.safetensors")
            CausalSearchResult.from_document(self.result(), "the search's result").save(stage)
        return self.out

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            out, top = self.save_result(), ", ".join(str(u) for u in self.ranking()[: self.top_n].tolist())
            said = diagnose(self.alpha, self.top_n, self.hparams.lam)
            self._report = (
                f"{self.hparams.concept} @ {self.hparams.layer}: top-{self.top_n} units by α: {top}\n"
                f"{'warning: ' + said + chr(10) if said else ''}"
            )
            self.written = [out / "causal.json", out / "alpha.safetensors"]
            tb_views.log_fit_result(self, self._removed_val)

    def test_step(self, batch, batch_idx: int) -> None:
        indices, z = batch
        seed = self.hparams.location_seed
        orders = ace.with_random([self.ranking(), self.iou_ranking()], self.hparams.random_draws, seed)
        sums = ace.batch_sums(
            self.split,
            self.segmenter,
            z,
            indices,
            orders.to(z.device),
            self.sizes,
            self.top_n,
            self.k_insert,
            self.concept_index,
            seed,
        )
        for key, value in sums.items():
            self.test_sums[key].update(value)
        if self._grid_batch is None:
            self._grid_batch = (z[:8].detach(), ace.uniform_locations(indices[:8].cpu(), self.fm_size, seed))

    def on_test_epoch_end(self) -> None:
        sums = {key: metric.compute().cpu() for key, metric in self.test_sums.items()}
        for metric in self.test_sums.values():
            metric.reset()
        concepts, names = tuple(self.segmenter.concepts), self.ranking_names
        summary = ace.summarize(
            concepts, self.hparams.concept, names, self.sizes, sums["original"], sums["ablated"], sums, self.top_n
        )
        self.log_dict(tb_views.test_metrics(self, summary))
        if self.trainer.is_global_zero:
            summary |= {"layer": self.hparams.layer, "n_test": int(sums["count"])}
            summary["top_units"] = self.ranking()[: self.top_n].tolist()
            self._report, self.written = tb_views.write_test_result(self, summary, self._grid_batch)
        self._grid_batch = None

    def teardown(self, stage: str) -> None:
        """The result lines, once the progress bars are gone (the callbacks' teardown stops Rich's bar first)."""
        print(self._report, end="", flush=True)
        self._report = ""


def _check_settings(
    lam: float, init: str, top_n: int, candidates: int, random_draws: int, kc_samples: int, dissect_samples: int
) -> None:
    if lam < 0:
        raise InvalidValue(f"lam (λ, the weight of ‖α‖₂) must be ≥ 0, got {lam}")
    if init not in InitMode.__args__:
        raise InvalidValue(f"unknown init '{init}'; choose one of {', '.join(InitMode.__args__)}")
    if min(top_n, candidates, random_draws, kc_samples, dissect_samples) < 1:
        raise InvalidValue("top_n, candidates, random_draws, kc_samples and dissect_samples must be positive")
