"""CSAIL's scene parsers from local files (nothing is downloaded), as `Segmenter`s.

`ade20k:DIR` — a model of CSAILVision/semantic-segmentation-pytorch trained on ADE20K's 150 classes: DIR holds
`encoder_epoch_N.pth` and `decoder_epoch_N.pth` (as published, e.g. `ade20k-resnet50dilated-ppm_deepsup/` with
epoch 20 or `ade20k-resnet50-upernet/` with epoch 30; the highest N is used unless `epoch=` says otherwise). The
decoder (ppm_deepsup, ppm, upernet) and the ResNet depth come from the state dicts; whether the encoder is dilated
from `dilated=`, else the folder name (`resnet50dilated`), else the published pairing (PPM decoders on dilated
encoders, UPerNet on plain ones). Input: RGB in [0, 1] normalised with ImageNet's mean and std, as in the 2019
releases (the 2018 `baseline-…` releases took BGR on [0, 255] minus a mean; this loader does not). The reference
averages five test scales (short side 300–600); one pass at the middle one, 450, rounded up to the network's
stride as the reference's loader does (456 dilated, 480 UPerNet), is the default `size`.

`upp:DIR` — the Unified Perceptual Parsing model GAN Dissection used (`upp-resnet50-upernet/`: `encoder_epoch_40.pth`,
`decoder_epoch_40.pth`, `labels.json` with `object`, `material` and `object_part` lists, '-' meaning none). Input:
BGR on [0, 255] minus (102.98, 115.95, 122.77), no std, at 256 px as in gandissect. The pyramid pooling is exact
Precise RoI pooling on any device (or adaptive average pooling with `pooling="average"`; see `csail_nets`).

The UPP model answers three questions per pixel: which object (a softmax over objects), which material (a
softmax over materials), and, for an object with parts, which part of it (a softmax per object). A `Segmenter`
gives one distribution over one vocabulary, so the heads are combined into a support per concept,

    s(c) = P_object(c) + P_material(c) + Σ_o P_object(o) · P_part(c | o),

the expected number of heads that answer c if each head draws its answer from its softmax (a part head's answer
counts only where the object head answers its object: the soft form of gandissect's rule that trusts a part only
where its object is predicted). `probs` is s over its sum across the vocabulary: c's share of the heads' answers
at the pixel, '-' answers left out. `labels` is the concept with the most support: the most confident head wins;
as P(o) · P(c | o) ≤ P(o), a part outscores its object only through other terms of its name (door and window are
also objects, merged with them as in gandissect). `heads=("object",)` makes the segmenter an object parser
(probs = P_object without '-'). The paper dissected objects, parts and materials as three label maps per pixel;
one label per pixel is the project's segmenter contract, which this combination serves. Concept names are the
file's; a material whose name is already an object's or a part's becomes "<name> (material)". Parts are those of
sky, building and person by default, as in gandissect (`part_objects=None`: every object with parts).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.models.weights import read_file, shapes_of, state_dict_of, state_differences
from lightning_gd.zoo.csail_nets import POOLING, PPM, EncoderDecoder, ResNetEncoder, UPerNet, UPPDecoder, upsample
from lightning_gd.zoo.segmenting import PublishedSegmenter

# fmt: off
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway",
    "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall",
    "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)  # objectInfo150, the first name of each class, in class order
# fmt: on
ADE20K_MEAN, ADE20K_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB on [0, 1]
UPP_MEAN = (102.9801, 115.9465, 122.7717)  # BGR on [0, 255]
NONE = "-"
HEADS = ("object", "part", "material")
PAPER_PART_OBJECTS = ("sky", "building", "person")


def checkpoint_pair(folder: str | Path | None, epoch: int | None, what: str) -> tuple[Path, Path]:
    """The (encoder, decoder) files of `folder`: `*_epoch_N.pth` (or `.safetensors`), the highest N by default."""
    if folder is None:
        raise InvalidValue(f"name the folder of the {what}: the spec needs a folder after the colon")
    folder = Path(folder)
    layout = f"encoder_epoch_N.pth and decoder_epoch_N.pth (the {what} as published)"
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder} (expected a folder holding {layout})")
    if epoch is None:
        found = [re.fullmatch(r"encoder_epoch_(\d+)\.(pth|safetensors)", p.name) for p in folder.iterdir()]
        epochs = sorted(int(m.group(1)) for m in found if m)
        if not epochs:
            raise FileNotFoundError(f"no encoder_epoch_N.pth in {folder}; the {what} folder holds {layout}")
        epoch = epochs[-1]
    files = []
    for part in ("encoder", "decoder"):
        candidates = [folder / f"{part}_epoch_{epoch}{suffix}" for suffix in (".pth", ".safetensors")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{part} weights not found: {candidates[0]} (the {what} folder holds {layout})")
        files.append(path)
    return files[0], files[1]


def read_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    state = state_dict_of(read_file(path, what), None, path)
    if state and all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_strict(module: nn.Module, state: dict, path: Path, what: str) -> None:
    """Every weight of `module` from `state` and nothing else (batch norms' `num_batches_tracked` may be absent,
    as in files saved by older PyTorch), or a ValueError that names the file and lists what differs."""
    problems = state_differences(shapes_of(module.state_dict()), shapes_of(state), optional=("num_batches_tracked",))
    if problems:
        raise InvalidValue(f"{what} {path} does not match {type(module).__name__}: {problems}")
    module.load_state_dict(state, strict=False)


def _prefixes(state: dict) -> str:
    return ", ".join(sorted({k.split(".")[0] for k in state})[:12]) or "none"


def resnet_encoder(state: dict, path: Path, dilated: bool) -> ResNetEncoder:
    """The deep-stem ResNet whose depth and block type the encoder file's keys give."""
    depths = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    if 0 in depths or "conv3.weight" not in state:
        raise InvalidValue(
            f"encoder {path} is not a CSAIL deep-stem ResNet (keys conv1–conv3, layer1–layer4; supported: resnet18, "
            f"resnet50, resnet101, plain or dilated); its keys start with {_prefixes(state)}"
        )
    encoder = ResNetEncoder(depths, bottleneck="layer1.0.conv3.weight" in state, dilated=dilated)
    load_strict(encoder, state, path, "encoder")
    return encoder


