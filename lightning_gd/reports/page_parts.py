"""The shared parts of the results pages (`pages`): finding a folder's results and its related ones, links,
and the HTML frame. A page is built from the folder's own JSON files (the numbers shown are the ones stored,
never recomputed), and linked to the other results of the same generator and layer found beside it.

Images are referenced by relative path, not embedded: they are already PNG files in the same folder (embedding
would store each twice), and the links between pages are relative anyway, so a results folder is read as a
whole. Nothing is fetched from the network: no external script, style sheet or font.

Related results are looked for under the results root: the folder's parent, or its grandparent for the causal
search's default layout `out/causal/<concept>-<layer>`, one and two levels down. Results share a generator when
their JSON files name the same generator spec; a result that does not name one (a training run's checkpoints)
is linked by layer alone, and the link says so.
"""

from __future__ import annotations

import html
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from lightning_gd.results import CLASSES, ResultError

PAGE = "index.html"
SKIP = {"cache", "checkpoints", "tb_logs", "lightning_logs"}  # folders that never hold a result
KINDS = {
    "dissect.json": "dissection",
    "ace.json": "causal",
    "causal.json": "causal",
    "unit_fid.json": "artifacts",
    "emergence.json": "emergence",
    "context.json": "context",
}

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#555} table{border-collapse:collapse;margin:.5em 0} th{background:#eee;text-align:left}
th,td{padding:3px 9px;border-bottom:1px solid #ddd} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.dim{color:#999} .key{font-size:1.05em;background:#f6f8fa;padding:.6em 1em;border-left:4px solid #d62728}
figure{margin:1em 0} figure img{max-width:100%;image-rendering:pixelated;border:1px solid #eee}
figcaption{color:#555;font-size:.9em} nav a{margin-right:1.2em} ul.related li{margin:.2em 0}"""


@dataclass
class Result:
    """A results folder: what kind, of which generator (None: not recorded) and layers, and its page."""

    kind: str
    folder: Path
    title: str
    layers: list[str]
    generator: str | None
    docs: dict = field(default_factory=dict, repr=False)
    page_name: str | None = None  # the page it will have, for a folder still being written

    @property
    def page(self) -> Path:
        """The page to link to: the folder's HTML page when it has one, else its main JSON file."""
        if self.page_name is not None:
            return self.folder / self.page_name
        html_page = self.folder / ("report.html" if self.kind == "dissection" else PAGE)
        return html_page if html_page.is_file() else self.folder / next(iter(self.docs))


def relative_url(path: str | Path) -> str:
    """A relative path as a URL: quoted ("#" or "%" in a folder name), and never read as a scheme
    ("javascript:…") since it starts with "." or gets "./"."""
    url = quote(Path(path).as_posix())
    return url if url.startswith(".") else "./" + url


def read_result(folder: Path, strict: bool = True) -> Result | None:
    """The result a folder holds, from its JSON files read through their loaders (`lightning_gd.results`: each
    document checked, in its current layout); None when it holds none. A malformed file raises `ResultError`
    naming it and the field; with `strict=False` (a folder found beside the one whose page is written) it is
    named in a warning and the folder is left unlinked, so one broken neighbour does not stop a page."""
    docs = {}
    for name in KINDS:
        if (folder / name).is_file():
            try:
                docs[name] = CLASSES[name].load(folder / name).document()
            except (ResultError, OSError) as err:
                if strict:
                    raise
                warnings.warn(f"{err}; {folder} is not linked from the results pages", stacklevel=2)
    return _result(folder, docs) if docs else None


def _result(folder: Path, docs: dict) -> Result:
    kind = KINDS[next(iter(docs))]
    if kind == "dissection":
        s = docs["dissect.json"]["settings"]
        title, layers = f"dissection ({s.get('threshold')} threshold)", list(docs["dissect.json"]["layers"])
        return Result(kind, folder, title, layers, s.get("generator"), docs)
    if kind == "causal":
        doc = {**docs.get("causal.json", {}), **docs.get("ace.json", {})}
        generator = doc.get("generator") or doc.get("settings", {}).get("generator")
        return Result(kind, folder, f"causal units of {doc['concept']}", [doc["layer"]], generator, docs)
    if kind == "artifacts":
        doc = docs["unit_fid.json"]
        return Result(kind, folder, "artifact units (per-unit FID)", [doc["layer"]], doc.get("generator"), docs)
    if kind == "emergence":
        history = docs["emergence.json"]["history"]
        return Result(kind, folder, "unit emergence over training", [history[-1]["layer"]], None, docs)
    s = docs["context.json"]["settings"]
    return Result(kind, folder, f"where {s['concept']} can be inserted", [s["layer"]], s.get("generator"), docs)


def final_folder(folder: Path) -> Path:
    """Where a folder's files will live: writers fill a `.staging-*` folder that `lightning_gd.cache.staged`
    moves into its parent when the job succeeds, and the page's links must be relative to the parent."""
    folder = Path(folder).resolve()
    return folder.parent if folder.name.startswith(".staging-") else folder


# folders that hold one result per concept and layer (`out/causal/tree-layer4`, `out/context/door-layer4`): the
# results root of such a result is the folder above them, where the dissections and the other analyses are
FAMILY_FOLDERS = ("causal", "context")


def results_root(final: Path) -> Path:
    return final.parent.parent if final.parent.name in FAMILY_FOLDERS else final.parent


def find_results(root: Path) -> list[Result]:
    """Every result folder one or two levels under `root`, in path order."""
    found = []
    for level in ("*", "*/*"):
        for folder in sorted(root.glob(level)):
            parts = folder.relative_to(root).parts
            if folder.is_dir() and not any(p.startswith(".") or p in SKIP for p in parts):
                result = read_result(folder, strict=False)
                if result is not None:
                    found.append(result)
    return found


def related(me: Result, final: Path, extra: tuple[Result, ...] = ()) -> list[tuple[Result, bool]]:
    """Results of the same layer beside `final` (and `extra` ones): (result, same generator known) — those
    whose generator is recorded and differs are left out."""
    out, seen = [], {final}
    for other in [*find_results(results_root(final)), *extra]:
        if other.folder.resolve() in seen or not set(other.layers) & set(me.layers):
            continue
        seen.add(other.folder.resolve())
        if me.generator is None or other.generator is None:
            out.append((other, False))
        elif me.generator == other.generator:
            out.append((other, True))
    return out


# ----------------------------------------------------------------------------------------------- HTML pieces


def esc(value) -> str:
    return html.escape(str(value))


def pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells are already-escaped HTML, columns in `numeric` right-aligned."""
    cls = lambda i: ' class="num"' if i in numeric else ""  # noqa: E731
    th = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def figures(folder: Path, items: list[tuple[str, str]]) -> str:
    """The PNGs of the folder that exist, each linked to itself at full size, with its caption."""
    return "".join(
        f'<figure><a href="{esc(quote(name))}"><img src="{esc(quote(name))}" alt="{esc(caption)}"></a>'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for name, caption in items
        if (folder / name).is_file()
    )


def links(final: Path, me: Result, extra: tuple[Result, ...] = ()) -> str:
    items = []
    for other, same in related(me, final, extra):
        href = relative_url(os.path.relpath(other.page, final))
        where = Path(os.path.relpath(other.folder, results_root(final))).as_posix()
        note = "" if same else ' <span class="dim">(generator not recorded: same layer only)</span>'
        items.append(
            f'<li><a href="{esc(href)}">{esc(other.title)}</a> — {esc(", ".join(other.layers))}, '
            f"<code>{esc(where)}</code>{note}</li>"
        )
    if not items:
        return "<p class='dim'>No other results of this layer were found beside this folder.</p>"
    return '<ul class="related">' + "".join(items) + "</ul>"


def page(title: str, meta: str, body: str, related_html: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p class='meta'>{meta}</p>{body}"
        f"<h2>Related results</h2>{related_html}</body></html>\n"
    )


def dissection_labels(me: Result, final: Path) -> list[tuple[str, dict[int, dict], str]]:
    """Per dissection of the same generator and layer found beside `final`: (its name, unit → its entry in
    dissect.json, the address of the layer in its unit browser, to which a unit number is appended), so a page can
    show what dissection says about the units it lists and link each to its images."""
    layer = me.layers[0]
    out = []
    for other, _ in related(me, final):
        if other.kind == "dissection":
            units = other.docs["dissect.json"]["layers"][layer]["units"]
            name = f"{other.folder.name} ({other.docs['dissect.json']['settings'].get('threshold')})"
            browser = other.page.suffix == ".html"  # a dissection written without its page has none to link
            href = f"{relative_url(os.path.relpath(other.page, final))}#{quote(layer)}/" if browser else ""
            out.append((name, {u["unit"]: u for u in units}, href))
    return out


def label_cells(unit: int, dissections: list[tuple[str, dict[int, dict], str]]) -> list[str]:
    """Two cells per dissection: the unit's label, linked to the unit in that dissection's browser, and its IoU."""
    cells = []
    for _, units, href in dissections:
        entry = units.get(unit)
        if entry is None:
            cells += ["–", "–"]
            continue
        dim = "" if entry["interpretable"] else ' class="dim"'
        label = f"<span{dim}>{esc(entry['label'])}</span>"
        if href:
            label = f'<a href="{esc(href)}{unit}" title="the unit\'s images in the unit browser">{label}</a>'
        cells += [label, f"<span{dim}>{num(entry['iou'])}</span>"]
    return cells


def label_head(dissections: list[tuple[str, dict[int, dict], str]]) -> list[str]:
    return [h for name, _, _ in dissections for h in (f"label, {esc(name)}", f"IoU with the label, {esc(name)}")]
