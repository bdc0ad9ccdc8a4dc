"""One offline results page (`index.html`) per output folder of the causal search, emergence, artifact and
context jobs (`write_page`; the shared parts — finding results, links, HTML — are in `page_parts`): what each job
stored, as tables and the folder's figures. Each body returns (title, meta line, body)."""

from __future__ import annotations

from pathlib import Path

from lightning_gd.cache import atomic_write
from lightning_gd.errors import InvalidValue
from lightning_gd.reports.page_parts import (
    KINDS,
    PAGE,
    Result,
    dissection_labels,
    esc,
    figures,
    final_folder,
    label_cells,
    label_head,
    links,
    num,
    page,
    pct,
    read_result,
    related,
    table,
)


def causal_body(me: Result, final: Path) -> tuple[str, str, str]:
    """The top-n units by α with their α, IoU with the concept and what each dissection of the layer labels them;
    the ablation and insertion results of `test`; the ablation curve and the image grids."""
    search, ace = me.docs.get("causal.json", {}), me.docs.get("ace.json")
    concept, layer = (ace or search)["concept"], (ace or search)["layer"]
    top_n = (ace or search)["top_n"]
    settings = search.get("settings", {})
    meta = [f"generator <b>{esc(me.generator or 'not recorded')}</b>", f"layer <b>{esc(layer)}</b>", f"top-n = {top_n}"]
    if search:
        meta += [
            f"{search['epochs']} epochs, {search['global_step']} steps",
            f"λ = {settings.get('lam')}",
            f"{esc(concept)}'s share of the pixels {pct(search['presence'])}",
        ]
    body = [f"<p class='key'><b>Warning:</b> {esc(search['diagnosis'])}.</p>"] if search.get("diagnosis") else []
    if ace is not None:
        at_n, ins = ace["removed_at_top_n"], ace["insertion_at_top_n"]
        rand = at_n.get("random_mean")
        body.append(
            f"<p class='key'>Ablating the top-{top_n} units removes <b>{pct(at_n.get('alpha'))}</b> of the "
            f"{esc(concept)} pixels (units ranked by α), {pct(at_n.get('iou'))} (ranked by IoU) and "
            f"{pct(rand)} ± {pct(at_n.get('random_std'))} for {top_n} random units"
            f"{' (negative: more ' + esc(concept) + ' than before)' if rand is not None and rand < 0 else ''}; "
            f"measured on {ace.get('n_test', '?')} held-out samples.</p>"
        )
        rows = [[esc(name), num(v.get("ace")), pct(v.get("appeared"))] for name, v in ins.items()]
        body.append(
            f"<h2>Insertion at one location (units set to {esc(settings.get('insertion', 'k_c'))})</h2>"
            + table(["units", "insertion effect (ACE)", f"windows where {esc(concept)} appeared"], rows, {1, 2})
        )
    dissections = dissection_labels(me, final)
    units = search.get("units") or [{"unit": u} for u in (ace or {}).get("top_units", [])]
    head = ["rank", "unit", "α", f"IoU with {esc(concept)}, the search's dissection", *label_head(dissections)]
    rows = [
        [str(i + 1), str(u["unit"]), num(u.get("alpha")), num(u.get("iou")), *label_cells(u["unit"], dissections)]
        for i, u in enumerate(units[:top_n])
    ]
    samples = f" of {settings['dissect_samples']} samples" if settings.get("dissect_samples") else ""
    note = (
        f"The first IoU is each unit's IoU with {esc(concept)} in the dissection{samples} that initialised α; each "
        f"dissection found beside this folder gives the unit's best label there and its IoU with that label (often "
        f"not {esc(concept)}) on its own samples and threshold, so the IoUs agree only where the label is "
        f"{esc(concept)} and the dissections match. Labels in grey are below the dissection's interpretability cut; "
        "each label links to the unit's images in that dissection's unit browser."
        if dissections
        else "No dissection of this generator and layer was found beside this folder: run <code>dissect</code> "
        "into a sibling folder to see the units' labels here."
    )
    body.append(f"<h2>The top-{top_n} units by α</h2><p class='dim'>{note}</p>" + table(head, rows, {0, 1, 2, 3}))
    body.append(
        "<h2>Figures</h2>"
        + figures(
            me.folder,
            [
                ("ace_curve.png", "share of the concept removed against the number of units ablated, per ranking"),
                ("grid_ablation.png", f"ablating the top-{top_n} units (everywhere)"),
                ("grid_insertion.png", f"inserting the top-{top_n} units at one location (the marked window)"),
            ],
        )
    )
    return f"Causal units of {concept} in {layer}", " · ".join(meta), "".join(body)


