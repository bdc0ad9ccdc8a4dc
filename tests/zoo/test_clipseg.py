"""clipseg:DIR: a tiny random CLIPSeg saved with save_pretrained (model and processor) loads through the zoo as a
segmenter of the user's words. Its per-prompt logits are transformers' own forward on the same inputs, its
probabilities sum to 1 with the explicit background, prompts are encoded once and ensembled by their mean
embedding, and bad prompt lists or folders give errors that say what was wrong."""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from lightning_gd import zoo
from lightning_gd.cache import fingerprint
from lightning_gd.zoo import clipseg
from tests.zoo.clipseg_folder import MEAN, SIZE, STD, write_clipseg

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ("glasses", "smile", "the hair")


@pytest.fixture(scope="module")
def folder(module_tmp, one_thread):
    """(folder, model, processor): a tiny CLIPSeg whose decoder reads vision layers 0 and 1 of 3."""
    from transformers import CLIPSegProcessor

    path = module_tmp("clipseg")
    model = write_clipseg(path)
    return path, model, CLIPSegProcessor.from_pretrained(str(path), local_files_only=True)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def reference_logits(model, processor, prompts, pixel_values) -> torch.Tensor:
    """(B, P, S, S): transformers' forward, one prompt at a time, each image paired with the prompt."""
    out = []
    for prompt in prompts:
        tokens = processor.tokenizer([prompt] * len(pixel_values), padding=True, return_tensors="pt")
        with torch.no_grad():
            out.append(model(pixel_values=pixel_values, **tokens).logits)
    return torch.stack(out, 1)


