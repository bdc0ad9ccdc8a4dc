"""Any Hugging Face `transformers` semantic-segmentation model saved in a local folder (`hf:DIR`), e.g. SegFormer
or UperNet fine-tuned on ADE20K, as a `PublishedSegmenter`.

The folder is what `save_pretrained` writes (or a downloaded hub snapshot): `config.json`, `model.safetensors`
(or sharded `model.safetensors.index.json` + shards) and, optionally, `preprocessor_config.json`. Nothing is
downloaded (`local_files_only`), no code from the folder runs (`trust_remote_code=False`), and the weights must
be safetensors: a pickled `pytorch_model.bin` is refused rather than handed to `torch.load`, whose safety depends
on the installed torch and transformers versions; the error says how to convert it with this project's
weights-only reader.

The vocabulary is `config.id2label` in id order, every concept in the category `object`. The input convention
comes from the image processor's config (rescale factor, mean, std, size), or ImageNet's mean and std without
resizing when the folder has none. A processor size `{"height", "width"}` resizes to exactly that size, as the
processor does; `{"shortest_edge"}` resizes the short side. The processor resamples in PIL; here resizing is
bilinear interpolation of the tensor (no antialiasing), so the inputs differ from the processor's by that.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lightning_gd.errors import InvalidValue, MissingPackage
from lightning_gd.zoo.segmenting import PublishedSegmenter

EXTRA = 'pip install "lightning_gd[hf]"'
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


class HFLogits:
    """`forward` for `PublishedSegmenter`: resize to the processor's exact (height, width), when it has one, and
    return the model's logits (SegFormer's come at 1/4 of its input; the segmenter resizes them back)."""

    def __init__(self, size: tuple[int, int] | None = None) -> None:
        self.size = size

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return model(pixel_values=x).logits  # (B, C, h', w')


def load(argument: str | None, batch_size: int = 16) -> PublishedSegmenter:
    """The segmenter saved in the folder `argument` (spec `hf:DIR`)."""
    folder = checked_folder(argument)
    try:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
    except ImportError as err:
        raise MissingPackage(f"hf:DIR segmenters need the transformers package: {EXTRA}") from err
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError) as err:
        raise InvalidValue(f"{folder} does not hold a transformers semantic-segmentation model: {err}") from err
    model = model.float().eval()  # half-precision exports run on float32 images like the others
    processor = None
    if (folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    convention = input_convention(processor)
    short, exact = convention.pop("size")
    return PublishedSegmenter(
        model,
        vocabulary(model.config, folder),
        **convention,
        size=short,
        batch_size=batch_size,
        forward=HFLogits(exact),
    )


def checked_folder(argument: str | None, spec: str = "hf") -> Path:
    """The model folder, after checking that it holds a config and safetensors weights; `spec` is the loader's
    name in the errors (`hf`, `clipseg`)."""
    if not argument:
        raise InvalidValue(f"name the model folder: {spec}:DIR (a folder written by save_pretrained, with config.json)")
    folder = Path(argument).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"Hugging Face model folder not found: {folder} (expected a save_pretrained folder)")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"Hugging Face model config not found: {folder / 'config.json'}")
    if not any((folder / name).is_file() for name in WEIGHTS):
        pickled = [name for name in PICKLES if (folder / name).is_file()]
        if pickled:
            raise InvalidValue(
                f"{folder / pickled[0]} is a pickled checkpoint; {spec}:DIR loads safetensors only. Convert it once: "
                'python -c "from lightning_gd.models.weights import read_file; from safetensors.torch import '
                f"save_file; save_file({{k: v.contiguous() for k, v in read_file('{folder / PICKLES[0]}').items()}}, "
                f"'{folder / WEIGHTS[0]}', metadata={{'format': 'pt'}})\" (a sharded .bin needs each shard converted)"
            )
        raise FileNotFoundError(f"Hugging Face model weights not found: {folder / WEIGHTS[0]} (safetensors)")
    return folder


def vocabulary(config, folder: Path) -> list[str]:
    """The class names of `config.id2label`, in id order."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise InvalidValue(
            f"{folder / 'config.json'}: id2label must name the classes 0…C-1, got ids {sorted(id2label)}"
        )
    names = [id2label[i] for i in range(len(id2label))]
    if len(set(names)) != len(names):
        raise InvalidValue(f"{folder / 'config.json'}: id2label repeats class names: {', '.join(names)}")
    return names


def input_convention(processor) -> dict:
    """PublishedSegmenter's mean, std and scale, and the size: (short side, exact (height, width)), one of
    them None, from an image processor (None: ImageNet's mean and std, no resizing)."""
    if processor is None:
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "scale": 1.0, "size": (None, None)}
    # the processor takes pixels in [0, 255], multiplies by rescale_factor, then normalises
    scale = 255.0 * (float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0)
    normalise = getattr(processor, "do_normalize", True)
    mean = tuple(float(m) for m in processor.image_mean) if normalise else (0.0, 0.0, 0.0)
    std = tuple(float(s) for s in processor.image_std) if normalise else (1.0, 1.0, 1.0)
    return {"mean": mean, "std": std, "scale": scale, "size": resize_rule(processor)}


def resize_rule(processor) -> tuple[int | None, tuple[int, int] | None]:
    """(short side, exact (height, width)) from the processor's `size`; (None, None) when it does not resize."""
    size = getattr(processor, "size", None)
    if not getattr(processor, "do_resize", True) or size is None:
        return None, None
    if isinstance(size, int):
        return None, (size, size)
    if size.get("height") is not None and size.get("width") is not None:
        return None, (int(size.get("height")), int(size.get("width")))
    if size.get("shortest_edge") is not None:
        return int(size.get("shortest_edge")), None
    raise InvalidValue(f"unsupported image processor size {dict(size)}; expected height and width, or shortest_edge")
