"""clipseg:DIR from the command line, end to end on CPU: `dissect`, two steps of the causal search's `fit` and
`context` on the embedded world's GAN, with a tiny random CLIPSeg folder as the segmenter and the world's own
concepts as prompts (configs/clipseg/world.txt). A random CLIPSeg says nothing about the images; the test
checks that every analysis runs on concepts given in words and reports them under their names and categories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_gd import zoo
from lightning_gd.cli import main
from lightning_gd.latents import latents
from lightning_gd.zoo.prompts import read_concepts
from tests.zoo.clipseg_folder import write_clipseg

pytestmark = pytest.mark.usefixtures("one_thread", "cli_debug")
VOCABULARY = Path(__file__).resolve().parents[2] / "configs" / "clipseg" / "world.txt"


@pytest.fixture(scope="module")
def spec(module_tmp) -> str:
    folder = module_tmp("clipseg")
    write_clipseg(folder)
    return f"clipseg:{folder}?concepts={VOCABULARY}"


def commonest_concept(spec: str) -> str:
    """The prompt that claims the most pixels of 8 world images (the search needs a concept that is present)."""
    G, seg = zoo.generator("world"), zoo.segmenter(spec)
    with torch.no_grad():
        labels = seg.labels(G(latents(range(8), G.z_dim, 0)))
    counts = torch.bincount(labels.flatten(), minlength=len(seg.concepts))[1:]  # the background left out
    return seg.concepts[1 + int(counts.argmax())]


def test_dissect_fit_and_context_with_concepts_in_words(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "dissect"
    main(["dissect", "--generator", "world", "--segmenter", spec, "--layers", "layer4", "--n", "8", "--batch_size",
          "4", "--top_k", "2", "--tb_dir", "null", "--out", str(out), "--cache_dir", "null"])  # fmt: skip
    doc = json.loads((out / "dissect.json").read_text())
    words = read_concepts(VOCABULARY)
    assert doc["vocabulary"]["names"] == ["background", *(c.name for c in words)]
    assert doc["vocabulary"]["categories"] == ["background", *(c.category for c in words)]
    page = (out / "report.html").read_text()
    assert all(f'"{c.name}"' in page for c in words) and '"part"' in page and '"material"' in page  # the browser's

    concept = commonest_concept(spec)
    search = tmp_path / "search"
    config = [
        "--model", "lightning_gd.causal.search.CausalSearch", "--model.init_args.generator", "world",
        "--model.init_args.segmenter", spec, "--model.init_args.concept", concept,
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

    context = tmp_path / "context"
    main(["context", "--generator", "world", "--segmenter", spec, "--concept", concept, "--layer", "layer4",
          "--causal", str(search), "--top_n", "4", "--n", "4", "--locations", "4", "--bootstrap", "10",
          "--overlays", "2", "--out", str(context), "--tb_dir", "null", "--cache_dir", "null",
          "--progress", "false"])  # fmt: skip
    found = json.loads((context / "context.json").read_text())
    assert found["settings"]["concept"] == concept and len(found["units"]) == 4
    assert set(found["by_background"]) <= {"background", *(c.name for c in words)}
