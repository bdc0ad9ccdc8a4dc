"""A tiny random CLIPSeg saved as `save_pretrained` writes a published one: the model (safetensors), and a
CLIPSegProcessor whose tokenizer is built here from a hand-written vocab.json and merges.txt (lower-case letters,
each also as a word end, and a few merges), since no published tokenizer can be downloaded."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)  # not ImageNet's, so a test sees which ones were used
SIZE, PATCH = 32, 8  # the processor's square input and the vision patches: a 4×4 token grid
MERGES = ("g l", "gl a", "s s</w>", "t h", "th e</w>")


def write_tokenizer(folder: Path) -> dict[str, int]:
    """vocab.json and merges.txt of a byte-level BPE in CLIP's layout; the end-of-text token has the largest id,
    as in CLIP (its text model pools at the end-of-text token)."""
    vocab = {"<|startoftext|>": 0}
    for suffix in ("", "</w>"):
        vocab.update({ch + suffix: len(vocab) + i for i, ch in enumerate(string.ascii_lowercase)})
    vocab.update({m.replace(" ", ""): len(vocab) + i for i, m in enumerate(MERGES)})
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return vocab


def tiny_clipseg(vocab_size: int, extract_layers=(0, 1), layers: int = 3, seed: int = 0):
    """CLIPSeg with 16-wide text and vision transformers of 2 and `layers` layers and an 8-wide decoder, every
    weight drawn at a scale where prompts give different masks (the default init gives near-constant ones)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    eos = vocab_size - 1
    text = {"vocab_size": vocab_size, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": eos,
            "pad_token_id": eos}  # fmt: skip
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2,
              "image_size": SIZE, "patch_size": PATCH}  # fmt: skip
    config = CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=8,
        extract_layers=list(extract_layers),
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    model = CLIPSegForImageSegmentation(config).eval()
    draw = torch.Generator().manual_seed(seed)  # module-scoped fixtures run before the tests' own seeding
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):  # gains near 0 would leave the biases alone, the same everywhere
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=draw))
                continue
            for p in module.parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=draw) * 0.3)
    return model


def write_clipseg(folder: Path, size: int = SIZE, **options):
    """Save a tiny CLIPSeg and its processor (resizing to `size`×`size`) into `folder`; returns the model."""
    from transformers import CLIPSegProcessor, CLIPTokenizer, ViTImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    images = ViTImageProcessor(size={"height": size, "width": size}, image_mean=MEAN, image_std=STD)
    model = tiny_clipseg(len(vocab), **options)
    model.save_pretrained(folder)
    CLIPSegProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return model
