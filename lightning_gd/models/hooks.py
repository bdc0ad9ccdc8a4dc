"""Read and rewrite the output of named layers, so dissection and intervention need no model-specific code.

GAN Dissection measures a unit by reading one layer's feature map and tests causality by overwriting it (ablation,
insertion). Both are forward hooks on a submodule found by its dotted name, in the style of baukit's ``Trace``:

    with Trace(G, "layer4", edit_output=lambda r: r * keep_mask) as t:
        image = G(z)  # rendered with the edit; t.output is the edited feature map
    with Trace(G, "layer4", stop=True) as t:
        G(z)  # stops right after layer4: later layers never run

Layers that return a tuple (StyleGAN-style blocks return ``(x, img)``) are read and edited through one element,
named by ``element=``: ``Trace(G, "b8", element=0)`` retains ``x`` and an edit replaces ``x`` inside the tuple.
An edit is always ``edit_output(output, layer) -> new output``, in ``Trace`` and ``TraceDict`` alike.

``torch.compile``: dynamo by default does not guard on module hook dicts (``skip_nnmodule_hook_guards``), so a graph
compiled before a hook was added keeps running without it and edits would be silently ignored. Call
``enable_compiled_hooks()`` once before a compiled model's first call: its graphs then check the hooks (a length
check per module), and adding or removing a hook makes dynamo pick another cached graph or recompile. Tracing a
compiled model without it is an error rather than a silent no-op. Python numbers an edit reads are guarded too (a
new unit index means a recompile; pass masks as tensors to avoid that); past dynamo's recompile limit the frame runs
eagerly, still correct.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from lightning_gd.errors import InvalidValue, NotReady, OutOfRange, UnknownName, WrongType

__all__ = ["LayerNotFoundError", "Trace", "TraceDict", "enable_compiled_hooks", "layer_names", "resolve_layer"]

_COMPILED = "_orig_mod"  # attribute (and name segment) under which torch.compile's OptimizedModule keeps the model
Edit = Callable[[torch.Tensor, str], torch.Tensor]


def enable_compiled_hooks() -> None:
    """Make graphs that torch.compile builds from now on check forward hooks, so Trace works on compiled models.
    Call it before a compiled model's first call; it changes one dynamo setting for the whole process."""
    import torch._dynamo.config

    torch._dynamo.config.skip_nnmodule_hook_guards = False


def _hooks_ignored_by(model: nn.Module) -> bool:
    """Whether `model` is compiled and dynamo would skip the guards that notice a new hook."""
    if not any(isinstance(getattr(m, _COMPILED, None), nn.Module) for m in [model, *model.modules()]):
        return False
    import torch._dynamo.config

    return bool(torch._dynamo.config.skip_nnmodule_hook_guards)


class LayerNotFoundError(UnknownName):
    """A user error and a KeyError (so ``except KeyError`` still works) whose message names the valid layers."""

    def __init__(self, name: str, model: nn.Module, valid: list[str]) -> None:
        close = difflib.get_close_matches(name, valid, n=5)
        shown = ", ".join(valid[:20]) + (f", ... ({len(valid) - 20} more)" if len(valid) > 20 else "")
        self.message = (
            f"no layer {name!r} in {type(model).__name__}; closest matches: {', '.join(close) or 'none'}; "
            f"valid layers: {shown or 'none'}"
        )
        super().__init__(name)

    def __str__(self) -> str:
        return self.message


def _unwrap(module: nn.Module) -> nn.Module:
    """Hooks must sit on the real module: a compiled wrapper's own hooks are bypassed when an outer graph inlines
    it. A wrapper that names its inner network in a `wraps` attribute (e.g. `GeneratorWrapper`) is looked through
    too, so layer names are the network's own."""
    while True:
        if isinstance(getattr(module, _COMPILED, None), nn.Module):
            module = getattr(module, _COMPILED)
        elif isinstance(getattr(module, "wraps", None), str) and isinstance(
            getattr(module, module.wraps, None), nn.Module
        ):
            module = getattr(module, module.wraps)
        else:
            return module


def _plain(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != _COMPILED)


