"""Results pages built from small fake result folders laid out as the jobs write them (`dissect/`,
`causal/tree-layer4/`, `artifacts/`, `emergence/`): the numbers on a page are the ones in its JSON files, the
dissection's labels appear beside the causal units, every link and image resolves to a file that exists, pages of
the same generator and layer link to each other (and only those), and nothing refers to the network — checked
on the HTML, and in headless Chromium (Debian's, through Playwright; nothing downloaded)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from lightning_gd.reports.figures import figure, save
from lightning_gd.reports.page_parts import PAGE, find_results
from lightning_gd.reports.pages import refresh_pages_beside, write_page

PNG = save(figure(0.3, 0.2), None)  # a real (blank) PNG: the browser must be able to decode it

LABELS = ["tree", "sky", "road", "tree", "building", "door"]
IOU = [0.31, 0.02, 0.12, 0.04, 0.09, 0.2]


def dissection(folder: Path, generator: str = "world", layer: str = "layer4", threshold: str = "quantile") -> None:
    units = [{"unit": u, "label": LABELS[u], "category": "object", "iou": IOU[u], "threshold": 1.0,
              "interpretable": IOU[u] > 0.05, "realistic": True} for u in range(6)]  # fmt: skip
    settings = {"layers": [layer], "threshold": threshold, "generator": generator}
    names = sorted(set(LABELS))
    summary = {"units": 6, "interpretable": 4, "distinct_concepts": 4, "mean_iou": 0.18,
               "per_concept": {"tree": 1, "road": 1, "building": 1, "door": 1}}  # fmt: skip
    doc = {"version": 1, "settings": settings, "vocabulary": {"names": names, "categories": ["object"] * len(names)},
           "layers": {layer: {"units": units, "summary": summary}}}  # fmt: skip
    write(folder, {"dissect.json": doc, "report.html": "<html></html>"})


def causal(folder: Path, generator: str | None = "world") -> None:
    search = {"concept": "tree", "layer": "layer4", "settings": {"lam": 0.1}, "presence": 0.047, "top_n": 3,
              "top_units": [5, 0, 3], "epochs": 4, "global_step": 128,
              "units": [{"unit": 5, "alpha": 1.0, "iou": 0.0437}, {"unit": 0, "alpha": 0.8891, "iou": 0.31},
                        {"unit": 3, "alpha": 0.4, "iou": 0.04}, {"unit": 1, "alpha": 0.0, "iou": 0.0}]}  # fmt: skip
    ace = {"concept": "tree", "layer": "layer4", "top_n": 3, "presence": 0.0469, "sizes": [1, 3, 6], "n_test": 200,
           "ablation_removed": {}, "removed_at_top_n": {"alpha": 0.9784, "iou": 0.9247, "random_mean": -0.1689,
                                                        "random_std": 0.2108},
           "insertion_at_top_n": {"alpha": {"ace": 0.0724, "appeared": 0.05}}, "top_units": [5, 0, 3]}  # fmt: skip
    if generator is not None:
        ace["generator"] = generator
    write(folder, {"causal.json": search, "ace.json": ace, "ace_curve.png": PNG, "grid_ablation.png": PNG})


def artifacts(folder: Path, generator: str = "world") -> None:
    doc = {"layer": "layer4", "n": 600, "top_k": 60, "score": "max activation", "generator": generator,
           "ranking": [4, 2, 0, 1, 3, 5], "unit_fid": [300.5, 280.0, 410.25, 250.0, 520.75, 200.0],
           "ablation": [{"ablation": "original", "units": [], "fid": 194.482},
                        {"ablation": "top-2 FID units", "units": [4, 2], "fid": 213.11},
                        {"ablation": "2 random units (2 draws)", "units": [[0, 1], [3, 5]], "fid": 219.18,
                         "fid_std": 26.07}]}  # fmt: skip
    write(folder, {"unit_fid.json": doc, "unit_fid.png": PNG, "before_after.png": PNG})


def emergence(folder: Path) -> None:
    history = [{"step": s, "checkpoint": f"/ckpts/step={s}.ckpt", "layer": "layer4", "units": 6, "interpretable": k,
                "distinct_concepts": d, "mean_iou": m, "per_concept": {"tree": k, "sky": 0}, "iou_threshold": 0.05,
                "fixed_units": [0, 5]} for s, k, d, m in ((100, 2, 1, 0.058), (200, 4, 2, 0.0831))]  # fmt: skip
    write(folder, {"emergence.json": history, "emergence.png": PNG})


def write(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content if isinstance(content, str) else json.dumps(content)
        (folder / name).write_bytes(data) if isinstance(data, bytes) else (folder / name).write_text(data)


def references(page: Path) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]*)"', page.read_text())


def assert_offline_and_resolving(page: Path) -> None:
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "//" not in "".join(references(page))
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    for ref in references(page):
        assert (page.parent / ref.split("#")[0]).is_file(), ref  # a fragment names a unit inside the page


@pytest.fixture
def root(tmp_path):
    dissection(tmp_path / "dissect")
    dissection(tmp_path / "dissect-other", generator="progan:bedroom.pth")
    causal(tmp_path / "causal" / "tree-layer4")
    artifacts(tmp_path / "artifacts")
    artifacts(tmp_path / "artifacts-other", generator="progan:bedroom.pth")
    emergence(tmp_path / "emergence")
    (tmp_path / "cache").mkdir()
    dissection(tmp_path / "cache" / "stale")  # caches are never results
    return tmp_path


def test_causal_page_shows_the_stored_numbers_and_the_dissection_labels(root):
    page = write_page(root / "causal" / "tree-layer4")
    text = page.read_text()
    assert page == root / "causal" / "tree-layer4" / PAGE
    assert "Causal units of tree in layer4" in text
    assert "97.8%" in text and "92.5%" in text and "-16.9% ± 21.1%" in text and "200 held-out samples" in text
    assert "Insertion at one location (units set to k_c)" in text  # a result that names no constant inserted k_c
    rows = re.findall(r"<tr><td[^>]*>(\d+)</td><td[^>]*>(\d+)</td><td[^>]*>([\d.]+)</td>", text)
    assert rows == [("1", "5", "1.000"), ("2", "0", "0.889"), ("3", "3", "0.400")]  # top-n only, in α order
    # the dissection's label and IoU of unit 5 (door, 0.200) and unit 3 (tree, 0.040: below the cut, grey)
    assert "<span>door</span>" in text and "<span>0.200</span>" in text
    assert '<span class="dim">tree</span>' in text and '<span class="dim">0.040</span>' in text
    # two IoUs from two dissections, each column saying which: the search's, with tree; the sibling's, with its label
    assert ">IoU with tree, the search" in text and ">IoU with the label, dissect (" in text
    assert "IoU with tree in the dissection that initialised α" in text and "IoUs agree only where" in text
    # each label links to its unit in the dissection's browser (report.html#<layer>/<unit> opens its details)
    units_linked = [ref for ref in references(page) if "report.html#" in ref]
    assert units_linked == [f"../../dissect/report.html#layer4/{u}" for u in (5, 0, 3)]
    assert 'src="ace_curve.png"' in text and 'src="grid_ablation.png"' in text
    assert "grid_insertion.png" not in text  # not written: not shown
    assert "Warning:" not in text  # the search's α ranked its units by itself
    assert_offline_and_resolving(page)


def test_a_dissection_written_after_the_search_refreshes_its_page(tmp_path):
    """`dissect` after `fit`/`test` (docs/reproduce.sh's order): the search's page gains the dissection's labels."""
    causal(tmp_path / "causal" / "tree-layer4")
    page = write_page(tmp_path / "causal" / "tree-layer4")
    assert "No dissection of this generator and layer was found" in page.read_text()
    dissection(tmp_path / "dissect")
    dissection(tmp_path / "dissect-other", generator="progan:bedroom.pth")
    assert refresh_pages_beside(tmp_path / "dissect") == [page]
    text = page.read_text()
    assert "No dissection" not in text and "dissect (quantile)" in text
    assert "../../dissect/report.html#layer4/0" in references(page) and "dissect-other" not in text
    assert refresh_pages_beside(tmp_path / "dissect-other") == []  # another generator's: the page is left alone


def test_a_context_result_links_the_search_and_dissection_of_its_layer(root):
    """`out/context/<concept>-<layer>` sits one level below the results root, as `out/causal/...` does."""
    from tests.results.samples import context

    write_page(root / "causal" / "tree-layer4")
    write(root / "context" / "door-layer4", {"context.json": context()})
    page = write_page(root / "context" / "door-layer4")
    refs = references(page)
    assert "../../causal/tree-layer4/index.html" in refs and "../../dissect/report.html" in refs
    assert not any("other" in ref for ref in refs)  # another generator's results are not linked
    assert "../../context/door-layer4/index.html" in references(root / "causal" / "tree-layer4" / "index.html")
    assert_offline_and_resolving(page)


def test_causal_page_warns_of_a_collapsed_search(root):
    folder = root / "causal" / "tree-layer4"
    search = json.loads((folder / "causal.json").read_text())
    search["diagnosis"] = "α collapsed: the smallest α of the top-3 is 0.001 (below 0.05), so λ = 0.1 outweighs <it>"
    (folder / "causal.json").write_text(json.dumps(search))
    text = write_page(folder).read_text()
    assert "<b>Warning:</b> α collapsed: the smallest α of the top-3 is 0.001" in text and "&lt;it&gt;" in text


def test_pages_link_the_same_generator_and_layer_both_ways(root):
    causal_page = write_page(root / "causal" / "tree-layer4")
    assert "artifacts/index.html" not in causal_page.read_text()  # no artifacts page yet: its JSON is linked
    assert "../../artifacts/unit_fid.json" in causal_page.read_text()
    artifacts_page = write_page(root / "artifacts")
    art = references(artifacts_page)
    assert "../causal/tree-layer4/index.html" in art and "../dissect/report.html" in art
    assert not any("other" in ref for ref in art)  # another generator's results are not linked
    assert "emergence/emergence.json" in "".join(art) and "same layer only" in artifacts_page.read_text()
    assert "../../artifacts/index.html" in references(causal_page)  # the causal page was refreshed to link back
    text = artifacts_page.read_text()
    assert "213.11" in text and "219.18 ± 26.07" in text and "520.8" in text  # the stored FIDs
    assert re.search(r'<td[^>]*>4</td><td[^>]*>520.8</td><td><a href="../dissect/report.html#layer4/4"[^>]*><span>'
                     r"building</span></a>", text)  # fmt: skip
    emergence_page = write_page(root / "emergence")
    assert "2 of 6" in emergence_page.read_text() and "4 of 6" in emergence_page.read_text()
    for page in (causal_page, artifacts_page, emergence_page):
        assert_offline_and_resolving(page)


def test_a_staged_page_links_from_where_it_will_be(root):
    """Writers fill `.staging-*` inside their folder; links must be right once the files are moved up."""
    final = root / "artifacts"
    shutil.rmtree(final)
    stage = final / ".staging-abc"
    artifacts(stage)
    write_page(root / "causal" / "tree-layer4")
    page = write_page(stage)
    assert "../causal/tree-layer4/index.html" in references(page)
    for f in stage.iterdir():
        f.rename(final / f.name)
    stage.rmdir()
    assert_offline_and_resolving(final / PAGE)
    assert "../../artifacts/index.html" in references(root / "causal" / "tree-layer4" / PAGE)
    assert_offline_and_resolving(root / "causal" / "tree-layer4" / PAGE)


def test_unrecorded_generators_link_by_layer_and_foreign_folders_are_refused(root, tmp_path):
    causal(root / "causal" / "tree-layer4", generator=None)  # an ace.json from before it named its generator
    text = write_page(root / "causal" / "tree-layer4").read_text()
    assert "dissect-other/report.html" in text and "generator not recorded" in text
    assert {r.folder.name for r in find_results(root)} == {"dissect", "dissect-other", "tree-layer4", "artifacts",
                                                           "artifacts-other", "emergence"}  # fmt: skip
    with pytest.raises(ValueError, match="holds no"):
        write_page(root / "dissect")


def test_causal_page_in_chromium_loads_everything_and_asks_nothing_of_the_network(root):
    from playwright.sync_api import sync_playwright

    from tests.helpers import chromium_path

    artifacts_page = write_page(root / "artifacts")
    page_path = write_page(root / "causal" / "tree-layer4")
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        loaded = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
        title = page.inner_text("h1")
        page.click("text=artifact units (per-unit FID)")
        page.wait_for_load_state("load")
        landed = page.url
        browser.close()
    assert title == "Causal units of tree in layer4" and loaded == [True, True]
    assert landed == artifacts_page.as_uri()
    assert requests and all(r.startswith("file://") for r in requests), requests


def test_foreign_json_is_named_and_urls_are_quoted(tmp_path):
    from lightning_gd.reports.page_parts import read_result, relative_url
    from lightning_gd.results import ResultError

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "context.json").write_text('{"foo": 1}')  # another program's context.json
    with pytest.raises(ResultError, match=r"b/context.json: settings: missing \(expected an object\)"):
        read_result(tmp_path / "b")  # the folder whose page is written
    with pytest.warns(UserWarning, match=r"b/context.json: settings: missing .*b is not linked"):
        assert read_result(tmp_path / "b", strict=False) is None  # a folder found beside it
    assert relative_url("../run#2/index.html") == "../run%232/index.html"
    assert relative_url("javascript:alert(1)/index.html").startswith("./")
