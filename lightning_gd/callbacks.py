"""Callbacks for anyone's GAN training run.

`UnitEmergenceMonitor` watches concepts emerge in a generator layer while it trains (paper §S-6.6, Fig. 18):

    trainer = pl.Trainer(callbacks=[UnitEmergenceMonitor("nets.G", "layer4", every_n_batches=1000)])

It needs only the attribute path of the generator inside the LightningModule and a layer name. It measures
with `log_unit_emergence`, the plain-PyTorch entry point: the emergence measurement
(`lightning_gd.dissection.emergence.EmergenceModule`, the one `dissect-checkpoints` runs through its Trainer) run
in this process, so the training run's own Trainer is left alone, then written to TensorBoard
(`lightning_gd.reports.emergence`). `FIDMonitor` logs the FID of the generator, and optionally after ablating
artifact units, on the same schedule.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_gd import zoo
from lightning_gd.dissection.emergence import measure_unit_emergence
from lightning_gd.errors import InvalidValue, UnknownAttribute, WrongType
from lightning_gd.latents import latents
from lightning_gd.models.generators import default_layer, device_of, quiet_measurement, z_dim_of
from lightning_gd.models.hooks import Trace, resolve_layer
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import check_featuremap
from lightning_gd.reports.emergence import TAG, custom_scalars_layout, scalars, write_unit_emergence

__all__ = ["FIDMonitor", "UnitEmergenceMonitor", "log_unit_emergence", "resolve_attribute"]


def log_unit_emergence(
    generator: nn.Module,
    step: int,
    writer=None,
    layer: str | None = None,
    segmenter: Segmenter | str | None = None,
    history: list[dict] | None = None,
    n: int = 200,
    seed: int = 0,
    batch_size: int = 50,
    iou_threshold: float = 0.05,
    units: list[int] | None = None,
    num_units: int = 4,
    top_k: int = 4,
    z_dim: int | None = None,
    tag: str = TAG,
) -> dict:
    """Measure unit emergence in `layer` of `generator` now, in this process (`measure_unit_emergence`), and log
    it to `writer` (a SummaryWriter) at `step`.

    `history` (a list the caller keeps) receives the record, and feeds the units × time heatmap. The followed
    units, whose top images are shown, are `units`, else those of the history's first record, else the current
    top `num_units` (`top_units`). Under torch.distributed call it on every rank, with `writer=None` on all but
    one. Returns the record."""
    segmenter = zoo.segmenter(segmenter)
    fixed = list(units) if units is not None else list(history[0]["fixed_units"]) if history else None
    sample = {"n": n, "seed": seed, "batch_size": batch_size, "iou_threshold": iou_threshold, "top_k": top_k}
    m = measure_unit_emergence(generator, layer, segmenter, **sample, z_dim=z_dim, units=fixed, num_units=num_units)
    record = {"step": int(step), **m.record}
    if history is not None:
        history.append(record)
    if writer is not None:
        write_unit_emergence(writer, record, history or [record], m.images, tag)
    return record


def resolve_attribute(root: nn.Module, path: str, what: str = "generator") -> nn.Module:
    """`root.a.b.c` for path "a.b.c"; a wrong step names the object it failed on and lists that object's children."""
    obj: Any = root
    walked = type(root).__name__
    for part in path.split("."):
        if not part:
            raise InvalidValue(f"{what}={path!r} is not a dotted attribute path (e.g. 'generator' or 'nets.G')")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            children = [name for name, _ in obj.named_children()] if isinstance(obj, nn.Module) else []
            raise UnknownAttribute(
                f"{what}={path!r}: {walked} ({type(obj).__name__}) has no attribute {part!r}; "
                f"its children: {', '.join(children) or 'none'}"
            ) from None
        walked += f".{part}"
    if not isinstance(obj, nn.Module):
        raise WrongType(f"{what}={path!r} is a {type(obj).__name__}, not an nn.Module")
    return obj


