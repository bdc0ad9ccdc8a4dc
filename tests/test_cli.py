"""The command line: `python -m lightning_gd` lists and dispatches subcommands, rejects typos with the bad
name, and its fit → export-world chain produces weights that the world's loaders accept.

Subprocesses are few (each pays for importing torch): `--help`, an unknown subcommand, and one process that
runs the three tiny trainings and exports through `lightning_gd.cli.main`, the function `python -m` calls.
Config printing and typo errors run in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_gd import cli
from lightning_gd.world import CONCEPTS, load_feature_net, load_generator, load_segmenter
from lightning_gd.world.models import FeatureNet, Generator
from lightning_gd.world.weights import read_metadata

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "world"


def run_module(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_gd", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_help_lists_every_subcommand():
    proc = run_module("--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("usage: python -m lightning_gd <subcommand>")
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert {"fit", "validate", "test", "demo", "export-world", "world-card"} <= listed
    assert "Export a world model" in proc.stdout  # summaries come from the docstrings


def test_unknown_subcommand_fails_and_suggests_the_close_one():
    proc = run_module("demoo")
    assert proc.returncode != 0
    assert "unknown subcommand 'demoo'" in proc.stderr
    assert "Did you mean: demo?" in proc.stderr
    assert "export-world" in proc.stderr  # followed by the list of subcommands


@pytest.fixture
def in_repo(monkeypatch):
    """Run `cli.main` here as `python -m lightning_gd` would from the repository root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["lightning_gd"])