def artifacts_body(me: Result, final: Path) -> tuple[str, str, str]:
    doc = me.docs["unit_fid.json"]
    ablation = doc["ablation"]
    ablated = ablation[1]["units"] if len(ablation) > 1 else []

    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "–"
        return f"{row[key]:.2f}" + (f" ± {row[key + '_std']:.2f}" if key + "_std" in row else "")

    focus = any("fid_focus" in r for r in ablation)
    rows = [[esc(r["ablation"]), cell(r, "fid"), *([cell(r, "fid_focus")] if focus else [])] for r in ablation]
    head = ["ablation", "FID, the evaluation sample", *(["FID, where the ablated units fire most"] if focus else [])]
    dissections = dissection_labels(me, final)
    fid = doc["unit_fid"]
    top = [[str(i + 1), str(u), f"{fid[u]:.1f}", *label_cells(u, dissections)] for i, u in enumerate(ablated)]
    meta = (
        f"generator <b>{esc(me.generator or 'not recorded')}</b> · layer <b>{esc(doc['layer'])}</b> · per-unit "
        f"FID of the top {doc['top_k']} of {doc['n']} images ({esc(doc.get('score', ''))}) · real images: "
        f"{esc(doc.get('real', '?'))} ({doc.get('real_n', '?')}) · {doc.get('n_eval', '?')} evaluation samples"
    )
    body = "<h2>FID before and after ablation</h2>" + table(head, rows, {1, 2})
    body += f"<h2>The {len(ablated)} ablated units (highest per-unit FID)</h2>" + table(
        ["rank", "unit", "per-unit FID", *label_head(dissections)], top, {0, 1, 2}
    )
    body += "<h2>Figures</h2>" + figures(
        me.folder,
        [
            ("unit_fid.png", "per-unit FID, units sorted from worst to best"),
            ("top_units.png", "the highest-FID units' top-activating images"),
            ("before_after.png", "the same samples: original, the top FID units ablated, random units ablated"),
        ],
    )
    return f"Artifact units of {doc['layer']}", meta, body


def emergence_body(me: Result, final: Path) -> tuple[str, str, str]:
    history = me.docs["emergence.json"]["history"]
    last = history[-1]
    concepts = [c for c in last["per_concept"] if any(r["per_concept"].get(c, 0) for r in history)]
    head = ["step", "checkpoint", "interpretable units", "distinct concepts", "mean IoU", *map(esc, concepts)]
    rows = [
        [
            str(r["step"]),
            esc(Path(str(r.get("checkpoint", ""))).name),
            f"{r['interpretable']} of {r['units']}",
            str(r["distinct_concepts"]),
            num(r["mean_iou"]),
            *[str(r["per_concept"].get(c, 0)) for c in concepts],
        ]
        for r in history
    ]
    fixed = ", ".join(str(u) for u in last.get("fixed_units", []))
    meta = (
        f"layer <b>{esc(last['layer'])}</b> · {len(history)} checkpoints · interpretable: best IoU > "
        f"{last['iou_threshold']:g} · units followed: {esc(fixed) or '–'}"
    )
    body = "<h2>Per checkpoint</h2>" + table(head, rows, set(range(2, len(head))))
    body += "<h2>Figures</h2>" + figures(
        me.folder,
        [
            ("emergence.png", "interpretable units, distinct concepts and mean IoU against training step"),
            ("emergence_heatmap.png", "best IoU of every unit at every checkpoint"),
            ("emergence_units.png", "the followed units' top image at each checkpoint"),
        ],
    )
    return f"Unit emergence in {last['layer']}", meta, body


