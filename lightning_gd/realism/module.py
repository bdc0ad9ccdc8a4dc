"""Per-unit FID and the artifact ablations (paper §4.2, Tables 1–2; §S-6.1) as a LightningModule over the frozen
generator and FID feature extractor, run by a Trainer over the seeded latents (`ArtifactData`):

- `validate`, over the n samples of `seed`: every unit's score in every image (its maximum over the featuremap)
  and the image's FID features; each unit's top_k images (`TopK`: the ranks' lists merged, ties to the smaller
  sample index, as `artifacts.top_images`), the features of those images gathered (`SampleRows`), each unit's FID
  against the real statistics, the ranking, and the samples where the top n_ablate units fire most (the focus
  images of the paper's Table 1);
- `test`, over the n_eval samples of `eval_seed` and the focus images: the FID statistics (`FeatureMoments`) of
  every row of the ablation table (the original generator, the top units ablated, the user's units, their
  union, random draws).

Every state is reduced over the ranks, so `devices`, `num_nodes` and `strategy` change nothing in `result`. The
per-sample scores and features stay on the rank that made them (in RAM, or memory-mapped under `storage`)."""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning import LightningModule
from torch import nn
from torch.utils.data import DataLoader, Subset

from lightning_gd.causal.interventions import ablate
from lightning_gd.dissection.stats import SampleRows, TopK
from lightning_gd.errors import InvalidValue
from lightning_gd.latents import LatentDataModule, LatentDataset, UnpaddedShard, latents
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.hooks import Trace, resolve_layer
from lightning_gd.models.images import to_uint8
from lightning_gd.models.split import LayerSplit, check_featuremap
from lightning_gd.realism.artifacts import ablation_rows, ablation_sets, allocate, check_units, top_images_fid
from lightning_gd.realism.fid import Extractor, FeatureMoments, RealStatistics, statistics_to_fid

CHUNK = 4096  # local samples handed to a metric at once after the pass (memory-mapped rows are read in pieces)


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed() else (0, 1)


class ArtifactData(LatentDataModule):
    """The per-unit FID sample (validation: n of `seed`), the ablation sample (test: n_eval of `eval_seed`) and, as
    a second test loader, the focus images: samples of the per-unit FID sample chosen by `validate` (`focus`)."""

    focus: torch.Tensor | None = None

    def test_dataloader(self) -> list[DataLoader]:
        if self.focus is None:
            raise RuntimeError("the focus images are chosen by `validate`: run it before `test`")
        data = Subset(LatentDataset(self.hparams.n_val, self.z_dim, self.hparams.val_seed), self.focus.tolist())
        sampler = UnpaddedShard(data) if distributed() else None  # each focus image counted once
        focus = DataLoader(data, batch_size=self.hparams.batch_size, shuffle=False, sampler=sampler)
        return [super().test_dataloader(), focus]


