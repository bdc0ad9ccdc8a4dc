"""CSAIL's scene parsers from files in their published layouts (random weights, real key names and shapes): they
load strictly through the zoo, compute what slow functional re-implementations of the reference compute, take
their inputs in the reference's conventions, and fail with errors that name the file."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from lightning_gd import zoo
from lightning_gd.zoo import csail
from lightning_gd.zoo.csail_nets import POOLING, prroi_pool, prroi_weights
from lightning_gd.zoo.segmenting import PublishedSegmenter
from tests.zoo import csail_layouts as layouts

pytestmark = pytest.mark.usefixtures("one_thread")

# a small vocabulary in the layout of upp-resnet50-upernet/labels.json; object_part deliberately not in object order
LABELS = {
    "object": ["-", "wall", "sky", "building", "person", "door", "window", "glass", "tree"],
    "material": ["-", "brick", "glass", "hair", "wood"],
    "scene": ["street", "bedroom", "church"],
    "object_part": {
        "person": ["-", "head", "hair", "arm"],
        "sky": ["-", "cloud"],
        "building": ["-", "window", "door", "roof", "dome"],
        "tree": ["-", "trunk"],
    },
}
UPP_CONCEPTS = (
    *("wall", "sky", "building", "person", "door", "window", "glass", "tree"),
    *("brick", "glass (material)", "hair (material)", "wood"),
    *("cloud", "roof", "dome", "head", "hair", "arm"),
)


def save(folder: Path, **files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, state in files.items():
        torch.save(dict(state), folder / f"{name}.pth")
    return folder


@pytest.fixture(scope="module")
def ade_ppm(module_tmp):
    enc, dec = layouts.resnet(), layouts.ppm_deepsup()
    folder = save(module_tmp("m") / "ade20k-resnet50dilated-ppm_deepsup", encoder_epoch_20=enc)
    save(folder, decoder_epoch_20=dec)
    return folder, dict(enc), dict(dec)


@pytest.fixture(scope="module")
def ade_upernet(module_tmp):
    enc, dec = layouts.resnet(seed=4), layouts.upernet()
    folder = save(module_tmp("m") / "ade20k-resnet50-upernet", encoder_epoch_30=enc, decoder_epoch_30=dec)
    return folder, dict(enc), dict(dec)


@pytest.fixture(scope="module")
def upp(module_tmp):
    classes = {"object": 9, "part": 13, "material": 5, "scene": 3}
    enc, dec = layouts.resnet(seed=5), layouts.upp_decoder(classes)
    folder = save(module_tmp("m") / "upp-resnet50-upernet", encoder_epoch_40=enc, decoder_epoch_40=dec)
    (folder / "labels.json").write_text(json.dumps(LABELS))
    return folder, dict(enc), dict(dec)


@pytest.fixture(scope="module")
def ade_ppm_seg(ade_ppm):
    return zoo.segmenter(f"ade20k:{ade_ppm[0]}", size=64)


@pytest.fixture(scope="module")
def upp_seg(upp):
    return zoo.segmenter(f"upp:{upp[0]}", size=64)


def images(n=2, size=64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(7)) * 2 - 1


def rgb_normalised(x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return ((x + 1) / 2 - mean[:, None, None]) / std[:, None, None]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_ade20k_vocabulary_is_object_info_150():
    names = csail.ADE20K_CLASSES
    assert len(names) == 150 and len(set(names)) == 150
    # (class index, first name) as in data/object150_info.csv, whose spaces are written ';'
    for idx, name in [(1, "wall"), (2, "building"), (13, "person"), (45, "chest of drawers"), (57, "pool table")]:
        assert names[idx - 1] == name
    assert names[136 - 1] == "vase" and names[137 - 1] == "traffic light" and names[-1] == "flag"


def test_ade20k_ppm_deepsup_loads_strictly_and_matches_the_reference(ade_ppm, ade_ppm_seg):
    folder, enc, dec = ade_ppm
    seg = ade_ppm_seg
    assert isinstance(seg, PublishedSegmenter) and seg.concepts == csail.ADE20K_CLASSES
    assert set(seg.categories.values()) == {"object"}
    layer3, layer4 = seg.net.encoder.layer3, seg.net.encoder.layer4  # dilated, from the folder name
    assert (
        layer3[0].conv2.stride == (1, 1) and layer3[0].conv2.dilation == (1, 1) and layer3[1].conv2.dilation == (2, 2)
    )
    assert layer4[0].conv2.dilation == (2, 2) and layer4[2].conv2.dilation == (4, 4)
    assert torch.equal(seg.net.decoder.conv_last[4].weight, dec["conv_last.4.weight"])
    x = images()
    with torch.no_grad():
        logits = seg.logits(x)
        ref = layouts.ref_ppm(dec, layouts.ref_resnet(enc, rgb_normalised(x), dilated=True))  # (2, 150, 8, 8)
    assert ref.shape == (2, 150, 8, 8) and logits.shape == (2, 150, 64, 64)
    assert relative_error(logits, layouts.up(ref, (64, 64))) < 1e-4
    probs = seg.probs(x)
    assert probs.shape == (2, 150, 64, 64) and torch.allclose(probs.sum(1), torch.ones(2, 64, 64), atol=1e-5)


def test_ade20k_upernet_loads_strictly_and_matches_the_reference(ade_upernet):
    folder, enc, dec = ade_upernet
    seg = zoo.segmenter(f"ade20k:{folder}", size=64)
    assert seg.net.encoder.layer4[0].conv2.stride == (2, 2)  # plain ResNet-50 under UPerNet
    x = images()
    with torch.no_grad():
        probs = seg.probs(x)
        feats = layouts.ref_resnet(enc, rgb_normalised(x), dilated=False)
        _, fused = layouts.ref_fpn(dec, feats, F.adaptive_avg_pool2d)
        ref = F.conv2d(layouts.cbr(dec, "conv_last.0", fused), dec["conv_last.1.weight"], dec["conv_last.1.bias"])
    assert ref.shape == (2, 150, 16, 16)  # 1/4 of the input
    assert torch.allclose(probs, layouts.up(ref, (64, 64)).softmax(1), atol=1e-4)
    assert torch.allclose(probs.sum(1), torch.ones(2, 64, 64), atol=1e-5)


def test_ade20k_architecture_without_a_telling_folder_name(ade_ppm, ade_upernet, tmp_path):
    for (folder, _, _), name, dilated, size in [(ade_ppm, "mine", True, 456), (ade_upernet, "theirs", False, 480)]:
        (tmp_path / name).mkdir()
        for f in folder.iterdir():
            os.symlink(f, tmp_path / name / f.name)
        seg = csail.load_ade20k(str(tmp_path / name))
        assert seg.size == size  # 450, the middle test scale, up to a multiple of the stride
        assert (seg.net.encoder.layer4[0].conv2.stride == (1, 1)) == dilated


def test_inputs_follow_the_reference_conventions(ade_ppm_seg, upp_seg):
    x = torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 64, 64)  # R, G, B
    expected = torch.tensor([(1 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0 - 0.406) / 0.225])
    assert torch.allclose(ade_ppm_seg.normalise(x)[0, :, 0, 0], expected, atol=1e-5)
    bgr = torch.tensor([0 - 102.9801, 127.5 - 115.9465, 255 - 122.7717])  # B, G, R on [0, 255] minus the mean
    assert torch.allclose(upp_seg.normalise(x)[0, :, 0, 0], bgr, atol=1e-4)
    assert inspect.signature(csail.load_upp).parameters["size"].default == 256  # as gandissect segmented


def test_upp_vocabulary_follows_labels_json():
    vocab = csail.upp_vocabulary(LABELS)
    assert vocab.concepts == UPP_CONCEPTS
    assert [vocab.categories[c] for c in ("door", "glass (material)", "hair", "cloud")] == [
        "object",
        "material",
        "part",
        "part",
    ]
    # the part head holds each owner's parts with owners in object order: sky, building, person, tree
    assert vocab.part_groups == ((2, 0, 2), (3, 2, 7), (4, 7, 11)) and vocab.part_channels == tuple(range(11))
    window, door = UPP_CONCEPTS.index("window"), UPP_CONCEPTS.index("door")
    assert vocab.part_index[2:7] == (-1, window, door, UPP_CONCEPTS.index("roof"), UPP_CONCEPTS.index("dome"))
    assert vocab.object_index[0] == -1 and vocab.material_index == (-1, 8, 9, 10, 11)
    trees = csail.upp_vocabulary(LABELS, part_objects=["tree"], heads=("object", "part"))
    assert trees.concepts[8:] == ("trunk",) and trees.part_groups == ((8, 0, 2),) and trees.part_channels == (11, 12)
    assert csail.upp_vocabulary(LABELS, heads=("object",)).concepts == UPP_CONCEPTS[:8]
    with pytest.raises(ValueError, match="no parts for car.*sky, building, person, tree"):
        csail.upp_vocabulary(LABELS, part_objects=["car"])


def hand_support(obj: torch.Tensor, part: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """The support of every UPP_CONCEPTS entry, term by term: P(object) + P(material) + P(owner) · P(part | owner)."""
    o, m = obj.softmax(1), mat.softmax(1)
    sky, bld, per = part[:, 0:2].softmax(1), part[:, 2:7].softmax(1), part[:, 7:11].softmax(1)
    terms = [o[:, 1], o[:, 2], o[:, 3], o[:, 4], o[:, 5] + o[:, 3] * bld[:, 2], o[:, 6] + o[:, 3] * bld[:, 1]]
    terms += [o[:, 7], o[:, 8], m[:, 1], m[:, 2], m[:, 3], m[:, 4], o[:, 2] * sky[:, 1]]
    terms += [o[:, 3] * bld[:, 3], o[:, 3] * bld[:, 4], o[:, 4] * per[:, 1], o[:, 4] * per[:, 2], o[:, 4] * per[:, 3]]
    return torch.stack(terms, 1)


def test_heads_combine_into_one_support_per_concept():
    vocab = csail.upp_vocabulary(LABELS)
    index = {k: torch.tensor(getattr(vocab, f"{k}_index")) for k in ("object", "material", "part")}
    g = torch.Generator().manual_seed(3)
    heads = {"object": torch.randn(2, 9, 3, 3, generator=g), "part": torch.randn(2, 11, 3, 3, generator=g)}
    heads["material"] = torch.randn(2, 5, 3, 3, generator=g)
    log_support = csail.combine(heads, index, vocab.part_groups, len(vocab.concepts))
    expected = hand_support(heads["object"], heads["part"], heads["material"])
    assert torch.allclose(log_support.exp(), expected, atol=1e-6)
    objects_only = csail.combine({"object": heads["object"]}, index, (), 8)  # heads=("object",)
    assert torch.allclose(objects_only.softmax(1), heads["object"][:, 1:].softmax(1), atol=1e-6)


def test_upp_loads_strictly_and_matches_the_reference(upp, upp_seg):
    folder, enc, dec = upp
    seg = upp_seg
    assert seg.concepts == UPP_CONCEPTS and seg.categories["roof"] == "part"
    assert torch.equal(seg.net.decoder.part_head[1].weight, dec["part_head.1.weight"])
    x = images().requires_grad_()
    probs = seg.probs(x)
    probs[:, UPP_CONCEPTS.index("roof")].sum().backward()  # the causal search differentiates a concept's probability
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    x, probs = x.detach(), probs.detach()
    with torch.no_grad():
        bgr = ((x + 1) / 2 * 255).flip(1) - torch.tensor([102.9801, 115.9465, 122.7717])[:, None, None]
        levels, fused = layouts.ref_fpn(dec, layouts.ref_resnet(enc, bgr, dilated=False), layouts.ref_prroi)
        fused = layouts.cbr(dec, "conv_fusion", fused)
        heads = {
            h: layouts.up(
                F.conv2d(layouts.cbr(dec, f"{h}_head.0", src), dec[f"{h}_head.1.weight"], dec[f"{h}_head.1.bias"]),
                (64, 64),
            )
            for h, src in (("object", fused), ("part", fused), ("material", levels[0]))
        }
        support = hand_support(heads["object"], heads["part"], heads["material"])
    assert probs.shape == (2, len(UPP_CONCEPTS), 64, 64) and torch.allclose(probs.sum(1), torch.ones(2, 64, 64))
    assert torch.allclose(probs, support / support.sum(1, keepdim=True), atol=1e-4)


@pytest.mark.parametrize("n", [2, 5, 8, 12])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_prroi_pooling_integrates_the_bilinear_interpolant(n, bins):
    x = torch.randn(2, 3, n, n + 1, dtype=torch.float64)
    pooled = prroi_pool(x, bins)
    assert torch.allclose(pooled, layouts.ref_prroi(x, bins), atol=1e-10)  # the definition
    if n <= 8:
        assert torch.allclose(pooled, layouts.ref_prroi_kernel(x, bins), atol=1e-10)  # the CUDA kernel's sum


def test_prroi_pooling_by_hand_and_how_far_average_pooling_is():
    x = torch.randn(1, 2, 4, 4)
    w = torch.tensor([0.5, 1.0, 1.0, 1.0]) / 4  # one bin over [0, 4]: half of point 0, points 1–3 whole
    assert torch.allclose(prroi_pool(x, 1)[..., 0, 0], torch.einsum("h,bchw,w->bc", w, x, w), atol=1e-6)
    # two bins, [0, 2] and [2, 4]: the trapezoid rule inside the map; point 4 would lie outside, so the last bin
    # keeps 3/4 of the mass
    assert torch.allclose(prroi_weights(4, 2), torch.tensor([[0.25, 0.5, 0.25, 0], [0, 0, 0.25, 0.5]]))
    ones = torch.ones(1, 1, 8, 8)  # the 8 × 8 top map of a 256 × 256 input
    assert torch.allclose(prroi_pool(ones, 1), torch.full((1, 1, 1, 1), (15 / 16) ** 2))
    assert torch.allclose(POOLING["average"](ones, 1), ones[..., :1, :1])


def test_average_pooling_is_the_mean_of_the_cells():
    x = torch.randn(2, 3, 5, 7)
    cells = lambda n, bins: [(k * n // bins, -(-(k + 1) * n // bins)) for k in range(bins)]  # noqa: E731
    for bins in (1, 2, 3, 6):
        hand = torch.stack(
            [torch.stack([x[..., a:b, c:d].mean((-2, -1)) for c, d in cells(7, bins)], -1) for a, b in cells(5, bins)],
            -2,
        )
        assert torch.allclose(POOLING["average"](x, bins), hand, atol=1e-6)


def test_missing_files_say_what_is_expected(tmp_path, upp):
    with pytest.raises(FileNotFoundError, match="ADE20K model folder not found: .*nowhere.*encoder_epoch_N.pth"):
        zoo.segmenter(f"ade20k:{tmp_path / 'nowhere'}")
    save(tmp_path / "half", encoder_epoch_20={})
    with pytest.raises(FileNotFoundError, match=r"decoder weights not found: .*half/decoder_epoch_20.pth"):
        zoo.segmenter(f"ade20k:{tmp_path / 'half'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="pooling must be one of prroi, average; got 'bilinear'"):
        zoo.segmenter(f"upp:{tmp_path / 'empty'}", pooling="bilinear")
    with pytest.raises(ValueError, match="heads are among object, part, material and include object; got material"):
        zoo.segmenter(f"upp:{tmp_path / 'empty'}", heads=["material"])
    with pytest.raises(FileNotFoundError, match="no encoder_epoch_N.pth in .*empty"):
        zoo.segmenter(f"upp:{tmp_path / 'empty'}")
    save(tmp_path / "nolabels", encoder_epoch_40={}, decoder_epoch_40={})
    with pytest.raises(FileNotFoundError, match=r"UPP vocabulary not found: .*nolabels/labels.json"):
        zoo.segmenter(f"upp:{tmp_path / 'nolabels'}")
    garbage = save(tmp_path / "garbage", encoder_epoch_1={})
    (garbage / "decoder_epoch_1.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"decoder .*garbage/decoder_epoch_1.pth is not readable as weights"):
        zoo.segmenter(f"ade20k:{garbage}")


def test_wrong_files_are_named_with_what_differs(tmp_path, upp):
    small = dict(layouts.ppm_deepsup(fc=64))
    renamed = dict(small)
    renamed["ppm.1.bn.weight"] = renamed.pop("ppm.1.2.weight")
    renamed["conv_last.0.weight"] = renamed["conv_last.0.weight"][:, 1:]
    save(tmp_path / "keys", encoder_epoch_1={}, decoder_epoch_1=renamed)
    wrong = r"keys/decoder_epoch_1.pth does not match PPM: missing \(1\): ppm.1.2.weight; unexpected \(1\): ppm.1.bn"
    with pytest.raises(
        ValueError, match=wrong + r".*; shapes differ \(1\): conv_last.0.weight \(512, 2111, 3, 3\) \(expected"
    ):
        zoo.segmenter(f"ade20k:{tmp_path / 'keys'}")
    save(tmp_path / "classes", encoder_epoch_1={}, decoder_epoch_1=layouts.ppm_deepsup(num_class=10, fc=64))
    with pytest.raises(ValueError, match="predicts 10 classes; the ADE20K models predict 150"):
        zoo.segmenter(f"ade20k:{tmp_path / 'classes'}")
    save(
        tmp_path / "c1",
        encoder_epoch_1={},
        decoder_epoch_1={"cbr.0.weight": torch.zeros(1), "conv_last.weight": torch.zeros(1)},
    )
    with pytest.raises(ValueError, match="none of ppm_deepsup, ppm, upernet .*cbr, conv_last"):
        zoo.segmenter(f"ade20k:{tmp_path / 'c1'}")
    resnet18 = layouts.resnet((2, 2, 2, 2), bottleneck=False)
    save(tmp_path / "pair", encoder_epoch_1=resnet18, decoder_epoch_1=small)
    with pytest.raises(ValueError, match=r"encoder .*pair/encoder_epoch_1.pth ends with 512 channels but decoder"):
        zoo.segmenter(f"ade20k:{tmp_path / 'pair'}")
    other = tmp_path / "vocab"
    other.mkdir()
    for f in ("encoder_epoch_40.pth", "decoder_epoch_40.pth"):
        os.symlink(upp[0] / f, other / f)
    (other / "labels.json").write_text(json.dumps({**LABELS, "material": ["-", "brick"]}))
    with pytest.raises(
        ValueError, match=r"does not fit the vocabulary .*vocab/labels.json: material head 5 channels, labels.json 2"
    ):
        zoo.segmenter(f"upp:{other}")