def context_body(me: Result, final: Path) -> tuple[str, str, str]:
    doc = me.docs["context.json"]
    s = doc["settings"]
    rows = [
        [
            esc(name),
            num(r["effect"], 4),
            f"[{num(r['ci'][0], 4)}, {num(r['ci'][1], 4)}]",
            pct(r.get("appear_rate")),
            pct(r.get("appear_rate_guarded")),
            str(r["count"]),
        ]
        for name, r in doc["by_background"].items()
    ]
    free = f"{esc(s['concept'])}-free windows where it appears"
    head = ["background", "mean effect", "95 % interval", free, f"{free}, realism-guarded", "locations"]
    meta = (
        f"generator <b>{esc(me.generator or 'not recorded')}</b> · layer <b>{esc(s['layer'])}</b> · "
        f"{s['top_n']} units inserted at {s['region']}×{s['region']} locations of {s['n']} images"
    )
    body = "<h2>Effect by background</h2>" + table(head, rows, {1, 3, 4})
    body += "<h2>Figures</h2>" + figures(
        me.folder,
        [
            ("context.png", "insertion effect by the background at the location"),
            ("where.png", "the images with the most responsive locations, outlined"),
            ("trace.png", "how an insertion travels through the later layers"),
            ("trace_heatmap.png", "change of the last layer by insertion location"),
        ],
    )
    return f"Where {s['concept']} can be inserted in {s['layer']}", meta, body


BODIES = {"causal": causal_body, "artifacts": artifacts_body, "emergence": emergence_body, "context": context_body}


def write_page(folder: str | Path, refresh_related: bool = True, extra: tuple[Result, ...] = ()) -> Path:
    """Write `index.html` for the results in `folder` (a causal, artifacts, emergence or context folder, or
    the staging folder of one); with `refresh_related`, rewrite the pages already beside it of the same layer,
    so that they link back to this one."""
    folder = Path(folder)
    final = final_folder(folder)
    me = read_result(folder)
    if me is None or me.kind not in BODIES:
        raise InvalidValue(f"{folder} holds no {', '.join(sorted(BODIES))} result ({', '.join(KINDS)})")
    title, meta, body = BODIES[me.kind](me, final)
    path = folder / PAGE
    atomic_write(path, page(title, meta, body, links(final, me, extra)).encode())
    if refresh_related:
        # a staged folder is not in place yet: the pages refreshed now must still link to where it will be
        me_there = Result(me.kind, final, me.title, me.layers, me.generator, me.docs, PAGE)
        _rewrite_pages_beside(me, final, extra=(me_there,))
    return path


def refresh_pages_beside(folder: str | Path) -> list[Path]:
    """Rewrite the results pages already beside `folder` (same layer, same generator or none recorded) after a
    result that has no page of this kind was put there — a dissection written after the causal searches: their
    pages then list its labels and link to its unit browser. Returns the pages rewritten."""
    final = final_folder(Path(folder))
    me = read_result(final, strict=False)
    return [] if me is None else _rewrite_pages_beside(me, final)


def _rewrite_pages_beside(me: Result, final: Path, extra: tuple[Result, ...] = ()) -> list[Path]:
    """The pages that exist of the results related to `me` (at `final`), written again."""
    return [
        write_page(other.folder, refresh_related=False, extra=extra)
        for other, _ in related(me, final)
        if other.kind in BODIES and (other.folder / PAGE).is_file()
    ]