def layer_names(model: nn.Module, kind: type | tuple[type, ...] | None = None) -> list[str]:
    """Names that resolve_layer accepts (compile prefixes dropped), optionally only modules of type ``kind``."""
    names: dict[str, None] = {}  # ordered set: a compiled submodule and its _orig_mod share one plain name
    for name, module in _unwrap(model).named_modules():
        if name and (kind is None or isinstance(_unwrap(module), kind)):
            names.setdefault(_plain(name))
    return list(names)


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Look a layer up by dotted name, accepting both ``"0"`` and ``"_orig_mod.0"`` for a compiled model."""
    root = _unwrap(model)
    if not isinstance(name, str) or not name.strip():  # "" is the whole network in named_modules(), never a layer
        raise InvalidValue(
            f"empty layer name {name!r}; name one of {type(root).__name__}'s layers: "
            f"{', '.join(layer_names(root)[:20])}"
        )
    modules = dict(root.named_modules())
    if name in modules:
        return _unwrap(modules[name])
    plain = {_plain(n): m for n, m in modules.items()}
    if _plain(name) in plain:
        return _unwrap(plain[_plain(name)])
    raise LayerNotFoundError(name, root, layer_names(root))


class _StopForward(Exception):
    """Raised by a hook to abandon the forward pass once the wanted output is in hand; swallowed on exit."""


class Trace:
    """Retain and optionally replace one layer's output while the context is open.

    Args:
        model: the network; `layer` is a dotted module name in it.
        edit_output: `fn(output, layer) -> new output` (the featuremap, or the `element` of a tuple output).
        stop: abandon the forward pass right after the layer (the context swallows the stop).
        element: for a layer that returns a tuple or list, the index of the element to retain and edit.
        retain_output / detach / clone: keep the output in `.output`, detached from the graph, as a copy.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        edit_output: Edit | None = None,
        stop: bool = False,
        retain_output: bool = True,
        detach: bool = False,
        clone: bool = False,
        element: int | None = None,
    ) -> None:
        if _hooks_ignored_by(model):
            raise NotReady(
                "this compiled model would ignore the hook (dynamo skips hook guards): call "
                "lightning_gd.models.hooks.enable_compiled_hooks() before the compiled model's first call"
            )
        self.layer = layer
        self.module = resolve_layer(model, layer)
        self.edit_output = edit_output
        self.element = element
        self.stop = stop
        self.retain_output = retain_output
        self.detach = detach
        self.clone = clone
        self.output: Any = None
        self._after: Callable[[str], None] | None = None  # TraceDict's "all layers done?" check
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        value = _element(self.layer, output, self.element)
        if self.edit_output is not None:
            value = _checked_edit(self.layer, value, self.edit_output)
            output = _replace_element(output, self.element, value)
        if self.retain_output:
            kept = value
            if _is_tensor(kept):
                kept = kept.detach() if self.detach else kept
                kept = kept.clone() if self.clone else kept  # keep a snapshot if something later edits in place
            self.output = kept
        if self.stop:
            raise _StopForward
        if self._after is not None:
            self._after(self.layer)
        return output

    def __enter__(self) -> Trace:
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, _StopForward)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _element(layer: str, output: Any, element: int | None) -> Any:
    if element is None:
        return output
    if not isinstance(output, (tuple, list)):
        raise WrongType(f"layer {layer!r} returns {type(output).__name__}, not a tuple: drop element={element}")
    if not -len(output) <= element < len(output):
        raise OutOfRange(f"layer {layer!r} returns {len(output)} elements; element={element} is out of range")
    return output[element]


def _replace_element(output: Any, element: int | None, value: Any) -> Any:
    if element is None:
        return value
    items = list(output)
    items[element] = value
    return tuple(items) if isinstance(output, tuple) else items


def _checked_edit(layer: str, output: Any, edit: Edit) -> torch.Tensor:
    """A wrongly shaped edit would fail deep in the next layer with no hint of which edit caused it."""
    if not _is_tensor(output):
        hint = " (name the tensor with element=…)" if isinstance(output, (tuple, list)) else ""
        raise WrongType(f"layer {layer!r} returns {type(output).__name__}; edit_output edits tensors{hint}")
    edited = edit(output, layer)
    if not _is_tensor(edited):
        raise WrongType(f"edit_output for layer {layer!r} returned {type(edited).__name__}, expected a tensor")
    if edited.shape != output.shape:
        raise InvalidValue(
            f"edit_output for layer {layer!r} changed the shape from {tuple(output.shape)} to {tuple(edited.shape)}"
        )
    return edited


class TraceDict(dict[str, Trace]):
    """Several Traces entered together; ``stop`` waits until every listed layer has run, whatever their order."""

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str],
        edit_output: Edit | None = None,
        stop: bool = False,
        retain_output: bool = True,
        detach: bool = False,
        clone: bool = False,
        element: int | None = None,
    ) -> None:
        super().__init__()
        for name in layers:
            self[name] = Trace(model, name, edit_output, False, retain_output, detach, clone, element)
            self[name]._after = self._ran if stop else None
        self.stop = stop
        self._pending = set(self)

    def _ran(self, layer: str) -> None:
        self._pending.discard(layer)
        if not self._pending:
            self._pending = set(self)  # ready for the next forward pass
            raise _StopForward

    def __enter__(self) -> TraceDict:
        self._pending = set(self)
        for trace in self.values():
            trace.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        for trace in reversed(self.values()):
            trace.close()
        return exc_type is not None and issubclass(exc_type, _StopForward)
