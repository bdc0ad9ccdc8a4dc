"""The λ rule of docs/causal.md ("Choosing λ"), run: for each concept, the largest of 0.1, 0.03 and 0.01 whose α
the search's own diagnosis accepts (neither collapsed nor saturated). It reads no test data: each probe is
`fit` alone with the concept's config and only λ changed.

    python docs/choose_lambda.py                      # tree building road door, into out/lambda/
    python docs/choose_lambda.py --concepts tree door --out out/lambda

Each probe runs in its own folder out/lambda/<concept>-<λ>/ (its `out/`, `tb_logs/` and fit.log; the k_c and
dissection cache is the repository's out/cache); a probe whose causal.json is already there is read, not run
again, so delete out/lambda after the generator changes (docs/reproduce.sh does). Prints the probe table
(largest α, units at α = 1 and above 0.5, the diagnosis, the validation removal by the top-20 at each validation
of the fit) and, per concept, the λ the rule picks against the one its config holds. Exit status 1 when a config
disagrees with the rule."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from lightning_gd.causal.diagnosis import diagnose

CANDIDATES = (0.1, 0.03, 0.01)
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "causal"


def probe(concept: str, lam: float, root: Path) -> dict:
    """Run (or read) one probe: `fit` of the concept's config with λ = lam, in root/<concept>-<lam>."""
    folder = root / f"{concept}-{lam:g}"
    result = folder / "out" / "causal" / f"{concept}-layer4" / "causal.json"
    if result.is_file():
        print(f"λ probe: {concept} λ = {lam:g}: read {result} (delete {root} to probe a new generator)", flush=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        config = str(CONFIGS / f"{concept}.yaml")
        cmd = [sys.executable, "-m", "lightning_gd", "fit", "--config", config, "--model.init_args.lam", f"{lam:g}"]
        # one k_c and dissection cache for every probe and for the searches after them
        cmd += ["--model.init_args.cache_dir", str(Path("out/cache").resolve())]
        print(f"λ probe: {concept} λ = {lam:g} ({folder})", flush=True)
        with open(folder / "fit.log", "w") as log:
            if subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode:
                sys.exit(f"the λ probe {concept} λ = {lam:g} failed: see {folder / 'fit.log'}")
    doc = json.loads(result.read_text())
    if float(doc["settings"]["lam"]) != lam:
        sys.exit(f"{result} was written with λ = {doc['settings']['lam']}, not {lam:g}: delete {folder} and rerun")
    alpha = [u["alpha"] for u in doc["units"]]
    verdict = diagnose(torch.tensor(alpha), int(doc["top_n"]), lam)
    return {
        "concept": concept,
        "lam": lam,
        "largest": max(alpha),
        "at_one": sum(a >= 1.0 for a in alpha),
        "above_half": sum(a > 0.5 for a in alpha),
        "diagnosis": verdict,
        "val_removed": val_removed(folder / "tb_logs" / f"causal-{concept}-layer4"),
    }


def val_removed(logs: Path) -> list[float]:
    """`val/removed_top20` of the newest TensorBoard run under `logs`, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(logs.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not runs:
        return []
    acc = EventAccumulator(str(runs[-1]))
    acc.Reload()
    if "val/removed_top20" not in acc.Tags().get("scalars", []):
        return []
    return [e.value for e in acc.Scalars("val/removed_top20")]


def config_lam(concept: str) -> float:
    return float(yaml.safe_load((CONFIGS / f"{concept}.yaml").read_text())["model"]["init_args"]["lam"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", nargs="+", default=["tree", "building", "road", "door"])
    ap.add_argument("--out", type=Path, default=Path("out/lambda"))
    args = ap.parse_args()
    rows, picked = [], {}
    for concept in args.concepts:
        for lam in CANDIDATES:
            row = probe(concept, lam, args.out.resolve())
            rows.append(row)
            if row["diagnosis"] is None:
                picked[concept] = lam
                break
    print("| concept | λ | largest α | units at α = 1 | units with α > 0.5 | diagnosis | val removed, each check |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        verdict = "accepted" if r["diagnosis"] is None else r["diagnosis"].split(":")[0]
        removed = ", ".join(f"{100 * v:.1f} %" for v in r["val_removed"]) or "-"
        print(
            f"| {r['concept']} | {r['lam']:g} | {r['largest']:.4g} | {r['at_one']} | {r['above_half']} | "
            f"{verdict} | {removed} |"
        )
    disagree = False
    for concept in args.concepts:
        rule, config = picked.get(concept), config_lam(concept)
        if rule is None:
            print(f"{concept}: no λ of {CANDIDATES} is accepted; configs/causal/{concept}.yaml has {config:g}")
            disagree = True
        elif rule != config:
            print(f"{concept}: the rule picks λ = {rule:g}; configs/causal/{concept}.yaml has {config:g}: update it")
            disagree = True
        else:
            print(f"{concept}: λ = {rule:g}, as configs/causal/{concept}.yaml has")
    sys.exit(1 if disagree else 0)


if __name__ == "__main__":
    main()