def _shape(state: dict, key: str, path: Path, what: str) -> torch.Size:
    if key not in state:
        raise InvalidValue(f"{what} {path} has no {key}; its keys start with {_prefixes(state)}")
    return state[key].shape


def upernet_dims(state: dict, path: Path, what: str) -> dict:
    """fc_dim, fpn_dim and fpn_inplanes of a UPerNet decoder file."""
    lateral = sorted({int(k.split(".")[1]) for k in state if k.startswith("fpn_in.")})
    inplanes = [_shape(state, f"fpn_in.{i}.0.weight", path, what)[1] for i in lateral]
    fc_dim = _shape(state, "ppm_conv.0.0.weight", path, what)[1]
    return {
        "fc_dim": fc_dim,
        "fpn_dim": _shape(state, "fpn_in.0.0.weight", path, what)[0],
        "fpn_inplanes": (*inplanes, fc_dim),
    }


def ade20k_decoder(state: dict, path: Path) -> tuple[str, nn.Module]:
    """The decoder that the file's keys describe, its weights loaded."""
    if "ppm.0.1.weight" in state:
        kind, last = ("ppm_deepsup" if "conv_last_deepsup.weight" in state else "ppm"), "conv_last.4.weight"
    elif "fpn_in.0.0.weight" in state:
        kind, last = "upernet", "conv_last.1.weight"
    else:
        raise InvalidValue(
            f"decoder {path} is none of ppm_deepsup, ppm, upernet (the decoders supported); its keys start with "
            f"{_prefixes(state)}"
        )
    classes = _shape(state, last, path, "decoder")[0]
    if classes != len(ADE20K_CLASSES):
        raise InvalidValue(f"decoder {path} predicts {classes} classes; the ADE20K models predict 150")
    if kind == "upernet":
        decoder = UPerNet(classes, **upernet_dims(state, path, "decoder"))
    else:
        decoder = PPM(classes, _shape(state, "ppm.0.1.weight", path, "decoder")[1], deepsup=kind == "ppm_deepsup")
    load_strict(decoder, state, path, "decoder")
    return kind, decoder


def _check_joint(encoder: ResNetEncoder, fc_dim: int, enc_path: Path, dec_path: Path) -> None:
    if encoder.channels[-1] != fc_dim:
        raise InvalidValue(
            f"encoder {enc_path} ends with {encoder.channels[-1]} channels but decoder {dec_path} takes {fc_dim}: "
            "they are not one model"
        )


