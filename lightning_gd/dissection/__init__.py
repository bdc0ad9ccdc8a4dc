"""Dissection (paper §3.1): featuremaps → thresholds → tallies → IoU → labels, and its use over training
(unit emergence). `dissect` is the recipe, `DissectionModule` the recipe as a LightningModule, `Dissection` its
result."""

from lightning_gd.dissection.module import DissectionModule
from lightning_gd.dissection.recipe import dissect
from lightning_gd.dissection.results import Dissection, DissectSettings, LayerDissection

__all__ = ["DissectSettings", "Dissection", "DissectionModule", "LayerDissection", "dissect"]
