"""torchvision segmentation models from a local weights file (`torchvision:NAME:PATH`), as a `PublishedSegmenter`.

The network is built by torchvision without any weights (`weights=None, weights_backbone=None`, so nothing is
downloaded) and the state dict is read with the project's weights-only reader: a `.pth` of `model.state_dict()`
(also inside a `{"state_dict": ...}` or torchvision-reference `{"model": ...}` checkpoint) or `.safetensors`.
The number of classes is read from the classifier's weights and the auxiliary head (`aux_classifier.*`, saved
by models trained with `aux_loss`) is built when the file has it; loading is strict. The vocabulary is that of
torchvision's published `COCO_WITH_VOC_LABELS_V1` weights (21 Pascal VOC classes, `background` first), or the
`concepts` option for other class counts. Inputs: RGB in [0, 1] normalised with ImageNet's mean and std, the
short side resized to 520, as torchvision's evaluation preset for these weights does.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.models.weights import read_file, shapes_of, state_dict_of, state_differences
from lightning_gd.zoo.segmenting import PublishedSegmenter

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRAINED_SIZE = 520  # torchvision's SemanticSegmentation(resize_size=520) preset of the published weights
# the final classifier layer of each family: (C, ·, 1, 1), C the number of classes
HEADS = {
    "deeplabv3_resnet50": "classifier.4.weight",
    "deeplabv3_resnet101": "classifier.4.weight",
    "deeplabv3_mobilenet_v3_large": "classifier.4.weight",
    "fcn_resnet50": "classifier.4.weight",
    "fcn_resnet101": "classifier.4.weight",
    "lraspp_mobilenet_v3_large": "classifier.high_classifier.weight",
}
AUX = "aux_classifier."


def load(
    argument: str | None,
    concepts: list[str] | tuple[str, ...] | None = None,
    categories: dict[str, str] | None = None,
    size: int | None = TRAINED_SIZE,
    batch_size: int = 16,
) -> PublishedSegmenter:
    """The torchvision model `NAME` with the weights in `PATH` (spec `torchvision:NAME:PATH`).

    `size` is the short side images are resized to (None: keep their size); `concepts` names the classes of a
    model trained on other data than torchvision's VOC weights."""
    name, path = parse(argument)
    state = read_state(path, name)
    head = HEADS[name]
    if head not in state:
        found = ", ".join(sorted({k.split(".")[0] for k in state})) or "none"
        raise InvalidValue(
            f"{path} is not a torchvision {name} state dict: no key {head} (its top-level keys: {found})"
        )
    classes = state[head].shape[0]
    concepts = vocabulary(classes, concepts, path)
    net = build(name, classes, aux=any(k.startswith(AUX) for k in state))
    load_strictly(net, state, path)
    return PublishedSegmenter(
        net, concepts, categories, mean=IMAGENET_MEAN, std=IMAGENET_STD, size=size, batch_size=batch_size, forward=out
    )


def parse(argument: str | None) -> tuple[str, str]:
    """(NAME, PATH) from `NAME:PATH`, the NAME checked against the models this loader builds."""
    name, _, path = (argument or "").partition(":")
    if name not in HEADS:
        raise InvalidValue(f"unknown torchvision segmentation model {name!r}; valid names: {', '.join(HEADS)}")
    if not path:
        raise InvalidValue(f"name the weights file: torchvision:{name}:PATH (a state dict, .pth or .safetensors)")
    return name, path


def read_state(path: str, name: str) -> dict[str, torch.Tensor]:
    """The state dict in the file: itself, or the `state_dict` / `model` entry of a checkpoint."""
    obj = read_file(path, f"torchvision {name} weights file")
    if isinstance(obj.get("model"), dict):
        return obj["model"]
    return state_dict_of(obj, source=path)


def vocabulary(classes: int, concepts, path: str) -> list[str]:
    """The given concepts (one per class), or torchvision's VOC names when the file has their 21 classes."""
    if concepts is not None:
        if len(concepts) != classes:
            raise InvalidValue(f"{len(concepts)} concepts given for the {classes} classes of {path}")
        return list(concepts)
    voc = voc_categories()
    if classes != len(voc):
        raise InvalidValue(
            f"{path} has {classes} classes, not the {len(voc)} of torchvision's VOC weights: pass concepts=[...] "
            "(its class names, in order)"
        )
    return voc


def voc_categories() -> list[str]:
    """The classes of torchvision's COCO_WITH_VOC_LABELS_V1 weights (read from its metadata; nothing downloaded),
    `__background__` renamed `background`."""
    from torchvision.models.segmentation import FCN_ResNet50_Weights

    names = FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"]
    return ["background" if n == "__background__" else n for n in names]


def build(name: str, classes: int, aux: bool) -> nn.Module:
    """The torchvision network, randomly initialised (its weights come from the file)."""
    from torchvision.models import segmentation

    options = {"weights": None, "weights_backbone": None, "num_classes": classes}
    if not name.startswith("lraspp"):  # LR-ASPP has no auxiliary head; aux keys then show as unexpected
        options["aux_loss"] = aux
    return getattr(segmentation, name)(**options)


def load_strictly(net: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load every weight, or a ValueError listing the missing and unexpected keys and the shapes that differ."""
    problems = state_differences(shapes_of(net.state_dict()), shapes_of(state))
    if problems:
        raise InvalidValue(f"{path} does not fit torchvision's {type(net).__name__}: {problems}")
    net.load_state_dict(state)


def out(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits of torchvision's output dict (its `out` entry, at the input's resolution)."""
    return net(x)["out"]  # (B, C, h, w)
