"""The layout's promises, checked on the source: the core never imports the embedded world, modules import each
other without cycles and never up the layers (reports draw from results only), files and functions stay short
without `# fmt: skip` packing, and importing the package changes no global state."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lightning_gd"
WORLD_ALLOWED = ("world",)  # the world itself; the zoo finds it through the `lightning_gd.zoo` entry point
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80

# The layers, lowest first: a module may import its own layer and those below it. A module is in the layer of
# its longest listed prefix (realism.fid is the FID feature extractor, a network the zoo builds; analyses measure
# with it). The package itself (`lightning_gd`, its lazy `zoo` attribute) is in no layer.
LAYERS = (
    ("errors", "outputs", "allocator", "latents"),
    ("cache", "models", "realism.fid"),
    ("results",),
    ("zoo",),
    ("dissection",),
    ("causal",),
    ("realism",),
    ("reports",),
    ("paint", "callbacks", "jobs"),
    ("cli", "world"),
    ("__main__",),
)
# Imports that point up the layers by exception, each with the reason it still does: none now (every analysis
# stores what its pages draw, and the reports read only results).
UPWARD_ALLOWED: set[tuple[str, str]] = set()
# `# fmt: skip` keeps a hand-aligned table readable (tests' parameter tables); it must not pack arguments to meet
# the size bounds. Outside tests/, only the constant data tables below keep a marker, at most this many each.
FMT_SKIP_TABLES = ("tests/",)
FMT_SKIP_LEFT = {
    "lightning_gd/zoo/csail.py": 1,  # ADE20K_CLASSES, 150 class names: one a line would be 135 more lines of data
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(path: Path, name: str) -> set[str]:
    """Every lightning_gd module that `path` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    known = modules()
    return {m for m in found if m in known and m != name}


def test_nothing_outside_the_world_imports_the_world():
    offenders = []
    for name, path in modules().items():
        if name.split(".")[1:2] and name.split(".")[1] in WORLD_ALLOWED:
            continue
        world = {m for m in imported(path, name) if m == "lightning_gd.world" or m.startswith("lightning_gd.world.")}
        strings = [
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "lightning_gd.world" in node.value
            and not node.value.lstrip().startswith(("\n", "`"))  # prose in docstrings is fine; module paths are not
            and " " not in node.value.strip()
        ]
        if world or strings:
            offenders.append(f"{name}: {sorted(world) + strings}")
    assert not offenders, "the core must ask the zoo for the world, not import it:\n" + "\n".join(offenders)


