"""The model zoo: the one place where a spec, a config or `None` becomes a network.

    from lightning_gd import zoo

    G = zoo.generator("world")                      # the embedded world's GAN (also: zoo.generator())
    seg = zoo.segmenter("world")                    # its segmenter
    G = zoo.generator(my_net, z_dim=100, z_shape=(100, 1, 1), output_range=(0, 1))   # your own network
    seg = zoo.segmenter(my_seg_net, concepts=["sky", "tree"], output="probs")          # your own segmenter

A spec is `name` or `name:argument` (a path, usually), e.g. `world` or `world:my_generator.safetensors`, with
the loader's options after a `?` (`stylegan2:G.pt?truncation=0.7&noise=const`); the command line's
`--generator SPEC` / `--segmenter SPEC` take the same strings, or a `class_path` config. Networks
are registered by name per kind (`generator`, `segmenter`, `feature_extractor`, `real_images`). Networks beyond
the published loaders below arrive through the `lightning_gd.zoo` entry point group: each entry's object is a
`register(zoo)` function, loaded on first use. The embedded world is one such plugin (this package's own entry
point); it registers its networks as the defaults, which is what None means for each kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_gd.errors import InvalidValue, WrongType
from lightning_gd.models.generators import GeneratorWrapper
from lightning_gd.models.segmenters import ModuleSegmenter, Segmenter

KINDS = ("generator", "segmenter", "feature_extractor", "real_images")
ENTRY_POINTS = "lightning_gd.zoo"  # the entry point group whose `register(zoo)` functions add networks
_WRAP_GENERATOR = ("z_dim", "z_shape", "sampler", "output_range", "probe_layers")
_WRAP_SEGMENTER = ("concepts", "categories", "output", "colours")


@dataclass(frozen=True)
class Entry:
    factory: Callable[..., Any]  # factory(argument: str | None, **options)
    help: str


_REGISTRY: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_DEFAULTS: dict[str, str] = {}  # kind → the name that None means, set by the plugin that registers it as default
_COMMANDS: dict[str, Callable] = {}
_loaded = False


def register(kind: str, name: str, factory: Callable[..., Any], help: str = "", default: bool = False) -> None:
    """Make `zoo.<kind>("name:argument", **options)` call `factory(argument, **options)`; with `default`, also
    `zoo.<kind>()` (the first plugin to claim a kind's default keeps it)."""
    if kind not in KINDS:
        raise InvalidValue(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    if not name or ":" in name:
        raise InvalidValue(f"a zoo name is a non-empty word without ':', got {name!r}")
    _REGISTRY[kind][name] = Entry(factory, help)
    if default:
        _DEFAULTS.setdefault(kind, name)


def default_name(kind: str) -> str:
    """The name that None means for `kind` (e.g. `world`, registered by the embedded world's plugin)."""
    _load_plugins()
    if kind not in _DEFAULTS:
        known = ", ".join(sorted(_REGISTRY[kind])) or "none"
        raise InvalidValue(
            f"no default {kind} is registered (is lightning_gd installed, `pip install -e .`, so that its "
            f"'{ENTRY_POINTS}' entry points exist?): name one; the zoo has {known}"
        )
    return _DEFAULTS[kind]


def register_command(name: str, fn: Callable) -> None:
    """A plugin's own subcommand (`python -m lightning_gd <name>`), e.g. the world's `demo`."""
    _COMMANDS[name] = fn


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import warnings
    from importlib.metadata import entry_points

    # this package's own plugin (the world) first, so that its defaults stand unless it is missing or broken
    found = sorted(
        entry_points(group=ENTRY_POINTS), key=lambda ep: (ep.value.split(".")[0] != __package__.split(".")[0], ep.name)
    )
    for ep in found:
        try:
            ep.load()(_this())
        except Exception as err:  # one broken plugin must not take the others (or the default world) with it
            warnings.warn(f"zoo plugin {ep.name} ({ep.value}) failed to load and is left out: {err!r}", stacklevel=2)


def _this():
    import sys

    return sys.modules[__name__]


def names(kind: str) -> list[str]:
    """The registered names of a kind."""
    _load_plugins()
    return sorted(_REGISTRY[kind])


def commands() -> dict[str, Callable]:
    """Subcommands that plugins add to the command line."""
    _load_plugins()
    return dict(_COMMANDS)


def describe(spec: Any, kind: str | None = None) -> str:
    """A short name of what a spec denotes, for reports: the spec string, the network's class name, or for None
    the name of `kind`'s default (e.g. `world`)."""
    if spec is None:
        return default_name(kind) if kind else "default"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return str(spec.get("class_path", "config"))
    return type(spec).__name__


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """`name[:argument][?key=value&…]` → (name, argument, options); values are Python literals where they parse
    (`?truncation=0.7&noise=const` gives 0.7 and "const"), so options reach a loader from the command line."""
    import ast

    body, _, query = spec.partition("?")
    name, _, argument = body.partition(":")
    options: dict[str, Any] = {}
    for pair in filter(None, query.split("&")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidValue(f"spec option {pair!r} in {spec!r} is not key=value")
        if key in options:
            raise InvalidValue(f"spec option {key!r} is given twice in {spec!r}")
        if value.lower() in ("true", "false"):  # as YAML and the command line's own options spell booleans
            options[key] = value.lower() == "true"
            continue
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            options[key] = value
    return name, argument or None, options


def _check_spec_options(spec: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    """The options written in a spec string against the loader's signature: unknown keys, and values of the wrong
    type for a `bool`, `int` or `float` parameter (`?tanh=maybe` is not true), are a user error naming both."""
    import inspect
    import typing

    fn = getattr(factory, "target_function", lambda: factory)()
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [n for n in list(params)[1:] if params[n].kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in options:
            if key not in valid:
                raise InvalidValue(f"unknown option {key!r} in the spec {spec!r}; its options: {', '.join(valid)}")
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that does not resolve here: the loader checks its own values
        return
    wanted = {bool: "true or false", int: "an integer", float: "a number"}
    for key, value in options.items():
        kind = hints.get(key)
        ok = {
            bool: lambda v: isinstance(v, bool),
            int: lambda v: isinstance(v, int) and not isinstance(v, bool),
            float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        }.get(kind)
        if ok is not None and not ok(value):
            raise InvalidValue(f"spec option {key}={value!r} in {spec!r}: expected {wanted[kind]}")


def _merge_options(spec: str, in_spec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The spec's options with those given beside it (keyword arguments, command-line options). A value given as
    None is an unset default and never replaces the spec's (`world?weights=g.safetensors` with no
    --generator_weights); two different values for one option are a user error."""
    merged = dict(in_spec)
    for key, value in given.items():
        if value is None and key in in_spec:
            continue
        if key in in_spec and in_spec[key] != value:
            raise InvalidValue(f"{key} is given twice: {in_spec[key]!r} in the spec {spec!r} and {value!r}; give one")
        merged[key] = value
    return merged


def build(kind: str, spec: str | None, **options) -> Any:
    """The object that the spec names, built by its registered factory."""
    _load_plugins()
    if spec is not None and not spec.strip():  # it named the default silently (and "--generator ''" asked for layers)
        raise InvalidValue(
            f"empty {kind} spec: name one of the zoo's ({', '.join(sorted(_REGISTRY[kind]))}), or leave the option "
            "out for the default"
        )
    spec = spec or default_name(kind)
    name, argument, in_spec = parse_spec(spec)
    if name not in _REGISTRY[kind]:
        import difflib

        known = sorted(_REGISTRY[kind])
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        listing = "; ".join(f"{n}: {_REGISTRY[kind][n].help}" if _REGISTRY[kind][n].help else n for n in known)
        raise InvalidValue(f"unknown {kind} {name!r}{hint}; the zoo has {listing or 'none'}")
    factory = _REGISTRY[kind][name].factory
    _check_spec_options(spec, factory, in_spec)
    return factory(argument, **_merge_options(spec, in_spec, options))


def _from_config(config: dict) -> Any:
    """Instantiate a `{"class_path": ..., "init_args": {...}}` config (nested configs too)."""
    if "class_path" not in config:
        raise InvalidValue(f"a network config needs a class_path, got keys {', '.join(config) or 'none'}")
    module, _, name = config["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    args = {
        k: _from_config(v) if isinstance(v, dict) and "class_path" in v else v
        for k, v in config.get("init_args", {}).items()
    }
    return cls(**args)


def _split(options: dict, keys: tuple[str, ...]) -> tuple[dict, dict]:
    wrap = {k: options.pop(k) for k in keys if k in options}
    return {k: v for k, v in wrap.items() if v is not None}, options


def generator(spec: str | nn.Module | dict | None = None, weights: str | None = None, **options) -> nn.Module:
    """A generator from a spec (`world`, `world:PATH`, …), a `class_path` config, a module, or None (the default).

    `weights` loads a local weights file into a module or config (safetensors, or a torch file read with
    weights_only). `z_dim`, `z_shape`, `sampler`, `output_range` and `probe_layers` wrap the network in a
    `GeneratorWrapper` (see its doc), which any network needs that lacks a `z_dim` attribute, wants z of another
    shape or distribution, returns images outside [-1, 1], or declares no default layer of its own."""
    wrap, options = _split(dict(options), _WRAP_GENERATOR)
    if spec is None or isinstance(spec, str):
        net = build("generator", spec, weights=weights, **options)
        return GeneratorWrapper(net, **{"z_dim": net.z_dim, **wrap}) if wrap else net
    if options:
        raise WrongType(f"options {', '.join(options)} apply to zoo specs, not to a {describe(spec)} module")
    net = _from_config(spec) if isinstance(spec, dict) else spec
    if not isinstance(net, nn.Module):
        raise WrongType(f"a generator must be an nn.Module, a zoo spec or a class_path config; got {describe(net)}")
    from lightning_gd.models.weights import load_weights

    net = load_weights(net, weights)
    if wrap or getattr(net, "z_dim", None) is None:
        if "z_dim" not in wrap and getattr(net, "z_dim", None) is None:
            raise InvalidValue(
                f"{type(net).__name__} has no z_dim attribute: wrap it with zoo.generator(net, z_dim=…) (command "
                "line: --z_dim); z_shape, sampler and output_range adapt other inputs and outputs"
            )
        net = GeneratorWrapper(net, **{"z_dim": getattr(net, "z_dim", None), **wrap})
    return net


def segmenter(spec: str | nn.Module | dict | None = None, **options) -> Segmenter:
    """A segmenter from a spec (`world`, …), a `class_path` config, a module, or None (the default).

    A network that is not a `Segmenter` needs `concepts` (its class names, in order) and may give `categories`,
    `output` (`logits`, `probs` or `labels`: what it returns) and `colours` (one per concept, for drawn label
    maps); it is wrapped in a `ModuleSegmenter`."""
    if spec is None or isinstance(spec, str):  # the factory takes its own options (e.g. concepts for torchvision)
        return build("segmenter", spec, **options)
    wrap, options = _split(dict(options), _WRAP_SEGMENTER)
    if options:
        raise WrongType(f"options {', '.join(options)} apply to zoo specs, not to a {describe(spec)} module")
    net = _from_config(spec) if isinstance(spec, dict) else spec
    if isinstance(net, Segmenter):
        if wrap:
            raise WrongType(f"{type(net).__name__} is already a Segmenter; {', '.join(wrap)} apply to bare networks")
        return net
    if not isinstance(net, nn.Module):
        raise WrongType(f"a segmenter must be an nn.Module, a zoo spec or a class_path config; got {describe(net)}")
    if "concepts" not in wrap:
        raise WrongType(
            f"{type(net).__name__} is a bare network without a concept vocabulary: wrap it with "
            "zoo.segmenter(net, concepts=[...], output='logits' | 'probs' | 'labels') "
            "(or lightning_gd.models.segmenters.ModuleSegmenter)"
        )
    return ModuleSegmenter(net, **wrap)


def feature_extractor(spec: str | None = None, **options):
    """An FID feature extractor (`lightning_gd.realism.fid.Extractor`): `world`, or `inception:PATH` (local
    InceptionV3 weights in torch-fidelity's layout)."""
    return build("feature_extractor", spec, **options)


def real_images(spec: str | None = None, **options):
    """A source of real images for FID statistics (`lightning_gd.realism.fid.ImageSource`): `world` (renders)
    or `folder:PATH` (PNG/JPEG files)."""
    return build("real_images", spec, **options)


def _inception(argument: str | None, weights_path: str | None = None):
    from lightning_gd.realism.fid import inception_extractor

    path = argument or weights_path
    if path is None:
        raise InvalidValue(
            "the Inception extractor needs local weights: --feature_extractor_weights_path PATH on the command line, "
            "feature_extractor_weights_path= in FIDMonitor, or zoo.feature_extractor('inception:PATH') (nothing is "
            "downloaded)"
        )
    return inception_extractor(path)


def _folder(argument: str | None, **options):
    from lightning_gd.realism.fid import folder_images

    if argument is None:
        raise InvalidValue("name the folder of real images: folder:PATH")
    return folder_images(argument, **options)


def _lazy(target: str) -> Callable[..., Any]:
    """A factory imported on first use ("module:function"), so naming the zoo's loaders costs no imports."""

    def factory(argument: str | None, **options) -> Any:
        return target_function()(argument, **options)

    def target_function() -> Callable[..., Any]:
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)

    factory.target_function = target_function  # the real signature, for checking a spec's options
    return factory


register("feature_extractor", "inception", _inception, "InceptionV3 from local weights, inception:PATH")
register("real_images", "folder", _folder, "PNG/JPEG files in a folder, folder:PATH")
# published networks from local files (nothing is downloaded): one module each under lightning_gd/zoo/
_PUBLISHED = {
    ("generator", "progan"): ("lightning_gd.zoo.progan:load", "ProGAN in the GAN-dissection layout, progan:PATH"),
    ("generator", "stylegan2"): ("lightning_gd.zoo.stylegan2:load", "StyleGAN2 (rosinality or NVlabs state dict)"),
    ("segmenter", "ade20k"): ("lightning_gd.zoo.csail:load_ade20k", "CSAIL ADE20K encoder+decoder, ade20k:DIR"),
    ("segmenter", "upp"): ("lightning_gd.zoo.csail:load_upp", "Unified Perceptual Parsing, upp:DIR"),
    ("segmenter", "hf"): ("lightning_gd.zoo.hf:load", "Hugging Face semantic segmentation folder, hf:DIR"),
    ("segmenter", "clipseg"): ("lightning_gd.zoo.clipseg:load", "CLIPSeg on your words, clipseg:DIR?concepts=a,b"),
    ("segmenter", "torchvision"): ("lightning_gd.zoo.tv:load", "torchvision segmentation, torchvision:NAME:PATH"),
}
for (_kind, _name), (_target, _help) in _PUBLISHED.items():
    register(_kind, _name, _lazy(_target), _help)
