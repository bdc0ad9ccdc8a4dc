"""Throughput of the published architectures on this machine, and what the paper's experiments would cost.

    python bench/models.py [--device cpu|cuda] [--batch-size 4] [--batches 3] [--threads 2]

Random weights in the published layouts (speed does not depend on the values): a 256×256 ProGAN (the paper's
LSUN generators) and a 256×256 StyleGAN2 (config-f widths); the CSAIL ADE20K segmenters (ResNet-50 dilated +
PPM, ResNet-50 + UPerNet) and the Unified Perceptual Parsing model (ResNet-50 + UPerNet with object, part and
material heads, with head sizes like the published model's), each loaded through the zoo from files written
here, on 256×256 generated images; CLIPSeg (rd64-refined's layout, `clipseg:DIR`) for 1, 10 and 50 concepts.
Inception for FID is
torchvision's InceptionV3 (the same architecture as torch-fidelity's) at 299×299. Projections: the paper's
dissection (N = 10,000: a threshold pass that stops after layer4 and a full generator + segmenter pass) and
per-unit FID (N = 200,000 generated images, each through Inception once).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def images_per_second(fn, batch: torch.Tensor, batches: int) -> float:
    with torch.no_grad():
        fn(batch[:1])  # warm-up
        if batch.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(batches):
            fn(batch)
        if batch.is_cuda:
            torch.cuda.synchronize()
    return batches * len(batch) / (time.perf_counter() - t0)


def write_csail(folder: Path) -> dict[str, str]:
    """Random-weight files in the CSAIL layouts; returns zoo specs."""
    from lightning_gd.zoo.csail_nets import PPM, ResNetEncoder, UPerNet, UPPDecoder

    specs = {}
    for name, dilated, decoder in (
        ("ade20k-resnet50dilated-ppm_deepsup", True, PPM(150)),
        ("ade20k-resnet50-upernet", False, UPerNet(150)),
    ):
        (folder / name).mkdir()
        torch.save(ResNetEncoder(dilated=dilated).state_dict(), folder / name / "encoder_epoch_20.pth")
        torch.save(decoder.state_dict(), folder / name / "decoder_epoch_20.pth")
        specs[f"ade20k ({name.split('-', 1)[1]})"] = f"ade20k:{folder / name}"
    # UPP: the head sizes of the published model (objects, parts, materials, scenes) with placeholder names
    sizes = {"object": 336, "material": 26, "scene": 365}
    parts = {"building": 12, "person": 14, "sky": 2}
    labels = {
        "object": ["-", "building", "person", "sky", *[f"object{i}" for i in range(sizes["object"] - 4)]],
        "material": ["-", *[f"material{i}" for i in range(sizes["material"] - 1)]],
        "scene": [f"scene{i}" for i in range(sizes["scene"])],
        "object_part": {o: ["-", *[f"{o}-part{i}" for i in range(n - 1)]] for o, n in parts.items()},
    }
    classes = {"object": sizes["object"], "material": sizes["material"], "scene": sizes["scene"]}
    classes["part"] = sum(parts.values())
    (folder / "upp").mkdir()
    torch.save(ResNetEncoder(dilated=False).state_dict(), folder / "upp" / "encoder_epoch_40.pth")
    torch.save(UPPDecoder(classes).state_dict(), folder / "upp" / "decoder_epoch_40.pth")
    (folder / "upp" / "labels.json").write_text(json.dumps(labels))
    specs["upp (resnet50-upernet)"] = f"upp:{folder / 'upp'}"
    return specs


def write_clipseg(folder: Path) -> None:
    """Random weights in CLIPSeg rd64-refined's layout (ViT-B/16 at 352 px, decoder of width 64 reading vision layers
    3, 6 and 9) with a CLIPSegProcessor; the tokenizer is a stand-in (letters only), which changes nothing but the
    one-off cost of encoding the prompts."""
    import string

    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    tokens = ["<|startoftext|>", *string.ascii_lowercase, *(c + "</w>" for c in string.ascii_lowercase)]
    vocab = {token: i for i, token in enumerate([*tokens, "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    eos = len(vocab) - 1  # CLIP's text model pools at the end-of-text token
    config = CLIPSegConfig(
        text_config={"bos_token_id": 0, "eos_token_id": eos, "pad_token_id": eos},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "patch_size": 16},
        projection_dim=512,
        extract_layers=[3, 6, 9],
        reduce_dim=64,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=2048,
        use_complex_transposed_convolution=True,
    )
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    images = ViTImageProcessor(
        size={"height": 352, "width": 352}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    )
    CLIPSegProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)


def clipseg_rates(images: torch.Tensor, batches: int, concepts: tuple[int, ...] = (1, 10, 50)) -> dict[str, float]:
    """Images per second of clipseg:DIR on `images` for vocabularies of a few sizes (one prompt a concept)."""
    from lightning_gd import zoo

    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_clipseg(Path(tmp))
        for n in concepts:
            words = [f"concept {''.join(chr(97 + int(d)) for d in str(i))}" for i in range(n)]
            seg = zoo.segmenter(f"clipseg:{tmp}", concepts=words).to(images.device)
            rates[f"clipseg (rd64, {n} concepts) segmenter"] = images_per_second(seg.labels, images, batches)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torchvision.models import inception_v3

    from lightning_gd import zoo
    from lightning_gd.latents import latents
    from lightning_gd.models.hooks import Trace
    from lightning_gd.zoo.progan import ProGAN, preset
    from lightning_gd.zoo.stylegan2 import StyleGAN2Generator

    dev = torch.device(args.device)
    B, n = args.batch_size, args.batches
    rates = {}
    progan = ProGAN(preset(256)).to(dev).eval()
    z = latents(range(B), progan.z_dim, 0).to(dev)
    rates["ProGAN 256 (G)"] = images_per_second(progan, z, n)

    def until_layer4(zz):
        with Trace(progan, "layer4", stop=True):
            progan(zz)

    rates["ProGAN 256 (up to layer4)"] = images_per_second(until_layer4, z, n)
    widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    style = StyleGAN2Generator(256, widths, [512] * 9).to(dev).eval()
    rates["StyleGAN2 256 (G)"] = images_per_second(style, latents(range(B), 512, 0).to(dev), n)
    with torch.no_grad():
        images = progan(z).clamp(-1, 1)  # (B, 3, 256, 256)
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in write_csail(Path(tmp)).items():
            seg = zoo.segmenter(spec).to(dev)
            rates[f"{name} segmenter"] = images_per_second(seg.labels, images, n)
    try:
        rates.update(clipseg_rates(images, n))
    except ImportError:
        print('CLIPSeg left out: it needs transformers (pip install "lightning_gd[hf]")')
    inception = inception_v3(weights=None, aux_logits=False, init_weights=False).to(dev).eval()
    x299 = torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear")
    rates["InceptionV3 299 (FID features)"] = images_per_second(inception, x299, n)
    print(f"device {dev}, batch {B}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, r in rates.items():
        print(f"{name:<42} {r:8.2f} images/s")
    g, g4, inc = rates["ProGAN 256 (G)"], rates["ProGAN 256 (up to layer4)"], rates["InceptionV3 299 (FID features)"]
    for name in [k for k in rates if k.endswith("segmenter")]:
        seconds = 10_000 * (1 / g4 + 1 / g + 1 / rates[name])
        print(f"paper dissection, N = 10,000, with {name}: {seconds / 3600:7.2f} h")
    print(f"paper per-unit FID, N = 200,000 (ProGAN + Inception): {200_000 * (1 / g + 1 / inc) / 3600:7.2f} h")


if __name__ == "__main__":
    main()