def write_layout(trainer: pl.Trainer) -> None:
    """One custom-scalars layout for the run with a section from every monitor among its callbacks. TensorBoard
    reads one layout per run, the last written (`log_unit_emergence` writes its own section alone the first time),
    so each monitor writes the merged one after every measurement (a few hundred bytes)."""
    writer = next((lg.experiment for lg in trainer.loggers if _is_tensorboard(lg)), None)
    layout = {k: v for cb in trainer.callbacks if isinstance(cb, _EveryNBatches) for k, v in cb.layout().items()}
    if writer is not None and layout:
        writer.add_custom_scalars(layout)


class _EveryNBatches(pl.Callback):
    """Calls `measure(trainer, pl_module, batches)` (subclasses also give `layout()`, their section of the run's
    custom-scalars layout) every `every_n_batches` training batches and, if
    `at_train_end`, once more when training ends (unless the last batch was just measured). Batches, not
    `global_step`, which counts every optimiser step under manual optimisation; Lightning's batch progress
    survives resume."""

    every_n_batches: int
    at_train_end: bool = True
    history: list[dict]

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: int) -> dict | None:
        raise NotImplementedError

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.processed  # this batch included
        if batches % self.every_n_batches == 0:
            self.measure(trainer, pl_module, batches)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        if self.at_train_end and batches > 0 and (not self.history or self.history[-1]["batch"] != batches):
            self.measure(trainer, pl_module, batches)


