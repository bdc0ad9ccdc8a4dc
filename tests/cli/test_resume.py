"""A causal search killed mid-run (SIGINT, SIGKILL) and resumed with `--ckpt_path last` ends with the α of an
uninterrupted run: `fit` writes last.ckpt after every epoch, and the search is deterministic given it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
seed_everything: 0
model:
  class_path: lightning_gd.causal.search.CausalSearch
  init_args:
    concept: dome
    layer: layer1
    generator: {{class_path: tests.helpers.CausalPlantedGenerator}}
    segmenter: {{class_path: tests.helpers.ColourSegmenter}}
    lr: 0.05
    top_n: 2
    kc_samples: 32
    dissect_samples: 32
    random_draws: 1
    cache_dir: null
    progress: false
    out: {out}
data:
  class_path: lightning_gd.latents.LatentDataModule
  init_args: {{n_train: 64, n_val: 8, n_test: 8, batch_size: 8}}
trainer:
  max_epochs: {epochs}
  default_root_dir: {out}  # where LightningCLI saves its config.yaml without a logger
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}/checkpoints, save_top_k: 1, save_last: true, every_n_epochs: 1}}
"""
EPOCHS = 40


def _fit(tmp: Path, name: str, *extra: str) -> subprocess.Popen:
    out = tmp / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(CONFIG.format(out=out, epochs=EPOCHS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "lightning_gd", "fit", "--config", str(out / "config.yaml"), *extra]
    # SIGINT back to its default in the child: a parent started in the background (nohup, `&`) passes it on
    # ignored, and Python then never raises KeyboardInterrupt
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _alpha(tmp: Path, name: str) -> torch.Tensor:
    return load_file(str(tmp / name / "alpha.safetensors"))["alpha"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("resume")
    run = _fit(tmp, "whole")
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output[-3000:]
    return tmp, _alpha(tmp, "whole")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_search_resumes_to_the_same_alpha(uninterrupted, sig):
    tmp, whole = uninterrupted
    name = f"killed-{sig.name}"
    run = _fit(tmp, name)
    last = tmp / name / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into a later epoch
    assert run.poll() is None, "the run ended before it could be interrupted: raise EPOCHS"
    run.send_signal(sig)
    output, _ = run.communicate(timeout=120)
    assert run.returncode != 0 and not (tmp / name / "alpha.safetensors").exists(), output[-2000:]
    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert 0 <= epoch < EPOCHS - 1  # killed with epochs left to do
    resumed = _fit(tmp, name, "--ckpt_path", "last")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    torch.testing.assert_close(_alpha(tmp, name), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [*sorted((ROOT / "configs/causal").glob("*.yaml")), *sorted((ROOT / "configs/paper").glob("causal-*.yaml")),
     ROOT / "lightning_gd/cli/default_fit.yaml"],
    ids=lambda path: path.stem,
)  # fmt: skip
def test_shipped_searches_write_last_ckpt_every_epoch(config):
    import yaml

    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    (ckpt,) = [c["init_args"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    # with save_top_k 0, Lightning writes last.ckpt only when training ends, and a killed search starts over
    assert ckpt["save_top_k"] >= 1 and ckpt["save_last"] is True and ckpt["every_n_epochs"] == 1
    # a second fit into the folder replaces last.ckpt: with Lightning's version counter it would write
    # last-v1.ckpt beside it, and `test --ckpt_path .../last.ckpt` would measure the first fit's α
    assert ckpt["enable_version_counter"] is False
