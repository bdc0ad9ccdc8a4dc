"""What the command line prints around the work: list options given as bare or comma-separated values, a short
`--help`, no third-party adverts or deprecation noise, and the dissection that `fit` finds in the cache `dissect`
filled (one default cache folder, one key)."""

from __future__ import annotations

import inspect
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lightning_gd import cli
from lightning_gd.causal.search import CausalSearch
from lightning_gd.cli.console import quiet_third_party
from lightning_gd.cli.lightning import DEFAULT_CONFIG
from lightning_gd.jobs.dissect import dissect as dissect_job

pytestmark = pytest.mark.usefixtures("one_thread", "cli_debug")

ROOT = Path(__file__).resolve().parents[2]


def printed_config(capsys, *argv: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    "given, layers",
    [
        ("layer4", ["layer4"]),
        ("layer3,layer4", ["layer3", "layer4"]),
        ("[layer4]", ["layer4"]),
        ("null", None),
        ("0,2", ["0", "2"]),
    ],  # children of an nn.Sequential are named "0", "2": names stay strings
)
def test_list_options_take_one_name_or_comma_separated_names(capsys, given, layers):
    assert printed_config(capsys, "dissect", "--layers", given)["layers"] == layers
    assert printed_config(capsys, "dissect", f"--layers={given}")["layers"] == layers


def test_every_list_option_takes_bare_values(capsys):
    assert printed_config(capsys, "context", "--units", "3,17")["units"] == [3, 17]
    assert printed_config(capsys, "context", "--units", "5")["units"] == [5]
    assert printed_config(capsys, "compare", "--dissections", "out/dissect")["dissections"] == ["out/dissect"]
    runs = printed_config(capsys, "causal-summary", "out/causal/tree-layer4")["runs"]  # positional, then bare
    assert runs == ["out/causal/tree-layer4"]


def test_dissect_help_is_short_and_says_what_networks_it_takes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dissect", "--help"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 150, len(text.splitlines())
    assert "torch.nn" not in text and "known subclasses" not in text  # no listing of every nn.Module class
    generator = text[text.index("  --generator GENERATOR") : text.index("  --generator_weights")]
    assert "world" in generator and "progan" in generator and "stylegan2" in generator and "class_path" in generator
    segmenter = text[text.index("  --segmenter SEGMENTER") : text.index("  --z_dim")]
    assert "upp" in segmenter and "ade20k" in segmenter


def test_quiet_third_party_drops_the_advert_device_lines_and_the_leafspec_warning_only(caplog):
    from pytorch_lightning.utilities import rank_zero_info
    from torch.utils._pytree import LeafSpec

    quiet_third_party()
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing an advert")
        rank_zero_info("GPU available: False, used: False")
        rank_zero_info("TPU available: False, using: 0 TPU cores")
        rank_zero_info("Restoring states from the checkpoint path at last.ckpt")
    assert [r.getMessage() for r in caplog.records] == ["Restoring states from the checkpoint path at last.ckpt"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()  # after simplefilter, as at the command line's start
        LeafSpec()  # what Lightning's _pytree does inside the sanity check
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another deprecation"]


def test_concept_and_layer_choose_the_search_and_its_folders(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["lightning_gd"])
    config = printed_config(capsys, "fit", "--concept", "door", "--layer=layer3")
    assert config["model"]["init_args"]["concept"] == "door" and config["model"]["init_args"]["layer"] == "layer3"
    assert config["model"]["init_args"]["out"] == "out/causal/door-layer3"
    assert config["trainer"]["logger"]["init_args"]["name"] == "causal-door-layer3"
    assert config["trainer"]["callbacks"][0]["init_args"]["dirpath"] == "out/causal/door-layer3/checkpoints"
    config = printed_config(capsys, "test", "--concept", "road")  # the other one keeps the default (layer4)
    assert config["model"]["init_args"]["out"] == "out/causal/road-layer4"
    with pytest.raises(ValueError, match="--concept and --layer choose the default search"):
        cli.main(["fit", "--config", "configs/causal/door.yaml", "--concept", "tree"])


# ----------------------------------------------------------------------------------------------- one cache


def test_one_default_cache_folder():
    """`dissect`, the causal search (its class and the packaged `fit` config), `context` and `paint` share it."""
    from lightning_gd.jobs.context import context
    from lightning_gd.jobs.paint import paint

    def default(fn, name="cache_dir"):
        return Path(inspect.signature(fn).parameters[name].default)

    fit_default = yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]["init_args"]["cache_dir"]
    assert default(dissect_job) == default(CausalSearch) == Path(fit_default) == default(context) == default(paint)


def test_fit_reads_the_dissection_that_dissect_cached(tmp_path, monkeypatch, capsys):
    """The README's two commands on the world GAN, shrunk to 40 samples: `dissect`, then the causal search's
    preparation with the same sample size, which must read the cached tallies and run no dissection pass."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "out" / "cache"
    cli.main(["dissect", "--n", "40", "--out", "out/dissect", "--tb_dir", "tb"])
    printed = capsys.readouterr().out
    assert "TensorBoard run: tb/dissect-layer4  (tensorboard --logdir tb/dissect-layer4)" in printed
    assert "  out/dissect/report.html" in printed and "  out/dissect/dissect.json" in printed
    concept = next(iter(json.loads(Path("out/dissect/dissect.json").read_text())["layers"]["layer4"]["summary"]
                        ["per_concept"]))  # fmt: skip
    assert f"next: python -m lightning_gd fit --concept {concept} --layer layer4" in printed
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["dissect_quantile"]

    def no_pass(*args, **kwargs):
        raise AssertionError("the causal search dissected the layer again instead of reading the cache")

    monkeypatch.setattr("lightning_gd.dissection.module.QuantilePass", no_pass)
    search = CausalSearch("tree", dissect_samples=40, kc_samples=8, out=tmp_path / "causal", progress=False)
    assert search.hparams.cache_dir == "out/cache"  # the default: the folder dissect wrote to
    search.prepare()
    iou = np.load("out/dissect/iou-layer4.npy")  # (U, C), the table dissect wrote
    tree = json.loads(Path("out/dissect/dissect.json").read_text())["vocabulary"]["names"].index("tree")
    torch.testing.assert_close(search.iou, torch.from_numpy(iou[:, tree]).float())