class UnitEmergenceMonitor(_EveryNBatches):
    """Dissect one layer of the generator on a fixed probe sample every N training batches and at the end of
    training; log the measures to the run's TensorBoard (other loggers get the scalars only).

    Scheduled on training batches, not `global_step` (which counts every optimiser step under manual
    optimisation); measurements are plotted at `global_step`, the x-axis of Lightning's checkpoint names.
    It does not change training: its own seeded z, eval mode restored, no gradients, the RNG state untouched.

    Args:
        generator: attribute path of the generator inside the LightningModule (`generator`, `G`, `nets.G`).
        layer: the generator layer to dissect (a module name, as in `dict(generator.named_modules())`; default: the
            generator's default layer, the first of its `probe_layers`).
        segmenter: a zoo spec or a `lightning_gd.models.segmenters.Segmenter`; default: the embedded world's.
        every_n_batches: measure after every this many training batches.
        n: probe samples (the same z every time; seeded per index).
        seed: seed of the probe z.
        batch_size: probe samples per forward pass.
        iou_threshold: a unit is interpretable when its best IoU exceeds this.
        units: units whose top images are shown over time; default: the top `num_units` by IoU at the first
            measurement, then kept fixed.
        num_units: how many fixed units to show when `units` is not given (0: no images).
        top_k: top images per unit.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        tag: prefix of the logged tags (`<tag>/<layer>/...`).
        at_train_end: measure once more when training ends (unless the last batch was just measured).
    """

    def __init__(
        self,
        generator: str = "generator",
        layer: str | None = None,
        segmenter: Segmenter | str | None = None,
        every_n_batches: int = 1000,
        n: int = 200,
        seed: int = 0,
        batch_size: int = 50,
        iou_threshold: float = 0.05,
        units: list[int] | None = None,
        num_units: int = 4,
        top_k: int = 4,
        z_dim: int | None = None,
        tag: str = TAG,
        at_train_end: bool = True,
    ) -> None:
        for name, value, low in (("every_n_batches", every_n_batches, 1), ("n", n, 1), ("batch_size", batch_size, 1)):
            if not isinstance(value, int) or value < low:
                raise InvalidValue(f"UnitEmergenceMonitor: {name} must be an integer ≥ {low}, got {value!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise InvalidValue(f"UnitEmergenceMonitor: top_k must be an integer ≥ 1, got {top_k!r}")
        if not isinstance(num_units, int) or num_units < 0:
            raise InvalidValue(f"UnitEmergenceMonitor: num_units must be an integer ≥ 0, got {num_units!r}")
        if not 0.0 <= iou_threshold < 1.0:
            raise InvalidValue(f"UnitEmergenceMonitor: iou_threshold must be in [0, 1), got {iou_threshold}")
        if units is not None and any(not isinstance(u, int) or u < 0 for u in units):
            raise InvalidValue(f"UnitEmergenceMonitor: units must be non-negative unit indices, got {units}")
        if segmenter is not None and not isinstance(segmenter, (Segmenter, str)):
            raise WrongType(
                f"UnitEmergenceMonitor: segmenter must be a zoo spec or a Segmenter, got {type(segmenter).__name__} "
                "(wrap a network with lightning_gd.zoo.segmenter(net, concepts=[...], output=...))"
            )
        self.generator, self.layer, self.segmenter = generator, layer, segmenter
        self.every_n_batches, self.n, self.seed, self.batch_size = every_n_batches, n, seed, batch_size
        self.iou_threshold, self.units, self.num_units, self.top_k = iou_threshold, units, num_units, top_k
        self.z_dim, self.tag, self.at_train_end = z_dim, tag, at_train_end
        self.history: list[dict] = []
        self._z_dim = z_dim  # resolved from the generator at setup
        self._warned_no_tensorboard = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(generator=self.generator, layer=self.layer, tag=self.tag)

    # ------------------------------------------------------------------------------------------- setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        G = resolve_attribute(pl_module, self.generator)
        self.layer = self.layer if self.layer is not None else default_layer(G)
        resolve_layer(G, self.layer)  # LayerNotFoundError listing the valid layers
        self._z_dim = z_dim_of(G, self.z_dim)
        self.segmenter = zoo.segmenter(self.segmenter)
        if self.n < trainer.world_size:
            raise InvalidValue(
                f"UnitEmergenceMonitor: n={self.n} probe samples cannot be shared by {trainer.world_size} ranks"
            )
        self._dry_run(G)

    def _dry_run(self, G: nn.Module) -> None:
        """One probe sample now, so a layer that is no featuremap, a wrong z_dim or images outside [-1, 1] fail
        before training starts instead of after `every_n_batches` batches."""
        self.segmenter.to(device_of(G))
        with quiet_measurement(G, self.segmenter), Trace(G, self.layer) as tr:
            x = G(latents([0], self._z_dim, self.seed).to(device_of(G)))
        try:
            r = check_featuremap(tr.output, self.layer)
        except ValueError as err:
            raise InvalidValue(f"UnitEmergenceMonitor: {err}") from None
        if self.units is not None and max(self.units, default=-1) >= r.shape[1]:
            raise InvalidValue(f"UnitEmergenceMonitor: units {self.units} out of range; {self.layer} has {r.shape[1]}")
        with quiet_measurement(self.segmenter):
            self.segmenter.labels(x)  # checks the image range and shape

    # ------------------------------------------------------------------------------------------- measure

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: int) -> dict:
        """Measure now (every rank: the dissection reduces across them); log on rank 0."""
        writer = self._tensorboard(trainer) if trainer.is_global_zero else None
        G = resolve_attribute(pl_module, self.generator)
        # a generator in training overshoots [-1, 1] (the world ProGAN reached ±2.5 after 100 batches); the setup's
        # dry run has checked the range convention, so the images are clamped as a viewer would show them rather
        # than stopping the run
        clamp = G.register_forward_hook(_clamp_images)
        sample = {"n": self.n, "seed": self.seed, "batch_size": self.batch_size, "iou_threshold": self.iou_threshold}
        followed = {"units": self.units, "num_units": self.num_units, "top_k": self.top_k, "z_dim": self._z_dim}
        where = {"layer": self.layer, "segmenter": self.segmenter, "history": self.history, "tag": self.tag}
        try:
            record = log_unit_emergence(G, trainer.global_step, writer, **where, **sample, **followed)
        finally:
            clamp.remove()
        record["batch"] = int(batches)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if not _is_tensorboard(logger):
                    logger.log_metrics(scalars(record, self.tag), step=trainer.global_step)
            write_layout(trainer)
        return record

    def layout(self) -> dict:
        return custom_scalars_layout(self.layer, self.tag)

    def _tensorboard(self, trainer: pl.Trainer):
        for logger in trainer.loggers:
            if _is_tensorboard(logger):
                return logger.experiment
        if not self._warned_no_tensorboard:
            rank_zero_warn(
                "UnitEmergenceMonitor: the run has no TensorBoardLogger; logging scalars to the other loggers only "
                "(the history is in the callback's `history` and its checkpoint state)"
            )
            self._warned_no_tensorboard = True
        return None

    # ------------------------------------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history], "settings": self._settings()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("settings", {})
        if saved and saved != self._settings():
            changed = ", ".join(
                f"{k}: {saved.get(k)!r} → {v!r}" for k, v in self._settings().items() if saved.get(k) != v
            )
            rank_zero_warn(f"UnitEmergenceMonitor: resuming with other settings ({changed}); the history mixes them")
        self.history = [dict(r) for r in state_dict.get("history", [])]

    def _settings(self) -> dict[str, Any]:
        return {"layer": self.layer, "n": self.n, "seed": self.seed, "iou_threshold": self.iou_threshold}