class UnitFidModule(LightningModule):
    """Per-unit FID of `layer` and the ablation table:

        module = UnitFidModule(G, "layer4", extractor, real, n=10_000, top_k=1_000)
        data = module.datamodule()
        trainer.validate(module, data)  # per-unit FIDs, the ranking, the focus images
        trainer.test(module, data)  # module.result: {"unit_fid", "ranking", "rows", "top_images"}

    `lightning_gd.realism.artifacts.find_artifact_units` does this with or without a Trainer; its docstring
    describes the arguments."""

    def __init__(
        self,
        generator: nn.Module,
        layer: str,
        extractor: Extractor,
        real: RealStatistics,
        n: int = 10_000,
        top_k: int = 1_000,
        seed: int = 0,
        n_ablate: int = 20,
        units: list[int] | None = None,
        random_draws: int = 5,
        n_eval: int = 2_000,
        eval_seed: int = 1,
        batch_size: int = 100,
        z_dim: int | None = None,
        storage: str | Path | None = None,
    ) -> None:
        super().__init__()
        resolve_layer(generator, layer)  # unknown names fail here, listing the close ones
        if top_k > n:
            raise InvalidValue(
                f"top_k = {top_k} top images per unit, but only n = {n} samples: use top_k ≤ n (the paper: n/20)"
            )
        if top_k < 2:
            raise InvalidValue(f"top_k must be at least 2 for a covariance, got {top_k}")
        if eval_seed == seed:
            raise InvalidValue(f"eval_seed must differ from seed ({seed}): the ablation table is measured on other z")
        # submodules, so that the Trainer puts them on its device
        self.generator, self.features = generator, extractor.module
        self.extractor, self.real, self.layer = extractor, real, layer
        self.n, self.top_k, self.seed, self.n_ablate, self.units = n, top_k, seed, n_ablate, units
        self.random_draws, self.n_eval, self.eval_seed, self.batch_size = random_draws, n_eval, eval_seed, batch_size
        self.z_dim, self.storage = z_dim_of(generator, z_dim), storage
        self.found: dict | None = None  # after `validate`
        self.result: dict | None = None  # after `test`
        self._data: ArtifactData | None = None

    def datamodule(self) -> ArtifactData:
        self._data = ArtifactData(
            n_train=1,
            n_val=self.n,
            n_test=self.n_eval,
            batch_size=self.batch_size,
            train_seed=max(self.seed, self.eval_seed) + 1,
            val_seed=self.seed,
            test_seed=self.eval_seed,
            z_dim=self.z_dim,
        )
        return self._data

    # ------------------------------------------------------------------------------------- per-unit FID

    def on_validation_epoch_start(self) -> None:
        self._rank, self._world = rank_and_world()
        if min(self.n, self.n_eval, self.top_k) < self._world:
            raise InvalidValue(f"n={self.n}, n_eval={self.n_eval} cannot be shared by {self._world} ranks")
        if self.units:  # checked on one probe sample, before the long pass
            with torch.no_grad():
                z = latents([0], self.z_dim, self.seed).to(device_of(self.generator))
                probe = LayerSplit(self.generator, self.layer, self.z_dim, check=False).h(z)
            check_units(self.units, probe.shape[1], "units")
        self._scores = self._feats = self._tops = None

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        idx, z = batch
        with Trace(self.generator, self.layer) as tr:
            x = self.generator(z)
        with torch.autocast(z.device.type, enabled=False):  # FID features and scores in float32
            scores = check_featuremap(tr.output, self.layer).float().amax((2, 3))  # (B, U)
            feats = self.extractor(to_uint8(x.float())).float()  # (B, D)
        if self._tops is None:
            self._tops = TopK(scores.shape[1], self.top_k).to(scores.device)
            local = len(range(self._rank, self.n, self._world))
            folder = None if self.storage is None else Path(self.storage) / f"rank{self._rank}"
            self._scores = allocate(local, scores.shape[1], folder, "scores")
            self._feats = allocate(local, feats.shape[1], folder, "features")
        self._tops.update(scores, idx)
        pos = idx.cpu() // self._world  # this rank holds samples rank, rank + world, … (`UnpaddedShard`)
        self._scores[pos], self._feats[pos] = scores.cpu(), feats.cpu()

    def on_validation_epoch_end(self) -> None:
        top = self._tops.compute()[1].T.cpu()  # (K, U) sample indices, the same on every rank
        local = torch.arange(self._rank, self.n, self._world)
        wanted = torch.unique(top)  # ascending: the images in any unit's top K
        rows = SampleRows(wanted, (self._feats.shape[1],), torch.float32).to(device_of(self.generator))
        for part in torch.arange(len(local)).split(CHUNK):
            rows.update(local[part], self._feats[part].to(device_of(self.generator)))
        features = rows.compute().cpu()  # (M, D)
        with torch.inference_mode(False):  # copies that the caller may use outside the Trainer's inference mode
            unit_fid = top_images_fid(torch.searchsorted(wanted, top), features, self.real, progress=False).clone()
            top = top.clone()
        ranking = torch.sort(unit_fid, descending=True, stable=True).indices.tolist()
        fire = TopK(1, min(self.n_eval, self.n)).to(device_of(self.generator))
        for part in torch.arange(len(local)).split(CHUNK):
            most = self._scores[part][:, ranking[: self.n_ablate]].amax(1, keepdim=True)  # (c, 1)
            fire.update(most.to(device_of(self.generator)), local[part])
        focus = fire.compute()[1][0].cpu().sort().values  # as `artifacts.firing_most`: ties to the smaller index
        self.found = {"unit_fid": unit_fid, "ranking": ranking, "top_images": top, "focus": focus}
        self._dim = self._feats.shape[1]
        self._scores = self._feats = self._tops = None
        if self._data is not None:
            self._data.focus = focus

    # ------------------------------------------------------------------------------------- the ablation table

    def on_test_epoch_start(self) -> None:
        if self.found is None:
            raise RuntimeError("run `validate` (the per-unit FIDs and the ranking) before `test` (the ablation table)")
        rows, draws = ablation_sets(self.found["ranking"], self.n_ablate, self.units, self.random_draws, self.eval_seed)
        self._rows, self._draws = rows, draws
        self._sets = [units for _, units in rows] + draws
        # (loader, set): loader 0 the held-out sample, 1 the focus images
        keys = [(j, i) for j in (0, 1) for i in range(len(self._sets))]
        self._moments = {key: FeatureMoments(self._dim, self.real.mu).to(device_of(self.generator)) for key in keys}

    def test_step(self, batch: tuple, batch_idx: int, dataloader_idx: int = 0) -> None:
        _, z = batch
        for i, units in enumerate(self._sets):
            x = self._ablated(z, units)
            with torch.autocast(z.device.type, enabled=False):
                self._moments[(dataloader_idx, i)].update(self.extractor(to_uint8(x.float())))

    def on_test_epoch_end(self) -> None:
        fid = {key: float(statistics_to_fid(*m.compute(), self.real)) for key, m in self._moments.items()}
        measured = [{"fid": fid[(0, i)], "fid_focus": fid[(1, i)]} for i in range(len(self._sets))]
        rows = ablation_rows(self._rows, self._draws, measured[: len(self._rows)], measured[len(self._rows) :])
        self.result = {key: self.found[key] for key in ("unit_fid", "ranking", "top_images")} | {"rows": rows}
        self._moments = {}

    def _ablated(self, z: torch.Tensor, units: list[int]) -> torch.Tensor:
        """Images of z with `units` of the layer set to 0 everywhere (none: the generator as it is)."""
        if not units:
            return self.generator(z)

        def edit(r: torch.Tensor, layer: str) -> torch.Tensor:
            return ablate(r, units)

        with Trace(self.generator, self.layer, edit_output=edit, retain_output=False):
            return self.generator(z)
