"""Causal unit search (paper §3.2, Eqs. 5–6; §S-6.4) as a Lightning training loop.

`CausalSearch` learns α ∈ [0, 1]^U, the only trainable parameter, for one concept c at one layer:

    loss = −δ_α + λ‖α‖₂,   δ_α = E[s_c(x_i')] − E[s_c(x_a')]

with `x_a' = f((1 − α) ⊙ r at P)` (partial ablation) and `x_i' = f(α ⊙ k + (1 − α) ⊙ r at P)` (partial
insertion), `s_c` the segmenter's soft probability of c averaged over the image pixels of the featuremap
location P. The generator and segmenter are frozen and live outside the module's state, so checkpoints hold
α, k_c and the IoU only. Per batch, `h(z)` runs once (no gradient); `f` and the segmenter run on the edited
featuremaps, forward and backward.

Training locations follow §S-6.4, fixed per sample index (so they do not depend on batch size, epoch or
rank): each sample contributes an ablation term at the location where c covers the most of its pixels (if c
is present) and an insertion term at the best of `candidates` random locations without c where setting all
units to k_c makes c appear (if any does). Each term is the one that the intervention can change there: an
ablation where c is absent, or an insertion where it is already present, changes nothing.

α starts at IoU_{u,c} / max_v IoU_{v,c} from a dissection of the layer (cached), is projected back to [0, 1]
after every optimiser step, and the answer is the top-n units of α. `test` measures the ablation curve and
the insertion effect on held-out z (`lightning_gd.ace`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pytorch_lightning import LightningModule
from torch import nn

from lightning_gd import ace
from lightning_gd.dissection import dissect, fingerprint, stage_key
from lightning_gd.generators import latents
from lightning_gd.interventions import (
    LayerSplit,
    at_locations,
    concept_means,
    coverage,
    intervene,
    location_mask,
)
from lightning_gd.io import atomic_write, cached_tensors, load_weights, save_atomic
from lightning_gd.segmenters import Segmenter
from lightning_gd.stats import TensorSum

INIT_MODES = ("iou", "uniform")


class CausalSearch(LightningModule):
    """Find the units of `layer` that cause `concept` by optimising a continuous intervention α.

    Args:
        concept: the concept to cause (a name in the segmenter's vocabulary).
        layer: the generator layer whose units are searched.
        generator: a generator module (class_path + init_args); default: the embedded world's GAN.
        generator_weights: state dict for `generator` (safetensors, or a torch file loaded with weights_only).
        segmenter: a `lightning_gd.segmenters.Segmenter`; default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        lam: λ, the weight of ‖α‖₂ in the loss (≥ 0).
        lr: Adam learning rate for α.
        init: `iou` (α_u = IoU_{u,c} / max IoU, §S-6.4) or `uniform` (all 0.5).
        top_n: size of the unit set reported, logged and evaluated.
        candidates: random locations tried per sample when looking for an insertion location.
        location_seed: seed of those locations and of the test's insertion locations.
        k_samples: samples for k_c, the per-unit mean activation where c is present.
        k_seed: seed of that sample.
        dissect_samples: samples of the dissection that gives the IoU (initialisation and IoU ranking).
        dissect_seed: seed of that dissection.
        eval_sizes: n of the test's ablation curve (default: 1, 2, 5, 10, 15, 20, 30, … up to U).
        random_draws: random unit sets per n in the test's baseline.
        out: folder for the result (α, ranking, ACE report); default `out/causal/<concept>-<layer>`.
        cache_dir: folder for cached k_c and dissection stages (None: no cache).
        progress: show progress bars for the preparation passes.
    """

    def __init__(
        self,
        concept: str = "tree",
        layer: str = "layer4",
        generator: nn.Module | None = None,
        generator_weights: Path | None = None,
        segmenter: Segmenter | None = None,
        z_dim: int | None = None,
        lam: float = 0.1,
        lr: float = 0.01,
        init: str = "iou",
        top_n: int = 20,
        candidates: int = 4,
        location_seed: int = 0,
        k_samples: int = 500,
        k_seed: int = 10,
        dissect_samples: int = 1000,
        dissect_seed: int = 0,
        eval_sizes: list[int] | None = None,
        random_draws: int = 3,
        out: Path | None = None,
        cache_dir: Path | None = Path("out/cache"),
        progress: bool = True,
    ) -> None:
        super().__init__()
        if lam < 0:
            raise ValueError(f"lam (λ, the weight of ‖α‖₂) must be ≥ 0, got {lam}")
        if init not in INIT_MODES:
            raise ValueError(f"unknown init '{init}'; choose one of {', '.join(INIT_MODES)}")
        if top_n < 1 or candidates < 1 or random_draws < 1 or k_samples < 1 or dissect_samples < 1:
            raise ValueError("top_n, candidates, random_draws, k_samples and dissect_samples must be positive")
        # paths as strings: checkpoints are read back with weights_only=True, which refuses pathlib objects
        out = None if out is None else str(out)
        cache_dir = None if cache_dir is None else str(cache_dir)
        generator_weights = None if generator_weights is None else str(generator_weights)
        self.save_hyperparameters(ignore=["generator", "segmenter"])
        from lightning_gd.world import load_generator, load_segmenter

        G = load_weights(generator, generator_weights) if generator is not None else load_generator(generator_weights)
        seg = segmenter if segmenter is not None else load_segmenter()
        G.eval().requires_grad_(False)
        seg.eval().requires_grad_(False)
        # a plain dict, not submodules: the frozen networks stay out of state_dict and checkpoints
        self.frozen = {"generator": G, "segmenter": seg}
        self.c = seg.concept_index(concept)
        self.split = LayerSplit(G, layer, z_dim)
        self.z_dim = self.split.z_dim
        with torch.no_grad():
            r = self.split.h(latents([0], self.z_dim, k_seed))
        U = r.shape[1]
        self.fm_size = tuple(r.shape[-2:])
        self.top_n = min(top_n, U)
        self.out = Path(out) if out is not None else Path("out/causal") / f"{concept}-{layer}"
        self.alpha = nn.Parameter(torch.zeros(U))  # (U,)
        self.register_buffer("k", torch.zeros(U))
        self.register_buffer("iou", torch.zeros(U))
        self.register_buffer("presence", torch.zeros(()))
        self.register_buffer("prepared", torch.zeros((), dtype=torch.bool))
        self.register_buffer("previous_top", torch.full((self.top_n,), -1, dtype=torch.long))
        self._locations: dict[int, tuple[int, int]] = {}
        self.sizes = ace.curve_sizes(U, eval_sizes, self.top_n)
        self.ranking_names = ["alpha", "iou", *[f"random{i}" for i in range(random_draws)]]
        C = len(seg.concepts)
        self.val_sums = TensorSum((2,))
        R = len(self.ranking_names)
        shapes = {"original": (C,), "ablated": (R, len(self.sizes), C), "after": (R,), "appeared": (R,)}
        shapes.update({key: () for key in ("before", "window", "count")})  # the sums of `ace.batch_sums`
        self.test_sums = nn.ModuleDict({key: TensorSum(shape) for key, shape in shapes.items()})
        self._grid_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ networks, preparation

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

    def _cached(self, stage: str, payload: dict, compute) -> dict[str, torch.Tensor]:
        cache = self.hparams.cache_dir
        key = stage_key(stage, self.hparams.layer, payload)
        path = Path(cache) / f"{stage}-{self.hparams.concept}-{self.hparams.layer}-{key}.safetensors" if cache else None
        return cached_tensors(path, compute, write=self._trainer is None or self._trainer.is_global_zero)

    def prepare(self) -> None:
        """k_c, the IoU of every unit with c, and α's initial value (each rank computes the same)."""
        hp = self.hparams
        ids = {"generator": fingerprint(self.generator), "segmenter": fingerprint(self.segmenter)}
        kc = self._cached(
            "k",
            {**ids, "concept": hp.concept, "n": hp.k_samples, "seed": hp.k_seed},
            lambda: concept_means(
                self.split, self.segmenter, hp.concept, hp.k_samples, hp.k_seed, progress=hp.progress
            ),
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
        with torch.no_grad():
            self.k.copy_(kc["k"])
            self.presence.copy_(kc["presence"])
            self.iou.copy_(iou)
            if hp.init == "iou" and iou.max() > 0:
                self.alpha.copy_(iou / iou.max())
            else:
                self.alpha.fill_(0.5)
            self.prepared.fill_(True)

    def _identity(self) -> dict[str, str]:
        return {
            "concept": self.hparams.concept,
            "layer": self.hparams.layer,
            "generator": fingerprint(self.generator),
            "segmenter": fingerprint(self.segmenter),
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["causal_search"] = self._identity()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """α and k_c belong to one concept, layer and pair of networks: refuse a checkpoint of another search."""
        saved = checkpoint.get("causal_search")
        if saved is None:
            return
        mine = self._identity()
        wrong = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if wrong:
            what = ", ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(
                f"this checkpoint is from another causal search ({what}); give each search its own checkpoint "
                "folder (trainer.callbacks ModelCheckpoint dirpath, as configs/causal/<concept>.yaml do)"
            )

    def on_fit_start(self) -> None:
        self._to_device()
        if not bool(self.prepared):  # a resumed run has them from its checkpoint
            self.prepare()

    def on_validation_start(self) -> None:
        self._to_device()

    def on_test_start(self) -> None:
        self._to_device()
        if not bool(self.prepared):
            raise RuntimeError(
                "this CausalSearch has no trained α: run `python -m lightning_gd fit` first and test its checkpoint "
                "(`python -m lightning_gd test --config <the fit config> --ckpt_path <run>/checkpoints/last.ckpt`)"
            )

    # ------------------------------------------------------------------ training locations

    @torch.no_grad()
    def training_locations(self, indices: torch.Tensor, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """(B, 2) per sample: its ablation location and its insertion location (−1: none), fixed per index."""
        missing = [j for j, i in enumerate(indices.tolist()) if i not in self._locations]
        if missing:
            sel = torch.tensor(missing, device=r.device)
            found = self._search_locations(indices[sel], z[sel], r[sel])
            for j, loc in zip(missing, found.tolist()):
                self._locations[int(indices[j])] = (loc[0], loc[1])
        return torch.tensor([self._locations[int(i)] for i in indices.tolist()], device=r.device)

    def _search_locations(self, indices: torch.Tensor, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        seg, c, m = self.segmenter, self.c, self.hparams.candidates
        present = coverage(seg.labels(self.split.f(r, z)) == c, self.fm_size).flatten(1)  # (B, hw)
        best, where = present.max(1)
        ablation_at = torch.where(best > 0, where, torch.full_like(where, -1))
        # m random locations without c per sample, from a generator seeded by the sample index
        gen = torch.Generator()
        choices = []
        for b, i in enumerate(indices.tolist()):
            gen.manual_seed(self.hparams.location_seed * 1_000_003 + int(i))
            weights = (present[b] == 0).float().cpu()
            if weights.sum() == 0:
                choices.append(torch.full((m,), -1, dtype=torch.long))
                continue
            picks = torch.multinomial(weights, min(m, int(weights.sum())), replacement=False, generator=gen)
            choices.append(torch.cat([picks, picks[:1].repeat(m - len(picks))]))
        choices = torch.stack(choices).to(r.device)  # (B, m)
        valid = choices >= 0
        flat = choices.clamp(min=0).flatten()  # (B·m,)
        everything = torch.ones(self.num_units, device=r.device)
        r_rep = r.repeat_interleave(m, 0)
        edited = intervene(r_rep, everything, location_mask(flat, self.fm_size), self.k)
        after = coverage(seg.labels(self.split.f(edited, z.repeat_interleave(m, 0))) == c, self.fm_size)
        gained = at_locations(after, flat).view(-1, m) * valid  # (B, m)
        top, arg = gained.max(1)
        insertion_at = torch.where(top > 0, choices.gather(1, arg[:, None])[:, 0], torch.full_like(top, -1).long())
        return torch.stack([ablation_at, insertion_at], 1)

    # ------------------------------------------------------------------ training

    def delta(self, z: torch.Tensor, r: torch.Tensor, locations: torch.Tensor) -> dict[str, torch.Tensor]:
        """δ_α and its two terms on a batch: the mean soft presence of c at the insertion locations after a
        partial insertion, minus the same at the ablation locations after a partial ablation."""
        a, i = locations[:, 0] >= 0, locations[:, 1] >= 0
        pa, pi = locations[a, 0], locations[i, 1]
        ra = intervene(r[a], self.alpha, location_mask(pa, self.fm_size))
        ri = intervene(r[i], self.alpha, location_mask(pi, self.fm_size), self.k)
        x = self.split.f(torch.cat([ra, ri]), torch.cat([z[a], z[i]]))
        s = at_locations(coverage(self.segmenter.probs(x)[:, self.c], self.fm_size), torch.cat([pa, pi]))
        zero = self.alpha.sum() * 0
        ablation = s[: len(pa)].mean() if len(pa) else zero
        insertion = s[len(pa) :].mean() if len(pi) else zero
        return {"delta": insertion - ablation, "ablation": ablation, "insertion": insertion}

    def training_step(self, batch, batch_idx: int):
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
        if tb is not None:
            tb.add_histogram("alpha", self.alpha.detach().cpu(), self.current_epoch)
            text = ", ".join(f"{u} ({float(self.alpha.detach()[u]):.2f})" for u in top.tolist())
            tb.add_text(f"top_{self.top_n}_units", text, self.current_epoch)

    def _tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter

        exp = getattr(self.logger, "experiment", None) if self.logger is not None else None
        return exp if isinstance(exp, SummaryWriter) and self.trainer.is_global_zero else None

    def configure_optimizers(self):
        return torch.optim.Adam([self.alpha], lr=self.hparams.lr)

    # ------------------------------------------------------------------ validation: the current top-n set

    def validation_step(self, batch, batch_idx: int) -> None:
        _, z = batch
        original, ablated = ace.ablation_counts(
            self.split, self.segmenter, z, self.ranking()[None].to(z.device), [self.top_n]
        )
        self.val_sums.update(torch.stack([original[self.c], ablated[0, 0, self.c]]))

    def on_validation_epoch_end(self) -> None:
        original, ablated = self.val_sums.compute()
        self.val_sums.reset()
        removed = float(1 - ablated / original) if original > 0 else 0.0
        self.log(f"val/removed_top{self.top_n}", removed, prog_bar=True)

    # ------------------------------------------------------------------ results

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
        }

    def save_result(self) -> Path:
        """α, k_c, IoU and the ranking as safetensors, the rest as JSON, under `out`."""
        self.out.mkdir(parents=True, exist_ok=True)
        save_atomic(
            {
                "alpha": self.alpha.detach().cpu(),
                "k": self.k.cpu(),
                "iou": self.iou.cpu(),
                "ranking": self.ranking(),
            },
            self.out / "alpha.safetensors",
        )
        atomic_write(self.out / "causal.json", json.dumps(self.result(), indent=1).encode())
        return self.out

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            out = self.save_result()
            top = ", ".join(str(u) for u in self.ranking()[: self.top_n].tolist())
            print(f"\n{self.hparams.concept} @ {self.hparams.layer}: top-{self.top_n} units by α: {top}")
            print(f"wrote {out / 'causal.json'} and {out / 'alpha.safetensors'}")

    # ------------------------------------------------------------------ test: ACE on held-out z

    def test_step(self, batch, batch_idx: int) -> None:
        indices, z = batch
        orders = ace.with_random(
            [self.ranking(), self.iou_ranking()], self.hparams.random_draws, self.hparams.location_seed
        )
        seed = self.hparams.location_seed
        sums = ace.batch_sums(
            self.split, self.segmenter, z, indices, orders.to(z.device), self.sizes, self.top_n, self.k, self.c, seed
        )
        for key, value in sums.items():
            self.test_sums[key].update(value)
        if self._grid_batch is None:
            self._grid_batch = (z[:8].detach(), ace.uniform_locations(indices[:8].cpu(), self.fm_size, seed))

    def on_test_epoch_end(self) -> None:
        sums = {key: metric.compute().cpu() for key, metric in self.test_sums.items()}
        for metric in self.test_sums.values():
            metric.reset()
        summary = ace.summarize(
            tuple(self.segmenter.concepts),
            self.hparams.concept,
            self.ranking_names,
            self.sizes,
            sums["original"],
            sums["ablated"],
            sums,
            self.top_n,
        )
        at_n = summary["removed_at_top_n"]
        self.log(f"test/removed_top{self.top_n}_alpha", at_n["alpha"])
        self.log(f"test/removed_top{self.top_n}_iou", at_n["iou"])
        self.log(f"test/removed_top{self.top_n}_random", at_n["random_mean"])
        self.log("test/insertion_ace_alpha", summary["insertion_at_top_n"]["alpha"]["ace"])
        if self.trainer.is_global_zero:
            from lightning_gd.reports.causal_report import write_ace

            summary["layer"] = self.hparams.layer
            summary["n_test"] = int(sums["count"])
            summary["top_units"] = self.ranking()[: self.top_n].tolist()
            write_ace(self, summary, self._grid_batch, self._tensorboard())
        self._grid_batch = None