def load_ade20k(
    argument: str | None,
    size: int | None = None,
    epoch: int | None = None,
    dilated: bool | None = None,
    batch_size: int = 16,
) -> PublishedSegmenter:
    """`ade20k:DIR` (see the module doc). `size`: the short side the images are resized to (None: 456 for dilated
    encoders, 480 for plain ones)."""
    enc_path, dec_path = checkpoint_pair(argument, epoch, "ADE20K model")
    kind, decoder = ade20k_decoder(read_state(dec_path, "decoder"), dec_path)
    if dilated is None:
        named = re.search(r"resnet\d+_?(dilated)?", Path(argument).name)
        dilated = bool(named.group(1)) if named else kind.startswith("ppm")
    encoder = resnet_encoder(read_state(enc_path, "encoder"), enc_path, dilated)
    fc_dim = decoder.ppm_conv[0][0].in_channels if kind == "upernet" else decoder.ppm[0][1].in_channels
    _check_joint(encoder, fc_dim, enc_path, dec_path)
    stride = 8 if dilated else 32  # the reference pads test images to a multiple of the network's stride
    size = size if size is not None else -(-450 // stride) * stride
    net = EncoderDecoder(encoder, decoder)
    return PublishedSegmenter(net, ADE20K_CLASSES, mean=ADE20K_MEAN, std=ADE20K_STD, size=size, batch_size=batch_size)


@dataclass(frozen=True)
class UPPVocabulary:
    """The concepts of a UPP labels.json and where each head channel goes: for every object, material and part
    channel the index of its concept, -1 for none ('-' or a head left out)."""

    concepts: tuple[str, ...]
    categories: dict[str, str]
    object_index: tuple[int, ...]
    material_index: tuple[int, ...]
    part_channels: tuple[int, ...]  # the part head's channels in use: those of the chosen owners
    part_index: tuple[int, ...]  # per channel in use
    part_groups: tuple[tuple[int, int, int], ...]  # (owner's object channel, start, end) in the channels in use


def read_labels(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"UPP vocabulary not found: {path} (labels.json with object, material, object_part)")
    try:
        labels = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidValue(f"UPP vocabulary {path} is not JSON: {err}") from err
    lacking = [k for k in ("object", "material", "object_part") if k not in labels]
    if lacking:
        raise InvalidValue(f"UPP vocabulary {path} lacks {', '.join(lacking)}; it needs object, material, object_part")
    return labels


def upp_vocabulary(labels: dict, part_objects=PAPER_PART_OBJECTS, heads=HEADS) -> UPPVocabulary:
    """Concepts in gandissect's order (objects, materials, parts) and the channel → concept maps."""
    objects = list(labels["object"])
    twice = sorted({o for o in objects if objects.count(o) > 1})
    strays = [o for o in labels["object_part"] if o not in objects]
    if twice or strays:
        problem = (
            f"lists objects twice: {', '.join(twice)}" if twice else f"has parts of non-objects: {', '.join(strays)}"
        )
        raise InvalidValue(f"labels.json {problem}")
    owners = sorted(labels["object_part"], key=objects.index)  # the part head's order: owners by object index
    chosen = owners if part_objects is None else list(part_objects)
    unknown = [o for o in chosen if o not in owners]
    if unknown:
        raise InvalidValue(f"no parts for {', '.join(unknown)} in labels.json; objects with parts: {', '.join(owners)}")
    index = {name: i for i, name in enumerate(n for n in objects if n != NONE)}
    categories = dict.fromkeys(index, "object")
    chosen = [o for o in owners if o in chosen] if "part" in heads else []  # in object order, whatever was asked
    parts = [p for o in chosen for p in labels["object_part"][o] if p != NONE]
    part_names = list(dict.fromkeys(p for p in parts if p not in index))
    materials = [m for m in labels["material"] if m != NONE] if "material" in heads else []
    named = {m: f"{m} (material)" if m in index or m in part_names else m for m in materials}
    for name, category in [*((named[m], "material") for m in materials), *((p, "part") for p in part_names)]:
        index[name] = len(index)
        categories[name] = category
    part_channels, part_index, groups, start = [], [], [], 0
    for owner in owners:
        names = labels["object_part"][owner]
        if owner in chosen:
            groups.append((objects.index(owner), len(part_channels), len(part_channels) + len(names)))
            part_channels += range(start, start + len(names))
            part_index += [index[p] if p != NONE else -1 for p in names]
        start += len(names)
    return UPPVocabulary(
        concepts=tuple(index),
        categories=categories,
        object_index=tuple(index[o] if o != NONE else -1 for o in objects),
        material_index=tuple(index[named[m]] if m in named else -1 for m in labels["material"]),
        part_channels=tuple(part_channels),
        part_index=tuple(part_index),
        part_groups=tuple(groups),
    )


def combine(heads: dict[str, torch.Tensor], index: dict[str, torch.Tensor], groups, num_concepts: int):
    """Head logits (B, K, H, W) → log support (B, num_concepts, H, W) (see the module doc).

    `index[head]` maps the head's channels to concepts (-1: none); `heads["part"]` holds the part channels of
    `groups` only, each group (owner's object channel, start, end) relative to them."""
    p_object = heads["object"].softmax(1)
    B, _, H, W = p_object.shape
    support = p_object.new_zeros(B, num_concepts, H, W)

    def add(support, probs, idx):
        keep = idx >= 0
        return support.index_add(1, idx[keep], probs[:, keep])

    support = add(support, p_object, index["object"])
    if "material" in heads:
        support = add(support, heads["material"].softmax(1), index["material"])
    for owner, start, end in groups:
        p_part = heads["part"][:, start:end].softmax(1) * p_object[:, owner : owner + 1]  # P(o) · P(part | o)
        support = add(support, p_part, index["part"][start:end])
    return support.clamp_min(torch.finfo(support.dtype).tiny).log()


class UnifiedParser(nn.Module):
    """The UPP network: images (B, 3, h, w) → log support per concept (B, C, h, w) (see the module doc). The
    heads are upsampled to the input before their softmaxes, as in the reference."""

    def __init__(self, encoder: nn.Module, decoder: UPPDecoder, vocabulary: UPPVocabulary, heads=HEADS):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.num_concepts, self.groups = len(vocabulary.concepts), vocabulary.part_groups
        self.use_material = "material" in heads
        for name in ("object_index", "material_index", "part_channels", "part_index"):
            self.register_buffer(name, torch.tensor(getattr(vocabulary, name), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x))
        size = x.shape[-2:]
        heads = {"object": upsample(out["object"], size)}
        if self.use_material:
            heads["material"] = upsample(out["material"], size)
        if self.groups:
            heads["part"] = upsample(out["part"][:, self.part_channels], size)
        index = {"object": self.object_index, "material": self.material_index, "part": self.part_index}
        return combine(heads, index, self.groups, self.num_concepts)


def upp_decoder(state: dict, path: Path, labels: dict, labels_path: Path, pooling: str) -> UPPDecoder:
    """The decoder file's UPerNet, its head sizes checked against labels.json."""
    classes = {h: _shape(state, f"{h}_head.1.weight", path, "decoder")[0] for h in HEADS}
    classes["scene"] = _shape(state, "scene_head.2.weight", path, "decoder")[0]
    expected = {
        "object": len(labels["object"]),
        "material": len(labels["material"]),
        "part": sum(len(parts) for parts in labels["object_part"].values()),
        **({"scene": len(labels["scene"])} if "scene" in labels else {}),
    }
    differ = [f"{h} head {classes[h]} channels, labels.json {n}" for h, n in expected.items() if classes[h] != n]
    if differ:
        raise InvalidValue(f"decoder {path} does not fit the vocabulary {labels_path}: {'; '.join(differ)}")
    decoder = UPPDecoder(classes, **upernet_dims(state, path, "decoder"), pool=POOLING[pooling])
    load_strict(decoder, state, path, "decoder")
    return decoder


def load_upp(
    argument: str | None,
    size: int | None = 256,
    epoch: int | None = None,
    part_objects: tuple[str, ...] | list[str] | None = PAPER_PART_OBJECTS,
    heads: tuple[str, ...] | list[str] = HEADS,
    pooling: str = "prroi",
    batch_size: int = 4,
) -> PublishedSegmenter:
    """`upp:DIR` (see the module doc). `part_objects`: whose parts are concepts (None: all); `heads`: which heads
    make the vocabulary (object always); `pooling`: `prroi` (exact, the reference's) or `average`."""
    if pooling not in POOLING:
        raise InvalidValue(f"pooling must be one of {', '.join(POOLING)}; got {pooling!r}")
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    if "object" not in heads or not set(heads) <= set(HEADS):
        raise InvalidValue(f"heads are among {', '.join(HEADS)} and include object; got {', '.join(heads) or 'none'}")
    part_objects = (part_objects,) if isinstance(part_objects, str) else part_objects
    enc_path, dec_path = checkpoint_pair(argument, epoch, "UPP model")
    labels_path = Path(argument) / "labels.json"
    labels = read_labels(labels_path)
    vocabulary = upp_vocabulary(labels, part_objects, heads)
    decoder = upp_decoder(read_state(dec_path, "decoder"), dec_path, labels, labels_path, pooling)
    encoder = resnet_encoder(read_state(enc_path, "encoder"), enc_path, dilated=False)
    _check_joint(encoder, decoder.ppm_conv[0][0].in_channels, enc_path, dec_path)
    return PublishedSegmenter(
        UnifiedParser(encoder, decoder, vocabulary, heads),
        vocabulary.concepts,
        vocabulary.categories,
        mean=UPP_MEAN,
        bgr=True,
        scale=255.0,
        size=size,
        batch_size=batch_size,
    )
