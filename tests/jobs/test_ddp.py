"""`artifacts` and `context` on Lightning's engine: through `python -m lightning_gd ... --trainer.devices 2
--trainer.strategy ddp` (two gloo processes started by Lightning) they write what one process writes — per-unit
FIDs and the ablation table to 1e-6 with the same ranking, the context tables equal.

The networks are the tiny ones of `tests.helpers`; each sample is split unevenly over the ranks (21 = 11 + 10)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lightning_gd import zoo
from lightning_gd.cli import main
from lightning_gd.latents import latents
from lightning_gd.models.images import to_uint8
from tests.dissection.test_module import same_numbers
from tests.helpers import TinyConvGenerator, run_ddp_script, tiny_extractor

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")

DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


def artifacts_args(real: Path) -> list[str]:
    tiny = json.dumps({"class_path": "tests.helpers.TinyConvGenerator"})
    # n = 21 in batches of 4; every unit's top 3 may sit on either rank; 19 held-out and 19 focus images (and 24
    # real ones), more than the 16 features, so that every covariance has full rank: a rank-deficient one has
    # eigenvalues of rounding noise, whose square roots change with the order of the sums
    options = "--layer layer1 --n 21 --top_k 3 --n_ablate 2 --units [4] --random_draws 2 --n_eval 19 --batch_size 4"
    return ["artifacts", "--generator", tiny, *options.split(), "--real_images", str(real), "--cache_dir", "null"]


def context_args(causal: Path) -> list[str]:
    door = json.dumps({"class_path": "tests.helpers.DoorGenerator"})
    names = {"names": ["sky", "door", "building"]}
    seg = json.dumps({"class_path": "tests.helpers.ColourSegmenter", "init_args": names})
    options = "--layer layer1 --concept door --top_n 1 --n 9 --batch_size 2 --locations 20 --region 2 --trace true"
    quiet = "--bootstrap 50 --tb_dir null --progress false"
    networks = ["--generator", door, "--segmenter", seg, "--causal", str(causal)]
    return ["context", *networks, *options.split(), *quiet.split()]


_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import torch
from lightning_gd import zoo
from lightning_gd.cli import main
from tests.helpers import tiny_extractor

torch.set_num_threads(1)
zoo.feature_extractor = lambda *args, **kwargs: tiny_extractor()
ddp = {ddp!r}
# Lightning starts the second process at the first command's Trainer, running this script again
main([*{artifacts!r}, "--out", {out!r} + "/artifacts", *ddp])
main([*{context!r}, "--out", {out!r} + "/context", *ddp])
"""


def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of 'real' images (another tiny generator's) and a causal search's folder for the door unit."""
    real = tmp_path / "real"
    real.mkdir()
    with torch.no_grad():
        images = to_uint8(TinyConvGenerator(seed=1)(latents(range(24), 8, seed=5)))
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(real / f"{i:02d}.png")
    causal = tmp_path / "search"
    causal.mkdir()
    ranking = [{"unit": 1, "alpha": 1.0, "iou": 0.5}, {"unit": 2, "alpha": 0.0, "iou": 0.1}]
    search = {"concept": "door", "layer": "layer1", "settings": {}, "presence": 0.1, "top_n": 1, "top_units": [1]}
    search |= {"units": ranking, "epochs": 1, "global_step": 4}
    (causal / "causal.json").write_text(json.dumps(search))
    save_file({"k_c": torch.tensor([0.0, 1.0, 0.0])}, str(causal / "alpha.safetensors"))
    return real, causal


def scaled(rows: list[dict]) -> list[dict]:
    """The ablation rows with every FID in units of 1e-3 of the original generator's, so that `same_numbers`'s 1e-6
    is 1e-9 of the FID's size."""
    unit = rows[0]["fid"] * 1e-3
    out = []
    for row in rows:
        fids = {k: [f / unit for f in v] if k.endswith("_draws") else v / unit for k, v in row.items() if "fid" in k}
        out.append({**row, **fids})
    return out


def test_two_ddp_processes_measure_what_one_process_measures(tmp_path, monkeypatch):
    real, causal = inputs(tmp_path)
    ddp = tmp_path / "ddp"
    script = tmp_path / "ddp_analyses.py"
    text = _SCRIPT.format(
        root=str(ROOT), ddp=DDP, artifacts=artifacts_args(real), context=context_args(causal), out=str(ddp)
    )
    script.write_text(textwrap.dedent(text))
    proc = run_ddp_script(script, tmp_path)
    assert proc.stdout.count("highest per-unit FID") == 1  # one report per command: rank 0's

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(zoo, "feature_extractor", lambda *args, **kwargs: tiny_extractor())
    one = tmp_path / "one"
    main([*artifacts_args(real), "--out", str(one / "artifacts")])
    main([*context_args(causal), "--out", str(one / "context")])
    for job in ("artifacts", "context"):
        assert sorted(p.name for p in (one / job).iterdir()) == sorted(p.name for p in (ddp / job).iterdir()), job

    two_fid = json.loads((ddp / "artifacts" / "unit_fid.json").read_text())
    one_fid = json.loads((one / "artifacts" / "unit_fid.json").read_text())
    two_rows, one_rows = two_fid.pop("ablation"), one_fid.pop("ablation")
    same_numbers(two_fid, one_fid)  # per-unit FIDs to 1e-6, the ranking identical
    # the table's FIDs come from float64 sums added in another order: equal to 1e-9 of their size (FIDs in the
    # thousands here), the rows and their units identical
    same_numbers(scaled(two_rows), scaled(one_rows))
    assert len(set(one_fid["unit_fid"])) == len(one_fid["unit_fid"])  # distinct FIDs: the ranking is no tie-break
    assert [row["ablation"] for row in one_rows][2] == "user units (1)"

    two_ctx = json.loads((ddp / "context" / "context.json").read_text())
    one_ctx = json.loads((one / "context" / "context.json").read_text())
    for doc in (one_ctx, two_ctx):
        del doc["settings"]["seconds"]  # the only thing that may differ: how long it took
    same_numbers(two_ctx, one_ctx)
    assert set(one_ctx["by_background"]) == {"sky", "building"} and one_ctx["trace"]["layers"] == ["layer2", "layer3"]