def code_strings(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_the_zoo_names_no_world_and_the_world_arrives_through_its_entry_point():
    for name, path in modules().items():
        if name == "lightning_gd.zoo" or name.startswith("lightning_gd.zoo."):
            named = [s for s in code_strings(path) if s == "world" or "lightning_gd.world" in s]
            assert not named, f"{name} names the world in code: {named}"
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert '[project.entry-points."lightning_gd.zoo"]\nworld = "lightning_gd.world:register"' in pyproject
    from importlib.metadata import entry_points

    assert "lightning_gd.world:register" in {ep.value for ep in entry_points(group="lightning_gd.zoo")}, (
        "the installed package lacks the world's entry point: pip install -e . again"
    )


def test_the_check_sees_a_world_import(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from lightning_gd.world import load_generator\n")
    assert imported(path, "lightning_gd.bad") == {"lightning_gd.world", "lightning_gd.world.load_generator"} & set(
        modules()
    )


def test_no_import_cycles():
    graph = {name: imported(path, name) for name, path in modules().items()}
    # a package's __init__ importing its own submodules is how packages re-export; not a cycle between modules
    for name in graph:
        graph[name] = {
            m for m in graph[name] if not (m.startswith(name + ".") and modules()[name].name == "__init__.py")
        }
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}  # a submodule importing its package
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def layer_of(name: str) -> int | None:
    parts = name.split(".")[1:]
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            p = prefix.split(".")
            if parts[: len(p)] == p and (best is None or len(p) > best[1]):
                best = (rank, len(p))
    return None if best is None else best[0]


def test_every_module_has_a_layer():
    missing = [name for name in modules() if name != "lightning_gd" and layer_of(name) is None]
    assert not missing, f"add these to LAYERS: {missing}"


def test_no_import_points_up_the_layers():
    upward = []
    for name, path in modules().items():
        mine = layer_of(name)
        for other in imported(path, name):
            theirs = layer_of(other)
            if mine is not None and theirs is not None and theirs > mine and (name, other) not in UPWARD_ALLOWED:
                upward.append(f"{name} ({LAYERS[mine][0]}) imports {other} ({LAYERS[theirs][0]})")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_reports_import_no_analysis():
    """A page is drawn from stored results: no report module imports the dissection, causal or realism
    computation, the zoo that builds networks, or anything above the reports."""
    analyses = ("dissection", "causal", "realism", "zoo", "jobs", "cli", "paint", "callbacks", "world")
    offenders = []
    for name, path in modules().items():
        if not name.startswith("lightning_gd.reports"):
            continue
        for other in imported(path, name):
            top = other.split(".")[1] if "." in other else ""
            if (
                top in analyses
                and (name, other) not in UPWARD_ALLOWED
                and not other.startswith("lightning_gd.realism.fid")
            ):
                offenders.append(f"{name} imports {other}")
    assert not offenders, "\n".join(offenders)


def test_the_known_upward_imports_still_exist():
    """An allowed exception that is gone must leave the list, so that it cannot come back unnoticed."""
    graph = {name: imported(path, name) for name, path in modules().items()}
    stale = [pair for pair in UPWARD_ALLOWED if pair[1] not in graph.get(pair[0], set())]
    assert not stale, f"remove from UPWARD_ALLOWED: {stale}"


def test_no_fmt_skip_outside_the_allowed_tables():
    root = PACKAGE.parent
    sources = [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py"), *(root / "bench").rglob("*.py")]
    offenders = []
    for path in sources:
        where = path.relative_to(root).as_posix()
        if where.startswith(FMT_SKIP_TABLES):
            continue
        lines = [
            n for n, line in enumerate(path.read_text().splitlines(), 1) if "fmt: skip" in line or "fmt: off" in line
        ]
        if len(lines) > FMT_SKIP_LEFT.get(where, 0):
            offenders.append(f"{where}: lines {lines} (allowed: {FMT_SKIP_LEFT.get(where, 0)})")
    assert not offenders, "let ruff format these (split the function if it grows too long):\n" + "\n".join(offenders)


def _code_lines(node: ast.FunctionDef) -> int:
    """Lines of a function without its docstring."""
    length = node.end_lineno - node.lineno + 1
    doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) else None
    if doc is not None and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
        length -= doc.end_lineno - doc.lineno + 1
    return length


def test_files_and_functions_are_short():
    long_files, long_functions = [], []
    for name, path in modules().items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_FUNCTION_LINES:
                long_functions.append(f"{name}.{node.name}: {_code_lines(node)} lines")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)


def test_no_module_picks_a_matplotlib_backend():
    """Figures are drawn on Figure + FigureCanvasAgg: no pyplot, no matplotlib.use (notebooks keep inline plots)."""
    offenders = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n == "matplotlib.pyplot" or n == "pyplot" for n in names):
                    offenders.append(f"{name} imports pyplot")
            if isinstance(node, ast.Attribute) and node.attr == "use" and getattr(node.value, "id", "") == "matplotlib":
                offenders.append(f"{name} calls matplotlib.use")
    assert not offenders, offenders


@pytest.mark.parametrize("module", ["lightning_gd.models.hooks", "lightning_gd.cli.main", "lightning_gd.jobs"])
def test_importing_changes_no_global_state(module):
    probe = (
        "import torch._dynamo.config as c, matplotlib\n"
        "backend = lambda: dict.__getitem__(matplotlib.rcParams, 'backend')  # without resolving it\n"
        "flag, before = c.skip_nnmodule_hook_guards, backend()\n"
        f"import {module}\n"
        "assert c.skip_nnmodule_hook_guards == flag, 'dynamo hook guards flipped'\n"
        "assert backend() == before, 'matplotlib backend changed'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_core_signatures_take_their_defaults_from_the_networks_not_the_world():
    """No function outside the world defaults to a layer name, a world concept or the world itself: the default
    layer is the generator's (`probe_layers`), a concept is always named, and None means the zoo's default."""
    import re

    from lightning_gd.world import CONCEPTS

    offenders = []
    for name, path in modules().items():
        if name.split(".")[1:2] == ["world"]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                value = default.value if isinstance(default, ast.Constant) else None
                if isinstance(value, str) and (
                    value in CONCEPTS or value == "world" or re.fullmatch(r"layer\d+", value)
                ):
                    offenders.append(f"{name}.{node.name}: default {value!r}")
    assert not offenders, "\n".join(offenders)
