"""Lightning's own subcommands through `LightningCLI`: a config's model and data by `class_path`, overrides, and the
main job — `fit` without a config is the causal unit search for "tree" on the embedded world (the packaged
`default_fit.yaml`), which `test` then evaluates from its last checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gd import cli
from lightning_gd.cli.console import command
from lightning_gd.cli.lightning import CUSTOM_SCALARS, DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_repo(monkeypatch):
    """Run `cli.main` here as `python -m lightning_gd` would from the repository root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["lightning_gd"])


def test_print_config_shows_the_resolved_model(in_repo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", "configs/world/gan.yaml", "--model.init_args.r1_gamma", "0.5", "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "class_path: lightning_gd.world.gan.GANModule" in out
    assert "class_path: lightning_gd.world.data.SceneDataModule" in out
    assert "r1_gamma: 0.5" in out and "ema_kimg: 10.0" in out  # the override and the config file's values


def test_packaged_default_fit_config_is_the_tree_config():
    assert DEFAULT_CONFIG.read_text() == (ROOT / "configs" / "causal" / "tree.yaml").read_text()


@pytest.mark.parametrize(
    "extra, concept", [([], "tree"), (["--model.concept", "building"], "building")], ids=["bare", "override"]
)
def test_fit_without_config_prints_the_default_causal_search(in_repo, capsys, extra, concept):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", *extra, "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "class_path: lightning_gd.causal.search.CausalSearch" in out
    assert "class_path: lightning_gd.latents.LatentDataModule" in out
    assert f"concept: {concept}" in out


def test_a_named_config_replaces_the_default(in_repo, capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", "configs/world/gan.yaml", "--print_config"])
    out = capsys.readouterr().out
    assert "GANModule" in out and "CausalSearch" not in out and "LatentDataModule" not in out


def test_default_fit_then_test_runs_end_to_end(tmp_path, monkeypatch, capsys, caplog, recwarn, one_thread):
    """The README's first command, shrunk: `fit` with no config, then `test` on its last checkpoint, run from another
    folder (everything lands under it) through `cli.main`, what `python -m lightning_gd` calls. Each ends by listing
    the files it wrote (once), its TensorBoard run (test logs into its fit's) and the next command, with no
    third-party advert, device line or deprecation noise; with the output not a terminal (captured here, as a pipe
    or a file), a line per epoch and per quarter of the test instead of progress bars."""
    small = ["--model.kc_samples", "16", "--model.dissect_samples", "16", "--model.random_draws", "1"]
    small += ["--data.n_train", "8", "--data.n_val", "4", "--data.n_test", "4", "--data.batch_size", "4"]
    small += ["--model.eval_sizes", "[1, 20]", "--model.progress", "false", "--trainer.enable_progress_bar", "false"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning_gd"])

    cli.main(["fit", "--trainer.max_epochs", "2", *small])
    run_dir = tmp_path / "out" / "causal" / "tree-layer4"
    result = json.loads((run_dir / "causal.json").read_text())
    assert result["concept"] == "tree" and len(result["top_units"]) == 20 and len(result["units"]) == 256
    printed = capsys.readouterr().out
    assert "top-20 units by α" in printed
    epochs = [line for line in printed.splitlines() if line.startswith("epoch ")]
    assert [line.split(" done")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]  # a line per epoch
    assert "val/removed_top20" in epochs[1]
    assert "GPU available" not in printed and "v_num" not in printed and printed.count("wrote") == 1
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    listing = printed[printed.index("wrote:\n") :].splitlines()
    run = "tb_logs/causal-tree-layer4/version_0"
    assert listing[:5] == [
        "wrote:",
        "  out/causal/tree-layer4/causal.json",
        "  out/causal/tree-layer4/alpha.safetensors",
        f"  {ckpt.relative_to(tmp_path)}",
        f"TensorBoard run: {run}  (tensorboard --logdir {run})",
    ]
    view = f"tensorboard --logdir {run}, then open {CUSTOM_SCALARS}   (the search's result, δ and α by epoch)"
    assert listing[5] == f"next: {view}"
    again = command("test", "--trainer.max_epochs", "2", *small, "--ckpt_path", ckpt.relative_to(tmp_path))
    assert listing[6] == f"next: {again}   (ACE on held-out z)"  # the same search and data, its checkpoint
    assert listing[7].startswith("next: python -m lightning_gd context --causal out/causal/tree-layer4 --concept tree")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == {"alpha", "k_c", "k_insert", "iou", "presence", "prepared", "previous_top"}  # no networks
    small[small.index("--trainer.enable_progress_bar") + 1] = "true"  # not a terminal: lines all the same
    cli.main(["test", "--ckpt_path", str(ckpt), *small])
    printed = capsys.readouterr().out
    result = next(i for i, line in enumerate(printed.splitlines()) if "ablating the top-20 units removes" in line)
    assert printed.splitlines()[result].startswith("tree @ layer4: ablating")  # a line of its own
    assert printed.index("test: 1/1 batches in") < printed.index("tree @ layer4: ablating")
    assert "Testing" not in printed and printed.count("wrote") == 1 and "  out/causal/tree-layer4/ace.json" in printed
    assert "TensorBoard run: tb_logs/causal-tree-layer4/version_0" in printed  # the fit's run
    assert [p.name for p in (tmp_path / "tb_logs" / "causal-tree-layer4").iterdir()] == ["version_0"]
    events = EventAccumulator(str(tmp_path / run))
    events.Reload()
    fit_steps = [e.step for e in events.Scalars("val/removed_top20")]  # at each epoch's last step
    assert {e.step for e in events.Scalars("test/removed_top20_alpha")} == {fit_steps[-1] + 1}  # then the test
    assert "next: python -m lightning_gd paint --results out/causal --layer layer4" in printed
    assert not [r for r in caplog.records if "Tip:" in r.getMessage()]  # Lightning's adverts
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)]  # torch's deprecation inside Lightning
    summary = json.loads((run_dir / "ace.json").read_text())
    assert summary["sizes"] == [1, 20, 256] and set(summary["ablation_removed"]) >= {"alpha", "iou", "random_mean"}
    removed = summary["ablation_removed"]
    assert removed["alpha"][-1] == pytest.approx(removed["iou"][-1], abs=1e-6)  # every unit off: one intervention
    assert removed["alpha"][1] > removed["random_mean"][1] + 0.1  # the top-20 removes trees, 20 random units don't
    for name in ("ace_curve.png", "grid_ablation.png", "grid_insertion.png"):
        assert (run_dir / name).stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tb_logs"]  # relative to the working folder


def test_a_fit_that_is_not_a_causal_search_suggests_its_own_next_step(tmp_path, capsys):
    import time
    from types import SimpleNamespace

    from lightning_gd.cli.lightning import report_run

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"a checkpoint")
    callback = SimpleNamespace(last_model_path=str(ckpt), best_model_path="")
    trainer = SimpleNamespace(loggers=[], checkpoint_callback=callback, interrupted=False)
    gan = SimpleNamespace(hparams={"sizes": [128, 256]}, generator=object())
    report_run(SimpleNamespace(trainer=trainer, model=gan), ["fit", "--config", "gan.yaml"], time.time() - 5)
    printed = capsys.readouterr().out
    assert "dissect-checkpoints" in printed and "ACE" not in printed  # a GAN's fit has no ACE to test


@pytest.mark.parametrize("insertion, shown", [("q0.999", "--insertion q0.999"), ("k_c", None)])
def test_the_context_hint_after_fit_inserts_with_the_searchs_constant(tmp_path, capsys, insertion, shown):
    import time
    from types import SimpleNamespace

    from lightning_gd.cli.lightning import report_run

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"a checkpoint")
    callback = SimpleNamespace(last_model_path=str(ckpt), best_model_path="")
    trainer = SimpleNamespace(loggers=[], checkpoint_callback=callback, interrupted=False)
    hparams = {"concept": "tree", "layer": "layer4", "insertion": insertion}
    search = SimpleNamespace(hparams=hparams, out="out/causal/tree-layer4")
    report_run(SimpleNamespace(trainer=trainer, model=search), ["fit", "--model.insertion", insertion], time.time())
    hint = next(line for line in capsys.readouterr().out.splitlines() if "lightning_gd context" in line)
    assert hint.startswith("next: python -m lightning_gd context --causal out/causal/tree-layer4 --concept tree")
    assert (shown in hint) if shown else ("--insertion" not in hint)
