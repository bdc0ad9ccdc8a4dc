"""torchvision:NAME:PATH: random state dicts of torchvision's segmentation models, saved as .pth and .safetensors,
load as segmenters whose logits are those of the torchvision model run by hand on ImageNet-normalised inputs;
the vocabulary is torchvision's 21 VOC classes; wrong names, files and shapes give errors that say what to do."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F
from torchvision.models import get_model_weights, segmentation

from lightning_gd import zoo
from lightning_gd.zoo import tv

VOC = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def random_model(name: str, classes: int = 21, aux: bool = False):
    """A torchvision model with every weight and batch-norm statistic random (so loading each one matters)."""
    options = {"weights": None, "weights_backbone": None, "num_classes": classes}
    if aux:
        options["aux_loss"] = True
    model = getattr(segmentation, name)(**options).eval()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif value.is_floating_point():
                value.normal_(0, 0.1)
    return model


def saved(model, folder, kind: str):
    """The model's state dict written as `kind`: pth (torch.save), safetensors, or a {"model": ...} checkpoint."""
    state = model.state_dict()
    if kind == "safetensors":
        path = folder / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    path = folder / "weights.pth"
    torch.save({"model": state, "epoch": 3} if kind == "checkpoint" else state, path)
    return path


def by_hand(model, x, size=None):
    """The reference: [-1, 1] → ImageNet-normalised → short side resized → torchvision's "out" → resized back."""
    y = ((x + 1) / 2 - MEAN) / STD
    if size is not None:
        h, w = y.shape[-2:]
        y = F.interpolate(y, size=(round(h * size / min(h, w)), round(w * size / min(h, w))), mode="bilinear")
    with torch.no_grad():
        out = model(y)["out"]
    return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    "name, aux, kind",
    [
        ("lraspp_mobilenet_v3_large", False, "pth"),
        ("lraspp_mobilenet_v3_large", False, "safetensors"),
        ("fcn_resnet50", True, "pth"),
        ("fcn_resnet50", True, "checkpoint"),
        ("deeplabv3_mobilenet_v3_large", False, "safetensors"),
    ],
)
def test_outputs_are_the_torchvision_models(tmp_path, one_thread, name, aux, kind):
    model = random_model(name, aux=aux)
    seg = zoo.segmenter(f"torchvision:{name}:{saved(model, tmp_path, kind)}", size=64)
    assert list(seg.concepts) == VOC and set(seg.categories.values()) == {"object"}
    assert (hasattr(seg.net, "aux_classifier") and seg.net.aux_classifier is not None) == aux
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    expected = by_hand(model, x)
    assert expected.std() > 0.1  # the classes are not near-ties
    torch.testing.assert_close(seg.logits(x), expected, atol=1e-5, rtol=1e-5)
    p = seg.probs(x)
    assert p.shape == (2, 21, 64, 64)
    torch.testing.assert_close(p.sum(1), torch.ones(2, 64, 64))


def test_images_are_resized_to_the_published_size_and_back(tmp_path, one_thread):
    name = "lraspp_mobilenet_v3_large"
    for weights in (get_model_weights(name).COCO_WITH_VOC_LABELS_V1, get_model_weights("fcn_resnet50").DEFAULT):
        assert weights.transforms().resize_size == [tv.TRAINED_SIZE]
        assert weights.meta["categories"] == ["__background__"] + VOC[1:]
    model = random_model(name)
    seg = zoo.segmenter(f"torchvision:{name}:{saved(model, tmp_path, 'pth')}", batch_size=1)
    x = torch.rand(2, 3, 48, 40) * 2 - 1
    torch.testing.assert_close(seg.logits(x), by_hand(model, x, size=520), atol=1e-5, rtol=1e-5)


def test_other_class_counts_take_a_vocabulary(tmp_path, one_thread):
    name = "lraspp_mobilenet_v3_large"
    model = random_model(name, classes=3)
    path = saved(model, tmp_path, "safetensors")
    with pytest.raises(ValueError, match=r"has 3 classes, not the 21 of torchvision's VOC weights: pass concepts="):
        zoo.segmenter(f"torchvision:{name}:{path}")
    seg = tv.load(
        f"{name}:{path}",
        concepts=["sky", "tree", "door"],
        categories={"sky": "object", "tree": "object", "door": "part"},
        size=None,
    )
    assert seg.concepts == ("sky", "tree", "door") and seg.categories["door"] == "part"
    x = torch.rand(1, 3, 40, 40) * 2 - 1
    torch.testing.assert_close(seg.logits(x), by_hand(model, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 concepts given for the 3 classes"):
        tv.load(f"{name}:{path}", concepts=["sky", "tree"])


def test_wrong_names_files_and_weights_are_clear_errors(tmp_path, one_thread):
    with pytest.raises(ValueError, match="unknown torchvision segmentation model 'fcn'; valid names: .*fcn_resnet50"):
        zoo.segmenter(f"torchvision:fcn:{tmp_path / 'w.pth'}")
    with pytest.raises(ValueError, match="name the weights file: torchvision:fcn_resnet50:PATH"):
        zoo.segmenter("torchvision:fcn_resnet50")
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="torchvision lraspp_mobilenet_v3_large weights file not found: .*nowh"):
        zoo.segmenter(f"torchvision:lraspp_mobilenet_v3_large:{missing}")
    fcn = saved(random_model("fcn_resnet50", aux=True), tmp_path, "pth")
    with pytest.raises(ValueError, match="is not a torchvision lraspp_mobilenet_v3_large state dict: no key classif"):
        zoo.segmenter(f"torchvision:lraspp_mobilenet_v3_large:{fcn}")
    with pytest.raises(
        ValueError, match=r"does not fit torchvision's DeepLabV3: missing \(.*unexpected \(.*shapes differ \("
    ):
        zoo.segmenter(f"torchvision:deeplabv3_resnet50:{fcn}")