def by_hand(x, model, processor, prompts, threshold=0.5, temperature=1.0) -> torch.Tensor:
    """The reference scores: [-1, 1] → [0, 1] → (· - mean) / std → S×S → CLIPSeg per prompt, the background's
    constant logit in front, all over the temperature → resized back."""
    y = ((x + 1) / 2 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    shrink = max(x.shape[-2:]) > SIZE  # antialiasing only where an axis shrinks, as PIL's resampling does
    y = F.interpolate(y, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=shrink)
    logits = reference_logits(model, processor, prompts, y)
    background = torch.full_like(logits[:, :1], math.log(threshold / (1 - threshold)))
    scores = torch.cat([background, logits], 1) / temperature
    return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_prompt_logits_are_transformers_own_forward(folder):
    path, model, processor = folder
    seg = zoo.segmenter(f"clipseg:{path}?concepts=glasses,smile,the hair")
    assert seg.concepts == ("background", *PROMPTS)
    pixel_values = torch.randn(3, 3, SIZE, SIZE)
    expected = reference_logits(model, processor, PROMPTS, pixel_values)
    with torch.no_grad():
        ours = seg._forward.prompt_logits(seg.net, pixel_values)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert (expected[:, 0] - expected[:, 1]).abs().max() > 0.1  # the prompts give different masks: a bite


def test_scores_follow_the_processor_and_the_options(folder):
    path, model, processor = folder
    seg = zoo.segmenter(f"clipseg:{path}?background_threshold=0.3&temperature=0.5", concepts=list(PROMPTS))
    one_at_a_time = zoo.segmenter(f"clipseg:{path}", concepts=list(PROMPTS), batch_size=1)
    for shape in [(2, 3, SIZE, SIZE), (2, 3, 48, 40), (1, 3, 20, 24), (1, 3, 48, 24)]:  # same, shrunk, enlarged, both
        x = torch.rand(shape) * 2 - 1
        expected = by_hand(x, model, processor, PROMPTS, threshold=0.3, temperature=0.5)
        torch.testing.assert_close(seg.logits(x), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(one_at_a_time.logits(x), by_hand(x, model, processor, PROMPTS), atol=1e-5, rtol=0)


def test_probabilities_sum_to_one_with_the_background(folder):
    seg = zoo.segmenter(f"clipseg:{folder[0]}", concepts=list(PROMPTS), background_threshold=0.6)
    x = torch.rand(2, 3, 48, 40) * 2 - 1
    p = seg.probs(x)
    assert p.shape == (2, 4, 48, 40)
    torch.testing.assert_close(p.sum(1), torch.ones(2, 48, 40))
    sigmoid = seg.logits(x)[:, 1:].sigmoid()  # T = 1: the concepts' own sigmoids
    labels = seg.labels(x)
    assert torch.equal(labels == 0, (sigmoid < 0.6).all(1))  # background where no prompt reaches the threshold
    assert 0 < (labels == 0).float().mean() < 1  # both cases occur, so the line above has a bite
    single = zoo.segmenter(f"clipseg:{folder[0]}", concepts=["smile"])  # one concept, t = 0.5, T = 1
    torch.testing.assert_close(single.probs(x)[:, 1], single.logits(x)[:, 1].sigmoid())


def test_probabilities_are_differentiable_in_the_image(folder):
    seg = zoo.segmenter(f"clipseg:{folder[0]}", concepts=list(PROMPTS))
    x = (torch.rand(1, 3, SIZE, SIZE) * 2 - 1).requires_grad_(True)
    seg.probs(x)[:, 2].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in seg.parameters())


def test_prompt_ensembles_average_their_text_embeddings(folder):
    path, model, processor = folder
    seg = zoo.segmenter(f"clipseg:{path}", concepts=["eyewear [part]: glasses | the glass", "smile"])
    assert seg.concepts == ("background", "eyewear", "smile") and seg.categories["eyewear"] == "part"
    tokens = processor.tokenizer(["glasses", "the glass", "smile"], padding=True, return_tensors="pt")
    with torch.no_grad():
        text = model.clip.get_text_features(**tokens)
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        conditions = torch.stack([text[:2].mean(0), text[2]])
        torch.testing.assert_close(seg._forward.embeddings, conditions, atol=1e-6, rtol=0)
        pixel_values = torch.randn(2, 3, SIZE, SIZE)
        expected = [model(pixel_values=pixel_values, conditional_embeddings=c.expand(2, -1)).logits for c in conditions]
        torch.testing.assert_close(
            seg._forward.prompt_logits(seg.net, pixel_values), torch.stack(expected, 1), atol=1e-5, rtol=0
        )


def test_text_is_encoded_once_and_later_vision_layers_never_run(folder, monkeypatch):
    seg = zoo.segmenter(f"clipseg:{folder[0]}", concepts=list(PROMPTS))
    text_model = seg.net.clip.text_model

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder ran after the prompts were encoded")

    monkeypatch.setattr(text_model, "forward", refuse)
    ran = []
    last = seg.net.clip.vision_model.encoder.layers[2]  # the decoder reads layers 0 and 1 only
    handle = last.register_forward_hook(lambda *a: ran.append(1))
    try:
        seg.labels(torch.rand(2, 3, SIZE, SIZE) * 2 - 1)
    finally:
        handle.remove()
    assert not ran
    assert dict(seg.named_buffers())["_forward.embeddings"].shape == (3, 8)  # follows .to(device) with the model


def test_decoder_batches_do_not_change_the_scores(folder, monkeypatch):
    seg = zoo.segmenter(f"clipseg:{folder[0]}", concepts=list(PROMPTS))
    x = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    whole = seg.logits(x)
    monkeypatch.setattr(clipseg, "DECODER_BATCH", 2)  # one concept a pass, then images × concepts split again
    torch.testing.assert_close(seg.logits(x), whole, atol=1e-6, rtol=0)


def test_cache_keys_follow_the_prompts_and_the_options(folder):
    spec = f"clipseg:{folder[0]}"
    base = fingerprint(zoo.segmenter(spec, concepts=["smile", "glasses"]))
    assert fingerprint(zoo.segmenter(spec, concepts=["smile", "glasses"])) == base
    assert fingerprint(zoo.segmenter(spec, concepts=["smile", "glasses: glasses | the glass"])) != base
    assert fingerprint(zoo.segmenter(spec, concepts=["smile", "glasses"], temperature=2.0)) != base
    assert fingerprint(zoo.segmenter(spec, concepts=["smile", "glasses"], background_threshold=0.4)) != base


def test_without_transformers_the_error_names_the_extra(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "lightning_gd\[hf\]"'):
        zoo.segmenter(f"clipseg:{folder[0]}", concepts=["smile"])


def test_a_folder_that_is_not_clipseg_names_what_it_holds(tmp_path, one_thread):
    from tests.zoo.test_hf import tiny_segformer

    tiny_segformer().save_pretrained(tmp_path / "segformer")
    with pytest.raises(ValueError, match=r"segformer.* holds SegformerForSemanticSegmentation, not CLIPSegForImage"):
        zoo.segmenter(f"clipseg:{tmp_path / 'segformer'}", concepts=["smile"])
    write_clipseg(tmp_path / "bare")
    config = json.loads((tmp_path / "bare" / "config.json").read_text())
    (tmp_path / "bare" / "config.json").write_text(json.dumps({**config, "architectures": ["CLIPSegModel"]}))
    with pytest.raises(ValueError, match=r"bare holds CLIPSegModel, not CLIPSegForImageSegmentation$"):
        zoo.segmenter(f"clipseg:{tmp_path / 'bare'}", concepts=["smile"])


def test_missing_parts_of_the_folder_are_named(folder, tmp_path):
    with pytest.raises(ValueError, match=r"name the model folder: clipseg:DIR"):
        zoo.segmenter("clipseg", concepts=["smile"])
    with pytest.raises(FileNotFoundError, match=r"Hugging Face model folder not found: .*nowhere"):
        zoo.segmenter(f"clipseg:{tmp_path / 'nowhere'}", concepts=["smile"])
    copy = tmp_path / "copy"
    shutil.copytree(folder[0], copy)
    for name in ("tokenizer.json", "vocab.json"):  # a processor without them loads an empty tokenizer: refused
        (copy / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"CLIPSeg tokenizer not found in .*copy: expected tokenizer\.json"):
        zoo.segmenter(f"clipseg:{copy}", concepts=["smile"])
    shutil.copy(folder[0] / "tokenizer.json", copy)
    (copy / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"CLIPSeg image processor not found in .*copy"):
        zoo.segmenter(f"clipseg:{copy}", concepts=["smile"])
    shutil.copy(folder[0] / "processor_config.json", copy)
    weights = load_file(copy / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("decoder.")}, copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"copy: the weights lack \d+ tensors of CLIPSeg, e\.g\. decoder\."):
        zoo.segmenter(f"clipseg:{copy}", concepts=["smile"])
    (copy / "model.safetensors").unlink()
    torch.save(folder[1].state_dict(), copy / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is a pickled checkpoint; clipseg:DIR loads safetensors"):
        zoo.segmenter(f"clipseg:{copy}", concepts=["smile"])


def test_a_prompt_longer_than_the_text_encoder_reads_is_named(folder):
    long = "the " * 20  # 20 tokens and the start and end tokens, past the tiny text encoder's 16 positions
    with pytest.raises(ValueError, match=r"the prompt 'the the .*' is 22 tokens; .* reads at most 16"):
        zoo.segmenter(f"clipseg:{folder[0]}", concepts=["smile", f"long: {long}"])
