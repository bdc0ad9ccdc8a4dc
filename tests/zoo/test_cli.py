"""The published layouts from the command line, end to end on CPU: `dissect`, a few steps of `fit` and `test` on a
tiny ProGAN-layout checkpoint with a tiny ADE20K-layout segmenter, and with a tiny Hugging Face model saved to a
folder. The checkpoints are written here, in the published key layouts, with random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_gd import zoo
from lightning_gd.cli import main
from lightning_gd.latents import latents
from lightning_gd.zoo.progan import ProGAN, preset
from tests.zoo import csail_layouts

pytestmark = pytest.mark.usefixtures("one_thread", "cli_debug")


@pytest.fixture(scope="module")
def progan_file(module_tmp) -> Path:
    torch.manual_seed(0)
    path = module_tmp("progan") / "proggan_tiny.pth"
    state = ProGAN(preset(32, 1 / 16)).state_dict()  # 32×32 images, layer4 32 units at 8×8
    state["output_32x32.conv.weight"] *= 0.2  # random N(0, 1) weights overshoot [-1, 1] far more than trained ones
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def ade20k_folder(module_tmp) -> Path:
    """A ResNet-18 + PPM deep-supervision pair in the CSAIL file layout (150 ADE20K classes)."""
    folder = module_tmp("m") / "ade20k-resnet18dilated-ppm_deepsup"
    folder.mkdir()
    torch.save(dict(csail_layouts.resnet(depths=(2, 2, 2, 2), bottleneck=False)), folder / "encoder_epoch_20.pth")
    torch.save(dict(csail_layouts.ppm_deepsup(num_class=150, fc=512)), folder / "decoder_epoch_20.pth")
    return folder


@pytest.fixture(scope="module")
def hf_folder(module_tmp) -> Path:
    from tests.zoo.test_hf import tiny_segformer

    folder = module_tmp("hf")
    tiny_segformer().save_pretrained(folder)
    return folder


def commonest_concept(generator: str, segmenter: str) -> str:
    G, seg = zoo.generator(generator), zoo.segmenter(segmenter)
    with torch.no_grad():
        labels = seg.labels(G(latents(range(8), G.z_dim, 0)))
    return seg.concepts[int(torch.bincount(labels.flatten()).argmax())]


@pytest.mark.parametrize("which", ["ade20k", "hf"])
def test_dissect_fit_and_test_on_published_layouts(which, progan_file, ade20k_folder, hf_folder, tmp_path):
    generator = f"progan:{progan_file}"
    # the ADE20K loader at the tiny images' own size, an option in the spec (its default, 456 px, only costs time)
    segmenter = f"ade20k:{ade20k_folder}?size=32" if which == "ade20k" else f"hf:{hf_folder}"
    out = tmp_path / "dissect"
    main(["dissect", "--generator", generator, "--segmenter", segmenter, "--layers", "layer4", "--n", "8",
          "--batch_size", "4", "--top_k", "2", "--tb_dir", "null", "--out", str(out),
          "--cache_dir", str(tmp_path / "cache")])  # fmt: skip
    doc = json.loads((out / "dissect.json").read_text())
    assert len(doc["layers"]["layer4"]["units"]) == 32 and doc["layers"]["layer4"]["featuremap_size"] == [8, 8]
    assert len(doc["vocabulary"]["names"]) == len(zoo.segmenter(segmenter).concepts)

    concept = commonest_concept(generator, segmenter)
    search = tmp_path / "search"
    config = [
        "--model", "lightning_gd.causal.search.CausalSearch", "--model.init_args.generator", generator,
        "--model.init_args.segmenter", segmenter, "--model.init_args.concept", concept,
        "--model.init_args.layer", "layer4", "--model.init_args.top_n", "4", "--model.init_args.kc_samples", "8",
        "--model.init_args.dissect_samples", "8", "--model.init_args.random_draws", "1",
        "--model.init_args.eval_sizes", "[1, 4]", "--model.init_args.cache_dir", "null",
        "--model.init_args.progress", "false", "--model.init_args.out", str(search),
        "--data", "lightning_gd.latents.LatentDataModule", "--data.init_args.n_train", "8",
        "--data.init_args.n_val", "4", "--data.init_args.n_test", "4", "--data.init_args.batch_size", "4",
        "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(search),
    ]  # fmt: skip
    main(["fit", *config])
    result = json.loads((search / "causal.json").read_text())
    assert result["concept"] == concept and len(result["top_units"]) == 4 and result["global_step"] == 2
    (ckpt,) = search.rglob("*.ckpt")
    main(["test", *config, "--ckpt_path", str(ckpt)])
    ace = json.loads((search / "ace.json").read_text())
    assert ace["concept"] == concept and ace["n_test"] == 4 and set(ace["removed_at_top_n"]) >= {"alpha", "iou"}
