"""hf:DIR: a tiny random SegFormer (and UperNet) saved with save_pretrained loads as a segmenter whose logits are
the model's own, on inputs normalised and resized by hand as the image processor prescribes; pickled weights,
missing files and a missing transformers package give errors that say what to do."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from lightning_gd import zoo
from lightning_gd.zoo import hf

LABELS = {0: "sky", 1: "tree", 2: "grass", 3: "door"}
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)  # not ImageNet's, so a test sees which ones were used
SIZE = (32, 32)  # the processor's exact (height, width)


def tiny_segformer():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    return scrambled(SegformerForSemanticSegmentation(config).eval())


def scrambled(model):
    """Every weight drawn at a scale where logits differ by whole units (HF's init gives near-ties)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


@pytest.fixture
def segformer(tmp_path, one_thread):
    """(folder, model): a random SegFormer saved as safetensors with a SegformerImageProcessor config."""
    from transformers import SegformerImageProcessor

    model = tiny_segformer()
    model.save_pretrained(tmp_path)
    SegformerImageProcessor(size={"height": SIZE[0], "width": SIZE[1]}, image_mean=MEAN, image_std=STD).save_pretrained(
        tmp_path
    )
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "preprocessor_config.json").is_file()
    return tmp_path, model


def by_hand(model, x, mean, std, size=None):
    """The reference: [-1, 1] → [0, 1] → (· - mean) / std → resized → model logits → resized back."""
    y = ((x + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    if size is not None:
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = model(pixel_values=y).logits
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_segformer_gives_probabilities_at_the_input_resolution(segformer):
    folder, _ = segformer
    seg = zoo.segmenter(f"hf:{folder}")
    assert seg.concepts == ("sky", "tree", "grass", "door")
    assert seg.categories == {c: "object" for c in seg.concepts}
    x = torch.rand(3, 3, 48, 40) * 2 - 1
    p = seg.probs(x)
    assert p.shape == (3, 4, 48, 40)
    torch.testing.assert_close(p.sum(1), torch.ones(3, 48, 40))
    assert torch.equal(seg.labels(x), p.argmax(1))
    assert seg.logits(x).std() > 0.1  # the classes are not near-ties, so the checks below have a bite


def test_segformer_logits_are_the_models_own_on_the_processors_inputs(segformer):
    folder, model = segformer
    x = torch.rand(3, 3, 48, 40) * 2 - 1  # not square: the processor's (height, width) is exact, not a short side
    expected = by_hand(model, x, MEAN, STD, SIZE)
    assert model(pixel_values=torch.zeros(1, 3, *SIZE)).logits.shape[-2:] == (8, 8)  # SegFormer: 1/4 resolution
    torch.testing.assert_close(zoo.segmenter(f"hf:{folder}").logits(x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(zoo.segmenter(f"hf:{folder}", batch_size=2).logits(x), expected, atol=1e-5, rtol=0)


def test_segformer_is_differentiable_with_respect_to_the_image(segformer):
    seg = zoo.segmenter(f"hf:{segformer[0]}")
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    seg.probs(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in seg.parameters())


def test_upernet_without_a_processor_uses_imagenet_statistics_at_the_images_size(tmp_path, one_thread):
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    backbone = ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    labels = {0: "wall", 1: "floor", 2: "ceiling"}
    config = UperNetConfig(
        backbone_config=backbone,
        hidden_size=16,
        auxiliary_in_channels=24,
        auxiliary_channels=8,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = scrambled(UperNetForSemanticSegmentation(config).eval())
    model.save_pretrained(tmp_path)
    seg = zoo.segmenter(f"hf:{tmp_path}")
    assert seg.concepts == ("wall", "floor", "ceiling")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    imagenet = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torch.testing.assert_close(seg.logits(x), by_hand(model, x, *imagenet), atol=1e-5, rtol=0)


def test_input_convention_follows_the_processor():
    base = dict(do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=MEAN)
    exact = SimpleNamespace(**base, image_std=STD, size={"height": 64, "width": 48})
    assert hf.input_convention(exact) == {"mean": MEAN, "std": STD, "scale": 1.0, "size": (None, (64, 48))}
    short = SimpleNamespace(**{**base, "do_rescale": False}, image_std=STD, size={"shortest_edge": 40})
    assert hf.input_convention(short) == {"mean": MEAN, "std": STD, "scale": 255.0, "size": (40, None)}
    raw = SimpleNamespace(**{**base, "do_resize": False, "do_normalize": False}, image_std=STD, size={"height": 8})
    assert hf.input_convention(raw) == {"mean": (0.0,) * 3, "std": (1.0,) * 3, "scale": 1.0, "size": (None, None)}
    odd = SimpleNamespace(**base, image_std=STD, size={"longest_edge": 40})
    with pytest.raises(ValueError, match="expected height and width, or shortest_edge"):
        hf.input_convention(odd)


def test_the_vocabulary_is_id2label_in_id_order():
    folder = Path("model")
    assert hf.vocabulary(SimpleNamespace(id2label={"1": "tree", "0": "sky"}), folder) == ["sky", "tree"]
    with pytest.raises(ValueError, match=r"id2label must name the classes 0…C-1, got ids \[0, 2\]"):
        hf.vocabulary(SimpleNamespace(id2label={0: "sky", 2: "tree"}), folder)
    with pytest.raises(ValueError, match="id2label repeats class names: sky, sky"):
        hf.vocabulary(SimpleNamespace(id2label={0: "sky", 1: "sky"}), folder)


def test_pickled_weights_are_refused_with_a_conversion_that_works(segformer):
    folder, model = segformer
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(
        ValueError, match=r"pytorch_model\.bin is a pickled checkpoint; hf:DIR loads safetensors only"
    ) as e:
        zoo.segmenter(f"hf:{folder}")
    code = str(e.value).split('python -c "', 1)[1].rsplit('" (', 1)[0]
    exec(code, {})  # the advice, followed
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(
        zoo.segmenter(f"hf:{folder}").logits(x), by_hand(model, x, MEAN, STD, SIZE), atol=1e-5, rtol=0
    )


def test_missing_files_name_what_was_expected(segformer, tmp_path):
    folder, _ = segformer
    with pytest.raises(FileNotFoundError, match="Hugging Face model folder not found: .*nowhere"):
        zoo.segmenter(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="name the model folder: hf:DIR"):
        zoo.segmenter("hf")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"Hugging Face model weights not found: .*model\.safetensors"):
        zoo.segmenter(f"hf:{folder}")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"Hugging Face model config not found: .*config\.json"):
        zoo.segmenter(f"hf:{folder}")


def test_a_folder_of_another_kind_of_model_is_a_clear_error(tmp_path, one_thread):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not hold a transformers semantic-segmentation model"):
        zoo.segmenter(f"hf:{tmp_path}")


def test_without_transformers_the_error_names_the_extra(segformer, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "lightning_gd\[hf\]"'):
        zoo.segmenter(f"hf:{segformer[0]}")
