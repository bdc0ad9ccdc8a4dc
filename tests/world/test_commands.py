"""The world's subcommands through the command line: `export-world` takes its model positionally or as an option
and refuses a wrong one, and the fit → export-world chain (three tiny trainings of the world's models with
`configs/world/*.yaml`) produces weights that the world's loaders accept.

The chain runs in this process through `lightning_gd.cli.main.main`, the function `python -m lightning_gd` calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lightning_gd import cli
from lightning_gd.world import CONCEPTS, load_feature_net, load_generator, load_segmenter
from lightning_gd.world.export import export, portable
from lightning_gd.world.models import FeatureNet
from lightning_gd.world.weights import read_metadata

pytestmark = pytest.mark.usefixtures("cli_debug")  # user errors raise (see conftest)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_repo(monkeypatch):
    """Run `cli.main` here as `python -m lightning_gd` would from the repository root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["lightning_gd"])


@pytest.mark.parametrize("head", [["gan"], ["--model", "gan"]], ids=["positional", "option"])
def test_export_world_takes_the_model_positionally_or_as_an_option(in_repo, tmp_path, capsys, head):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(FileNotFoundError, match=f"checkpoint not found: {missing}"):
        cli.main(["export-world", *head, "--checkpoint", str(missing)])
    # the command's `model` is typed: a wrong name is refused while parsing, naming it and the choices
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export-world", "gann", "--checkpoint", str(missing)])
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "gann" in err and all(name in err for name in ("gan", "segmenter", "features"))
    # the library function says the same, for callers that do not go through the command line
    with pytest.raises(ValueError, match="unknown world model 'gann'; choose one of gan, segmenter, features"):
        export("gann", missing)


# Fit each world model for two batches through the command line, export it, and report where everything went.
COMMON = [
    *("--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2"),
    *("--data.init_args.batch_size", "4", "--data.init_args.train_size", "16", "--data.init_args.val_size", "4"),
    *("--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false"),
    *("--trainer.enable_model_summary", "false"),
]
JOBS = {
    "gan": ["--trainer.max_steps", "4", "--model.init_args.sizes", "[16, 16, 16, 8, 8, 4]",
            "--model.init_args.d_widths", "[4, 8, 8, 8, 8]", "--model.init_args.num_val_z", "8",
            # the run's checkpoints only: the config's monitors (FID, emergence) are tested in test_callbacks.py
            "--trainer.callbacks", '[{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", '
            '"init_args": {"save_last": true}}]'],
    "segmenter": ["--trainer.max_steps", "2", "--model.init_args.width", "4"],
    "features": ["--trainer.max_steps", "2", "--model.init_args.width", "4"],
}  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, dict]:
    """In this process, through `lightning_gd.cli.main.main` (what `python -m lightning_gd` calls): `fit` with
    `configs/world/<model>.yaml`, then `export-world <model>` of its last checkpoint, for the three world models."""
    main_module = sys.modules["lightning_gd.cli.main"]  # the module; `lightning_gd.cli.main` is the function
    tmp = tmp_path_factory.mktemp("cli_chain")
    report: dict[str, dict] = {}
    run_lightning = main_module.run_lightning

    def capture(argv):
        lcli = run_lightning(argv)
        trainer = lcli.trainer
        report[argv[2]] = {
            "dirpath": str(trainer.checkpoint_callback.dirpath),
            "last": trainer.checkpoint_callback.last_model_path,
            "global_step": trainer.global_step,
            "state": trainer.state.status.value,
        }
        return lcli

    common = [*COMMON, "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp / "logs")]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setattr(sys, "argv", ["lightning_gd"])
        mp.setattr(main_module, "run_lightning", capture)
        torch.set_num_threads(1)
        try:
            for model, extra in JOBS.items():
                config = f"configs/world/{model}.yaml"
                cli.main(["fit", "--config", config, *common, *extra])
                out = tmp / f"{model}.safetensors"
                cli.main(["export-world", model, "--checkpoint", report[config]["last"], "--out", str(out)])
                report[config]["exported"] = str(out)
        finally:
            torch.set_num_threads(threads)
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
    # the run lies outside the working folder: the card keeps Lightning's <name>/<version>/checkpoints/<file>
    assert provenance["checkpoint"] == "/".join(last.parts[-4:]) and provenance["global_step"] == steps


def test_exports_record_no_absolute_path_of_the_training_machine(tmp_path, monkeypatch):
    run = tmp_path / "train" / "tb_logs" / "world_progan" / "version_0" / "checkpoints" / "step=14000.ckpt"
    monkeypatch.chdir(tmp_path)
    assert portable(run) == "train/tb_logs/world_progan/version_0/checkpoints/step=14000.ckpt"
    monkeypatch.chdir(tmp_path.parent)
    assert portable(run) == f"{tmp_path.name}/train/tb_logs/world_progan/version_0/checkpoints/step=14000.ckpt"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert portable(run) == "tb_logs/world_progan/version_0/checkpoints/step=14000.ckpt"
    assert portable(tmp_path / "runs" / "gan" / "version_3" / "checkpoints" / "last.ckpt") == (
        "gan/version_3/checkpoints/last.ckpt"
    )
    assert portable(tmp_path / "models" / "g.ckpt") == "g.ckpt"
    # the shipped weights say where they came from in the same form
    from lightning_gd.world.weights import default_path

    recorded = read_metadata(default_path("generator"))["provenance"]["checkpoint"]
    assert not Path(recorded).is_absolute() and recorded.startswith("tb_logs/")


def test_exported_generator_loads_and_samples(chain):
    """The export is the EMA generator, a ProGAN whose file the published-checkpoint loader reads too."""
    from lightning_gd import zoo
    from lightning_gd.models.weights import read_checkpoint, state_dict_of
    from lightning_gd.zoo.progan import ProGAN

    tmp, report = chain
    G = load_generator(report["gan"]["exported"])
    assert type(G) is ProGAN and G.sizes == (16, 16, 16, 8, 8, 4) and G[-1].tanh
    assert read_metadata(report["gan"]["exported"])["kwargs"] == {"sizes": [16, 16, 16, 8, 8, 4], "tanh": True}
    ema = state_dict_of(read_checkpoint(report["gan"]["last"]), "generator_ema", "ckpt")
    assert all(torch.equal(G.state_dict()[k], v) for k, v in ema.items()) and G.state_dict().keys() == ema.keys()
    with torch.no_grad():
        x = G(G.sample_z(2, seed=0))
        published = zoo.generator(f"progan:{report['gan']['exported']}")  # the authors' layout, read as such
        torch.testing.assert_close(published(G.sample_z(2, seed=0)).clamp(-1, 1), x)
    assert x.shape == (2, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0


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