def _clamp_images(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the generator's images clamped to [-1, 1]."""
    return output.clamp(-1.0, 1.0)


def _is_tensorboard(logger) -> bool:
    from pytorch_lightning.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


class FIDMonitor(_EveryNBatches):
    """FID of the generator during training on a fixed schedule and at the end (paper §4.2), and, when given
    artifact units or asked to find them (`find_artifacts` > 0, per-unit FID §S-6.1), the FID after ablating
    them, to TensorBoard (`<tag>/fid`, `<tag>/fid_ablated`) and any other logger. Computed on global rank 0 only
    (the other ranks go on training); the real-image statistics are computed once and cached.

    Args:
        generator: attribute path of the generator inside the LightningModule (`generator`, `G`, `nets.G`).
        every_n_batches: measure after every this many training batches.
        n: generated samples per FID (the same seeded z every time).
        seed: seed of those z.
        layer: the layer of the artifact units (needed with `artifact_units` or `find_artifacts`).
        artifact_units: units to ablate for the "after" FID.
        find_artifacts: if > 0, find this many highest per-unit-FID units of `layer` at every measurement
            (their top `top_k` of the n images each) and ablate those.
        top_k: top-activating images per unit for `find_artifacts`.
        feature_extractor: a zoo spec of the FID feature extractor: the default's (the embedded world's feature
            net: world FID), or `inception` (needs feature_extractor_weights_path).
        feature_extractor_weights_path: local weights of the extractor.
        real_images: a folder of real images (default: `real_n` images of the default real-image source, the
            world's renders).
        real_n: images of the default source for the real statistics.
        batch_size: images per forward pass.
        cache_dir: where the real statistics are cached.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        tag: prefix of the logged tags.
    """

    def __init__(
        self,
        generator: str = "generator",
        every_n_batches: int = 2000,
        n: int = 1000,
        seed: int = 5,
        layer: str | None = None,
        artifact_units: list[int] | None = None,
        find_artifacts: int = 0,
        top_k: int = 100,
        feature_extractor: str | None = None,
        feature_extractor_weights_path: str | None = None,
        real_images: str | None = None,
        real_n: int = 2000,
        batch_size: int = 100,
        cache_dir: str | None = "out/cache",
        z_dim: int | None = None,
        tag: str = "fid",
    ) -> None:
        for name, value in (("every_n_batches", every_n_batches), ("batch_size", batch_size), ("real_n", real_n)):
            if not isinstance(value, int) or value < 1:
                raise InvalidValue(f"FIDMonitor: {name} must be an integer ≥ 1, got {value!r}")
        if n < 2:
            raise InvalidValue(f"FIDMonitor: n must be at least 2 for a covariance, got {n}")
        if (artifact_units or find_artifacts) and layer is None:
            raise InvalidValue("FIDMonitor: artifact_units and find_artifacts need the layer they belong to")
        if find_artifacts < 0 or (find_artifacts and not 2 <= top_k <= n):
            raise InvalidValue(
                f"FIDMonitor: find_artifacts must be ≥ 0 and top_k in [2, n={n}], got {find_artifacts}, {top_k}"
            )
        self.generator, self.every_n_batches, self.n, self.seed = generator, every_n_batches, n, seed
        self.layer, self.artifact_units, self.find_artifacts, self.top_k = layer, artifact_units, find_artifacts, top_k
        self.feature_extractor, self.weights_path = feature_extractor, feature_extractor_weights_path
        self.real_images, self.real_n, self.batch_size, self.cache_dir = real_images, real_n, batch_size, cache_dir
        self.z_dim, self.tag = z_dim, tag
        self.history: list[dict] = []
        self._extractor = None
        self._real = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(generator=self.generator, tag=self.tag)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        G = resolve_attribute(pl_module, self.generator)
        self._z_dim = z_dim_of(G, self.z_dim)
        if self.layer is not None:
            resolve_layer(G, self.layer)
        # bad paths fail here
        self._extractor = zoo.feature_extractor(self.feature_extractor, weights_path=self.weights_path)
        if trainer.is_global_zero:  # a bad real-image folder fails now, not after every_n_batches batches
            self._real_statistics(device_of(G))

    def _real_statistics(self, device):
        if self._real is None:
            from lightning_gd.realism.fid import real_statistics

            self._extractor.to(device)
            if self.real_images is not None:
                source = zoo.real_images(f"folder:{self.real_images}")
            else:
                source = zoo.real_images(None, n=self.real_n)
            self._real = real_statistics(self._extractor, source, self.cache_dir, progress=False)
        return self._real

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: int) -> dict | None:
        if not trainer.is_global_zero:
            return None
        from lightning_gd.realism.artifacts import ablation_fid, per_unit_fid, scores_and_features

        G = resolve_attribute(pl_module, self.generator)
        record: dict[str, Any] = {"batch": int(batches), "step": int(trainer.global_step)}
        with quiet_measurement(G):
            real = self._real_statistics(device_of(G))
            if self.find_artifacts:
                scores, feats = scores_and_features(
                    G, self.layer, self._extractor, self.n, self.seed, self.batch_size, self._z_dim, progress=False
                )
                from lightning_gd.realism.fid import fid_to_real

                record["fid"] = fid_to_real(feats, real)
                unit_fid = per_unit_fid(scores, feats, real, self.top_k, progress=False)
                units = torch.sort(unit_fid, descending=True, stable=True).indices[: self.find_artifacts].tolist()
            else:
                record["fid"] = ablation_fid(
                    G, self.layer, [], self._extractor, real, self.n, self.seed, self.batch_size, self._z_dim
                )
                units = list(self.artifact_units or [])
            if units:
                record["artifact_units"] = units
                record["fid_ablated"] = ablation_fid(
                    G, self.layer, units, self._extractor, real, self.n, self.seed, self.batch_size, self._z_dim
                )
        self.history.append(record)
        metrics = {f"{self.tag}/fid": record["fid"]}
        if "fid_ablated" in record:
            metrics[f"{self.tag}/fid_ablated"] = record["fid_ablated"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        write_layout(trainer)
        return record

    def layout(self) -> dict:
        tags = [f"{self.tag}/fid", f"{self.tag}/fid_ablated"]  # FID, and after ablating the artifact units
        features = zoo.describe(self.feature_extractor, "feature_extractor")
        return {self.tag: {f"FID ({features} features), before/after ablation": ["Multiline", tags]}}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]