def test_print_config_shows_the_resolved_model(in_repo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", "configs/world/gan.yaml", "--model.init_args.g_width", "24", "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "class_path: lightning_gd.world.gan.GANModule" in out
    assert "class_path: lightning_gd.world.data.SceneDataModule" in out
    assert "g_width: 24" in out and "z_dim: 128" in out  # the override and the config file's values


@pytest.mark.parametrize(
    "argv, bad",
    [
        (["fit", "--config", "configs/world/gan.yaml", "--trainer.max_stepz", "3"], "max_stepz"),
        (["fit", "--config", "configs/world/gan.yaml", "--model.init_args.z_dimm", "3"], "z_dimm"),
        (["export-world", "--model", "gan", "--checkpoint", "x.ckpt", "--outt", "y"], "outt"),
    ],
    ids=["trainer-key", "model-key", "project-subcommand-key"],
)
def test_mistyped_key_exits_nonzero_naming_it(in_repo, capsys, argv, bad):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code not in (0, None)
    assert bad in capsys.readouterr().err


@pytest.mark.parametrize("head", [["gan"], ["--model", "gan"]], ids=["positional", "option"])
def test_export_world_takes_the_model_positionally_or_as_an_option(in_repo, tmp_path, head):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(FileNotFoundError, match=f"checkpoint not found: {missing}"):
        cli.main(["export-world", *head, "--checkpoint", str(missing)])
    with pytest.raises(ValueError, match="unknown world model 'gann'; choose one of gan, segmenter, features"):
        cli.main(["export-world", "gann", "--checkpoint", str(missing)])


# One process: fit each world model for two batches, export it, and report where everything went.
_CHAIN = r"""
import json, sys
from pathlib import Path
import lightning_gd.cli as cli

tmp = Path(sys.argv[1])
report = {}
run_lightning = cli.run_lightning

def capture(argv):
    lcli = run_lightning(argv)
    ckpt = lcli.trainer.checkpoint_callback
    report[argv[2]] = {"dirpath": str(ckpt.dirpath), "last": ckpt.last_model_path,
                       "global_step": lcli.trainer.global_step, "state": lcli.trainer.state.status.value}
    return lcli

cli.run_lightning = capture
# Speed only: the exporter's BatchNorm recalibration runs 20 x 128 samples (several seconds on a busy CPU); 2 x 32 here.
import functools, lightning_gd.world.export as export
export.recalibrate_batchnorm = functools.partial(export.recalibrate_batchnorm, batches=2, batch_size=32)
common = ["--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
          "--data.init_args.batch_size", "4", "--data.init_args.train_size", "16", "--data.init_args.val_size", "4",
          "--data.init_args.num_workers", "0", "--trainer.default_root_dir", str(tmp),
          "--trainer.logger.init_args.save_dir", str(tmp / "logs"),
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
jobs = {
    "gan": ["--trainer.max_steps", "4", "--model.init_args.g_width", "16", "--model.init_args.d_width", "8",
            "--model.init_args.num_val_z", "8"],
    "segmenter": ["--trainer.max_steps", "2", "--model.init_args.width", "4"],
    "features": ["--trainer.max_steps", "2", "--model.init_args.width", "4"],
}
for model, extra in jobs.items():
    config = f"configs/world/{model}.yaml"
    cli.main(["fit", "--config", config, *common, *extra])
    out = tmp / f"{model}.safetensors"
    cli.main(["export-world", model, "--checkpoint", report[config]["last"], "--out", str(out)])
    report[config]["exported"] = str(out)
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("cli_chain")
    proc = subprocess.run(
        [sys.executable, "-c", _CHAIN, str(tmp)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")][-1]
    report = json.loads(line[len("REPORT ") :])
    return tmp, {Path(k).stem: v for k, v in report.items()}


@pytest.mark.parametrize("model, steps", [("gan", 4), ("segmenter", 2), ("features", 2)])
def test_fit_writes_its_checkpoint_and_export_into_the_given_folder(chain, model, steps):
    tmp, report = chain
    run = report[model]
    assert run["state"] == "finished" and run["global_step"] == steps
    assert Path(run["dirpath"]).is_relative_to(tmp)
    last = Path(run["last"])
    assert last.is_file() and last.parent == Path(run["dirpath"])
    assert Path(run["exported"]) == tmp / f"{model}.safetensors"
    provenance = read_metadata(run["exported"])["provenance"]
    assert provenance["checkpoint"] == str(last) and provenance["global_step"] == steps


def test_exported_generator_loads_and_samples(chain):
    tmp, report = chain
    G = load_generator(report["gan"]["exported"])
    assert isinstance(G, Generator) and G.layer6[0].out_channels == 16 // 8
    assert read_metadata(report["gan"]["exported"])["kwargs"] == {"z_dim": 128, "width": 16}
    with torch.no_grad():
        x = G(G.sample_z(2, seed=0))
    assert x.shape == (2, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    # the exported generator is the EMA one, with recalibrated BatchNorm statistics (not the defaults)
    assert not torch.equal(G.layer1[1].running_var, torch.ones_like(G.layer1[1].running_var))


def test_exported_segmenter_loads_and_segments(chain):
    _, report = chain
    seg = load_segmenter(report["segmenter"]["exported"])
    assert seg.concepts == CONCEPTS
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    probs = seg.probs(x)
    assert probs.shape == (3, len(CONCEPTS), 64, 64)
    torch.testing.assert_close(probs.sum(1), torch.ones(3, 64, 64))
    labels = seg.labels(x)
    assert labels.shape == (3, 64, 64) and labels.dtype == torch.long
    assert torch.equal(labels, probs.argmax(1))


def test_exported_feature_net_loads_and_embeds(chain):
    _, report = chain
    net = load_feature_net(report["features"]["exported"])
    assert isinstance(net, FeatureNet)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    feats = net.forward_features(x)
    assert feats.shape == (3, 256)
    assert net(x).shape == (3, len(CONCEPTS), 4, 4)


# The main job: `fit` without a config is the causal unit search for "tree" on the embedded world.


def test_packaged_default_fit_config_is_the_tree_config():
    assert cli.DEFAULT_LIGHTNING_CONFIG.read_text() == (ROOT / "configs" / "causal" / "tree.yaml").read_text()


@pytest.mark.parametrize(
    "extra, concept", [([], "tree"), (["--model.concept", "building"], "building")], ids=["bare", "override"]
)
def test_fit_without_config_prints_the_default_causal_search(in_repo, capsys, extra, concept):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", *extra, "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "class_path: lightning_gd.causal.CausalSearch" in out
    assert "class_path: lightning_gd.latent_data.LatentDataModule" in out
    assert f"concept: {concept}" in out


def test_a_named_config_replaces_the_default(in_repo, capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", "configs/world/gan.yaml", "--print_config"])
    out = capsys.readouterr().out
    assert "GANModule" in out and "CausalSearch" not in out and "LatentDataModule" not in out


def test_default_fit_then_test_runs_end_to_end(tmp_path):
    """The README's first command, shrunk: `fit` with no config, then `test` on its last checkpoint."""
    small = ["--model.k_samples", "16", "--model.dissect_samples", "16", "--model.random_draws", "1"]
    small += ["--data.n_train", "8", "--data.n_val", "4", "--data.n_test", "4", "--data.batch_size", "4"]
    small += ["--model.eval_sizes", "[1, 20]", "--model.progress", "false", "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "lightning_gd", *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)

    fit = run("fit", "--trainer.max_epochs", "1", *small)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = tmp_path / "out" / "causal" / "tree-layer4"
    result = json.loads((run_dir / "causal.json").read_text())
    assert result["concept"] == "tree" and len(result["top_units"]) == 20 and len(result["units"]) == 128
    assert "top-20 units by α" in fit.stdout
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == {"alpha", "k", "iou", "presence", "prepared", "previous_top"}  # no frozen networks
    test = run("test", "--ckpt_path", str(ckpt), *small)
    assert test.returncode == 0, test.stderr[-3000:]
    summary = json.loads((run_dir / "ace.json").read_text())
    assert summary["sizes"] == [1, 20, 128] and set(summary["ablation_removed"]) >= {"alpha", "iou", "random_mean"}
    assert summary["ablation_removed"]["alpha"][-1] == pytest.approx(1.0, abs=0.02)  # every unit off: no tree left
    for name in ("ace_curve.png", "grid_ablation.png", "grid_insertion.png"):
        assert (run_dir / name).stat().st_size > 1000
