"""An open-vocabulary segmenter: CLIPSeg (Lüddecke and Ecker, CVPR 2022) saved in a local folder (`clipseg:DIR`),
segmenting the concepts a user writes (`clipseg:DIR?concepts=glasses,smile,hair`; see `lightning_gd.zoo.prompts`
for lists, categories, prompt ensembling and the vocabulary file).

The folder is what `save_pretrained` writes for `CLIPSegForImageSegmentation` and its `CLIPSegProcessor`:
`config.json`, `model.safetensors`, the tokenizer (`tokenizer.json`, or `vocab.json` and `merges.txt`) and the
image processor (`processor_config.json` or `preprocessor_config.json`). Nothing is downloaded, no code from the
folder runs, and pickled weights are refused (see `lightning_gd.zoo.hf`).

The prompts are encoded once, when the segmenter is built: a concept's text embedding is the mean of its
prompts' embeddings (prompt ensembling). An image batch is resized to the processor's square input size
(bilinear, antialiased when it shrinks, as the processor's resampling is) and normalised as the processor says;
CLIPSeg's vision transformer runs once per image, only up to the last layer its decoder reads, and the decoder
once per image and concept.

From scores to probabilities. CLIPSeg gives each concept c an independent sigmoid logit l_c per pixel, and
nothing else: a pixel no prompt claims has low logits everywhere. The segmenter adds an explicit `background`
class (its first concept, category `background`) with the constant logit b = log(t / (1 - t)) of the
`background_threshold` t, and takes a softmax over [b, l_1, …, l_C] / T at the `temperature` T:

    p_background = 1 / (1 + Σ_c exp((l_c - b) / T)),    p_c = exp((l_c - b) / T) · p_background

So the label of a pixel is `background` where every concept's sigmoid is below t, and otherwise the concept with
the highest logit; with one concept and T = 1, p_c is CLIPSeg's own sigmoid shifted to put t at one half. A
smaller T makes the probabilities harder, a larger one softer; the labels do not depend on T. The probabilities
are differentiable in the image (the causal search needs that); the scores are resized to the image's size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lightning_gd.errors import InvalidValue, MissingPackage
from lightning_gd.models.hooks import TraceDict
from lightning_gd.zoo.hf import EXTRA, checked_folder, input_convention
from lightning_gd.zoo.prompts import BACKGROUND, Concept, read_concepts
from lightning_gd.zoo.segmenting import PublishedSegmenter

TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
ARCHITECTURE = "CLIPSegForImageSegmentation"
DECODER_BATCH = 32  # images × concepts per decoder pass: its input repeats the vision activations that often


class CLIPSegScores(nn.Module):
    """`forward` for `PublishedSegmenter`: CLIPSeg's scores over [background, *concepts] (see the module doc).

    Args:
        embeddings: (C, D) one text embedding per concept, prompts already averaged.
        concepts: the vocabulary, for its names, categories and prompts.
        size: CLIPSeg's square input size (the processor's).
        extract_layers: the vision layers the decoder reads (the model's `config.extract_layers`).
        background_threshold: t in (0, 1), the sigmoid level below which a concept does not claim a pixel.
        temperature: T > 0, divides every logit before the softmax.
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        concepts: tuple[Concept, ...],
        size: int,
        extract_layers: list[int],
        background_threshold: float = 0.5,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < background_threshold < 1.0:
            raise InvalidValue(f"background_threshold is a sigmoid level in (0, 1); got {background_threshold}")
        if not temperature > 0.0:
            raise InvalidValue(f"temperature divides the logits, so it is above 0; got {temperature}")
        self.register_buffer("embeddings", embeddings.detach().float().clone(), persistent=False)  # (C, D)
        self.prompts = {c.name: c.prompts for c in concepts}
        self.size, self.layers = size, [f"encoder.layers.{i}" for i in extract_layers]
        self.background_threshold, self.temperature = background_threshold, temperature

    def fingerprint_settings(self) -> dict:
        return {
            "prompts": sorted(self.prompts.items()),
            "size": self.size,
            "layers": self.layers,
            "background_threshold": self.background_threshold,
            "temperature": self.temperature,
        }

    @property
    def background_logit(self) -> float:
        t = self.background_threshold
        return math.log(t / (1 - t))

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) → scores (B, 1 + C, S, S) at CLIPSeg's input size S."""
        logits = self.prompt_logits(model, self.resized(x))  # (B, C, S, S)
        background = logits.new_full((len(x), 1, *logits.shape[-2:]), self.background_logit)
        return torch.cat([background, logits], 1) / self.temperature

    def resized(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        # antialiased, as the processor's resampling is where it shrinks; where it enlarges that is plain bilinear
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)

    def prompt_logits(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIPSeg's sigmoid logits (B, C, S, S) per concept, for pixel values at its input size: what
        `model(pixel_values=…, conditional_embeddings=…).logits` gives, with gradients to the pixels."""
        activations = self.vision_activations(model, pixel_values)  # each (B, tokens, width)
        B, per = len(pixel_values), max(1, DECODER_BATCH // len(pixel_values))
        out = []
        for embeddings in self.embeddings.split(per):  # (k, D)
            k = len(embeddings)
            repeated = [a.repeat_interleave(k, 0) for a in activations]  # (B·k, tokens, width), image-major
            logits = model.decoder(repeated, embeddings.repeat(B, 1)).logits  # (B·k, S', S')
            out.append(logits.reshape(B, k, *logits.shape[-2:]))
        return torch.cat(out, 1)

    def vision_activations(self, model: nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The vision transformer's hidden states after each layer the decoder reads; the layers after the last
        of them never run."""
        with TraceDict(model.clip.vision_model, self.layers, stop=True) as traced:
            model.clip.vision_model(pixel_values=pixel_values)
        outputs = [traced[name].output for name in self.layers]
        return [o[0] if isinstance(o, (tuple, list)) else o for o in outputs]  # older transformers return tuples


def load(
    argument: str | None,
    concepts: str | Path | list[str] | None = None,
    categories: dict[str, str] | list[str] | str | None = None,
    background_threshold: float = 0.5,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> PublishedSegmenter:
    """The CLIPSeg model in the folder `argument` (spec `clipseg:DIR`) segmenting `concepts` (see the module doc)."""
    vocabulary = read_concepts(concepts, categories)  # a bad vocabulary fails before the model loads
    folder = clipseg_folder(argument)
    try:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor
    except ImportError as err:
        raise MissingPackage(f"clipseg:DIR segmenters need the transformers package: {EXTRA}") from err
    try:
        model, info = CLIPSegForImageSegmentation.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, trust_remote_code=False, output_loading_info=True
        )
        processor = CLIPSegProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidValue(f"{folder} does not hold a loadable CLIPSeg model and processor: {err}") from err
    missing = info.get("missing_keys") or []
    if missing:  # transformers would start these from random values: a segmenter that says nothing
        raise InvalidValue(f"{folder}: the weights lack {len(missing)} tensors of CLIPSeg, e.g. {sorted(missing)[0]}")
    model = model.float().eval()
    convention = input_convention(processor.image_processor)
    scores = CLIPSegScores(
        text_embeddings(model, processor.tokenizer, vocabulary, folder),
        vocabulary,
        square_size(convention.pop("size"), model.config.vision_config.patch_size, folder),
        list(model.config.extract_layers),
        background_threshold,
        temperature,
    )
    return PublishedSegmenter(
        model,
        (BACKGROUND, *(c.name for c in vocabulary)),
        {BACKGROUND: BACKGROUND, **{c.name: c.category for c in vocabulary}},
        **convention,
        batch_size=batch_size,
        forward=scores,
    )


def clipseg_folder(argument: str | None) -> Path:
    """The folder, after checking that it holds a CLIPSeg model with safetensors weights, a tokenizer and an image
    processor; what it holds instead is named."""
    folder = checked_folder(argument, "clipseg")
    config = json.loads((folder / "config.json").read_text())
    found = config.get("architectures") or [config.get("model_type", "a model of no model_type")]
    if config.get("model_type") != "clipseg" or ARCHITECTURE not in found:
        hint = " (hf:DIR loads semantic-segmentation models)" if config.get("model_type") != "clipseg" else ""
        raise InvalidValue(f"{folder} holds {', '.join(map(str, found))}, not {ARCHITECTURE}{hint}")
    if not any(all((folder / name).is_file() for name in names) for names in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"CLIPSeg tokenizer not found in {folder}: expected tokenizer.json, or vocab.json and merges.txt (save "
            "the CLIPSegProcessor with save_pretrained into the model's folder)"
        )
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise FileNotFoundError(
            f"CLIPSeg image processor not found in {folder}: expected {' or '.join(PROCESSOR_FILES)} (save the "
            "CLIPSegProcessor with save_pretrained into the model's folder)"
        )
    return folder


@torch.no_grad()
def text_embeddings(model: nn.Module, tokenizer, concepts: tuple[Concept, ...], folder: Path) -> torch.Tensor:
    """(C, D): each concept's prompts through CLIPSeg's text encoder and projection, averaged."""
    prompts = [p for c in concepts for p in c.prompts]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    text = model.config.text_config
    longest = int(tokens["attention_mask"].sum(1).max())
    if longest > text.max_position_embeddings:
        lengths = tokens["attention_mask"].sum(1).tolist()
        prompt = prompts[lengths.index(longest)]
        raise InvalidValue(
            f"the prompt {prompt!r} is {longest} tokens; {folder}'s text encoder reads at most "
            f"{text.max_position_embeddings}"
        )
    if int(tokens["input_ids"].max()) >= text.vocab_size:
        raise InvalidValue(
            f"{folder}: the tokenizer's ids reach {int(tokens['input_ids'].max())}, past the text encoder's "
            f"{text.vocab_size} tokens (a tokenizer from another model?)"
        )
    features = model.clip.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    features = features if isinstance(features, torch.Tensor) else features.pooler_output  # (P, D)
    counts = torch.tensor([len(c.prompts) for c in concepts])
    owner = torch.repeat_interleave(torch.arange(len(concepts)), counts)  # the concept of each prompt
    return torch.zeros(len(concepts), features.shape[1]).index_add_(0, owner, features.float()) / counts[:, None]


def square_size(size: tuple[int | None, tuple[int, int] | None], patch: int, folder: Path) -> int:
    """CLIPSeg's input side from the processor's size rule: its decoder reshapes the patch tokens to a square."""
    short, exact = size
    if exact is not None and exact[0] != exact[1]:
        raise InvalidValue(f"{folder}: the image processor resizes to {exact[0]}×{exact[1]}; CLIPSeg takes squares")
    side = exact[0] if exact is not None else short
    if side is None:
        raise InvalidValue(f"{folder}: the image processor does not resize; CLIPSeg needs a fixed square input size")
    if side % patch:
        raise InvalidValue(f"{folder}: the input size {side} is not a multiple of the {patch} px patches")
    return side
