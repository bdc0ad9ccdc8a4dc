#!/usr/bin/env bash
# Every table and figure of the README and docs/ about the embedded world, by their own commands, in order:
# world samples and model cards, the λ rule's probes (it stops when a causal config disagrees with the rule), the
# causal searches (tree, building, road, door) and their summary, dissection
# (every layer, both threshold modes; after the searches, so the unit browser links them), context (door; tree with
# three insertion constants, whose table is out/context/insertion_table.md), unit
# emergence over the world GAN's checkpoints, artifact units, the browser and results-page screenshots and the
# painting screenshots. Figures are copied to docs/images/ under the names the docs/ pages show. Run from the
# repository root:
#
#   bash docs/reproduce.sh [CHECKPOINT_FOLDER]   # the world GAN's training checkpoints, for world-card and emergence
#   STEPS="causal dissect" bash docs/reproduce.sh  # only some steps (world lambda causal dissect context
#                                                  # emergence artifacts screenshots)
#
# Each step logs to out/reproduce/<step>.log. The last full run took 70 minutes on 2 CPU cores as two one-thread
# streams (OMP_NUM_THREADS=1; STEPS="world emergence artifacts", then "dissect" once the causal summary exists;
# and STEPS="lambda", then "causal context", then "screenshots" once the dissection exists): lambda 17 min (five
# probes), causal 26 min, context 25 min (of which the six tree insertion runs 20), world 18 min (FID of 34
# checkpoints), emergence 5 min, artifacts 8 min, dissect 4 min, screenshots under 1 min. The bench/ scripts are run separately (docs/development.md, "Benchmarks").
set -euo pipefail
CKPTS=${1:-tb_logs/world_close_progan/version_0/checkpoints}
STEPS=${STEPS:-world lambda causal dissect context emergence artifacts screenshots}
IMG=docs/images
LOGS=out/reproduce
mkdir -p "$IMG" "$LOGS"
gd() { python -m lightning_gd "$@"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo "== $1 ($(date +%H:%M:%S))"; }

if want world; then
  step world
  {
    gd demo --out "$IMG"
    ckpts=$(ls "$CKPTS"/step=*.ckpt | sort -t= -k2 -n | paste -sd, -)
    gd world-card --gan_checkpoints "[$ckpts]" --out lightning_gd/world/weights
  } > "$LOGS/world.log" 2>&1
fi

if want lambda; then
  step lambda
  rm -rf out/lambda  # probes of an earlier generator would be read again
  mkdir -p out/lambda
  python docs/choose_lambda.py --out out/lambda > "$LOGS/lambda.log" 2>&1 || {
    echo "the λ rule disagrees with a causal config (or a probe failed): see $LOGS/lambda.log" >&2
    exit 1
  }
  grep "^|" "$LOGS/lambda.log" > out/lambda/table.md
fi

if want causal; then
  step causal
  {
    for c in tree building road door; do
      gd fit --config "configs/causal/$c.yaml"
      gd test --config "configs/causal/$c.yaml" --ckpt_path "out/causal/$c-layer4/checkpoints/last.ckpt"
    done
    gd causal-summary "[out/causal/tree-layer4, out/causal/building-layer4, out/causal/road-layer4, out/causal/door-layer4]"
  } > "$LOGS/causal.log" 2>&1
  cp out/causal/causal_removal.png "$IMG/causal_removal.png"
  for c in tree building road door; do cp "out/causal/$c-layer4/ace_curve.png" "$IMG/causal_curve_$c.png"; done
  cp out/causal/tree-layer4/grid_ablation.png "$IMG/causal_grid_ablation_tree.png"
  cp out/causal/tree-layer4/grid_insertion.png "$IMG/causal_grid_insertion_tree.png"
fi

if want dissect; then
  step dissect
  {
    gd dissect --all_layers true --out out/dissect-quantile
    gd dissect --all_layers true --threshold iqr --out out/dissect-iqr
    gd compare --dissections "[out/dissect-quantile, out/dissect-iqr]" --names "[quantile, iqr]" --layer layer4
  } > "$LOGS/dissect.log" 2>&1
  cp out/dissect-quantile/layers.png "$IMG/dissect_layers_quantile.png"
  cp out/dissect-iqr/layers.png "$IMG/dissect_layers_iqr.png"
  cp out/dissect-quantile/concepts-layer4.png "$IMG/dissect_concepts_layer4_quantile.png"
  cp out/dissect-iqr/concepts-layer4.png "$IMG/dissect_concepts_layer4_iqr.png"
  cp out/compare/compare.png "$IMG/dissect_compare_layer4.png"
fi

if want context; then
  step context
  {
    gd context --causal out/causal/door-layer4 --locations 64 --trace true --out out/context/door
    gd context --causal out/causal/door-layer4 --locations 64 --region 2 --out out/context/door-r2
  } > "$LOGS/context.log" 2>&1
  cp out/context/door/context.png "$IMG/context_door.png"
  cp out/context/door-r2/context.png "$IMG/context_door_region2.png"
  cp out/context/door-r2/where.png "$IMG/context_door_where.png"
  cp out/context/door/trace.png "$IMG/context_door_trace.png"
  {
    runs=()
    for r in 1 2; do for ins in k_c "k_c*4" q0.999; do
      runs+=("out/context/tree-r$r-${ins/\*/x}")
      gd context --causal out/causal/tree-layer4 --locations 64 --region $r --insertion "$ins" --out "${runs[-1]}"
    done; done
    python docs/insertion_table.py "${runs[@]}" > out/context/insertion_table.md  # these six runs, in this order
  } > "$LOGS/insertion.log" 2>&1
fi

if want emergence; then
  step emergence
  gd dissect-checkpoints "$CKPTS" --prefix generator_ema --out out/emergence > "$LOGS/emergence.log" 2>&1
  for f in emergence emergence_heatmap emergence_units; do cp "out/emergence/$f.png" "$IMG/$f.png"; done
fi

if want artifacts; then
  step artifacts
  gd artifacts > "$LOGS/artifacts.log" 2>&1
  cp out/artifacts/unit_fid.png "$IMG/artifacts_unit_fid.png"
  cp out/artifacts/before_after.png "$IMG/artifacts_before_after.png"
fi

if want screenshots; then
  step screenshots
  {
    python docs/screenshots.py browser out/dissect-quantile/report.html --filter tree
    python docs/screenshots.py page out/causal/tree-layer4/index.html --name causal_page --height 1400
    LIGHTNING_GD_PAINT_RESULTS=out LIGHTNING_GD_PAINT_INSERTION=q0.999 LIGHTNING_GD_SCREENSHOTS=out/paint-shots \
      python -m pytest -q -o addopts="" \
      tests/paint/test_browser.py
    python docs/screenshots.py sequence out/paint-shots
  } > "$LOGS/screenshots.log" 2>&1
fi
echo "done ($(date +%H:%M:%S)); logs in $LOGS"
