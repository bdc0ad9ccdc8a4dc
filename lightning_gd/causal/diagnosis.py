"""What the end of an α search says about λ: the two ways a search can fail to rank units by their own effect.

- **Collapsed.** ‖α‖₂'s gradient has length λ whatever the effect is worth, so for a concept whose δ_α moves
  little per unit (rare, or spread over many units) every α can shrink towards 0: the top-n is then decided by
  differences of a few thousandths. On the world GAN's layer4 at λ = 0.1, the building search ends with every
  α below 0.001 (docs/causal.md, "Choosing λ").
- **Saturated.** More than n units at α = 1: the top-n among them is decided by the tie-break (IoU), not by α.

And what `test` can check against the fit: that the checkpoint it reads is the one `causal.json` was written from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_gd.results import CausalSearchResult, ResultError

COLLAPSED = 0.05  # every α below this: λ has shrunk the whole vector, no unit has grown away from 0
SATURATED = 0.999  # α at the top of its range (the projection clamps at 1)


def diagnose(alpha: torch.Tensor, top_n: int, lam: float) -> str | None:
    """A sentence on how λ shaped the α of a finished search, with the λ to try instead; None when α ranks the
    top-n units by itself (some α reached `COLLAPSED` and at most n units reached 1). A few large α and the rest
    near 0 is a sparse answer, not a collapse."""
    alpha = alpha.detach().float().cpu().flatten()
    n, largest, at_one = min(top_n, len(alpha)), float(alpha.max()), int((alpha >= SATURATED).sum())
    if largest < COLLAPSED:
        return (
            f"α collapsed: every α is below {COLLAPSED} (the largest {largest:.3g}), so λ = {lam:g} outweighs this "
            f"concept's effect and the top-{n} rests on tiny α differences; try a smaller λ "
            f"(--model.init_args.lam {lam / 10:g})"
        )
    if at_one > n:
        return (
            f"α saturated: {at_one} units reached α = 1, more than the top-{n}, so the IoU breaks their tie; try a "
            f"larger λ (--model.init_args.lam {lam * 3:g})"
        )
    return None


def stale_checkpoint(out: Path, top_units: list[int]) -> str | None:
    """When `test` reads a checkpoint whose top-n is not the one `out/causal.json` holds: a sentence saying so
    (another fit wrote that file, e.g. a later one into the same folder), or that the file is malformed (named,
    with its field); None when they agree or there is no file to compare with."""
    saved = Path(out) / "causal.json"
    if not saved.is_file():
        return None
    try:
        recorded = CausalSearchResult.load(saved).top_units
    except ResultError as err:
        return f"{err}; the test cannot check that its checkpoint is the one that file was written from"
    if list(recorded) == list(top_units):
        return None
    return (
        f"the checkpoint's top-{len(top_units)} units ({', '.join(map(str, top_units[:5]))}, …) are not those of "
        f"{saved} ({', '.join(map(str, recorded[:5]))}, …): it comes from another fit than the one that wrote that "
        "file; test the checkpoint of the fit you mean (its folder's last.ckpt)"
    )
