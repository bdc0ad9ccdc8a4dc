"""The zoo turns specs, configs, modules and None into networks, and says what to do when it cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gd import zoo
from lightning_gd.models.generators import GeneratorWrapper
from lightning_gd.models.segmenters import ModuleSegmenter, Segmenter
from tests.helpers import ColourNet, PlantedGenerator


def test_world_by_spec_and_by_default():
    G, seg = zoo.generator("world"), zoo.segmenter("world")
    assert type(zoo.generator()) is type(G) and seg.concepts == zoo.segmenter().concepts
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        x = G(z)
    assert x.shape == (2, 3, 64, 64) and seg.labels(x).shape == (2, 64, 64)
    assert "world" in zoo.names("generator") and "world" in zoo.names("segmenter")
    assert {"demo", "export-world", "world-card"} <= set(zoo.commands())


def test_world_weights_by_spec_argument(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lightning_gd.world.weights import default_path  # the test may look inside the world; the core may not

    with safe_open(str(default_path("generator")), "pt") as f:
        meta = f.metadata()
    state = {
        k: torch.zeros_like(v) if k == "output_64x64.wscale.b" else v
        for k, v in load_file(default_path("generator")).items()
    }
    save_file(state, tmp_path / "g.safetensors", metadata=meta)
    G = zoo.generator(f"world:{tmp_path / 'g.safetensors'}")
    assert torch.equal(G.output_64x64.wscale.b, torch.zeros(3))  # these weights, not the shipped ones


def test_unknown_spec_lists_what_the_zoo_has():
    with pytest.raises(ValueError, match=r"unknown generator 'wrld' \(did you mean world\?\).*world"):
        zoo.generator("wrld")


def test_modules_and_configs():
    G = PlantedGenerator()
    assert zoo.generator(G) is G
    built = zoo.generator({"class_path": "tests.helpers.PlantedGenerator", "init_args": {"two_layers": True}})
    assert isinstance(built, PlantedGenerator) and hasattr(built, "layer2")
    seg = zoo.segmenter({"class_path": "tests.helpers.ColourSegmenter"})
    assert isinstance(seg, Segmenter) and seg.concepts == ("sky", "dome", "grass")


def test_weights_file_for_a_module(tmp_path):
    net = nn.Sequential(nn.Linear(4, 4))
    torch.save({"state_dict": {"0.weight": torch.eye(4), "0.bias": torch.ones(4)}}, tmp_path / "w.pt")
    G = zoo.generator(net, weights=str(tmp_path / "w.pt"), z_dim=4)
    assert isinstance(G, GeneratorWrapper) and torch.equal(net[0].weight, torch.eye(4))


def test_a_generator_without_z_dim_says_which_wrapper_to_use():
    with pytest.raises(ValueError, match=r"zoo.generator\(net, z_dim=…\)"):
        zoo.generator(nn.Identity())


def test_a_bare_segmenter_network_says_which_wrapper_to_use():
    with pytest.raises(TypeError, match=r"zoo.segmenter\(net, concepts=\[...\], output="):
        zoo.segmenter(ColourNet())
    seg = zoo.segmenter(ColourNet(), concepts=["sky", "dome", "grass"])
    assert isinstance(seg, ModuleSegmenter) and seg.output == "logits"


def test_options_for_modules_are_refused_where_they_do_not_apply():
    with pytest.raises(TypeError, match="already a Segmenter"):
        zoo.segmenter(zoo.segmenter("world"), concepts=["a"])
    with pytest.raises(TypeError, match="apply to zoo specs"):
        zoo.generator(PlantedGenerator(), hyper_parameters={})


def test_register_your_own():
    zoo.register("generator", "planted-test", lambda argument, **options: PlantedGenerator(two_layers=argument == "2"))
    assert hasattr(zoo.generator("planted-test:2"), "layer2")
    assert not hasattr(zoo.generator("planted-test"), "layer2")
    assert zoo.describe("planted-test:2") == "planted-test:2" and zoo.describe(PlantedGenerator()) == "PlantedGenerator"
    with pytest.raises(ValueError, match="without ':'"):
        zoo.register("generator", "a:b", lambda argument: None)
    with pytest.raises(ValueError, match="unknown kind"):
        zoo.register("discriminator", "x", lambda argument: None)


def test_fid_pieces_come_from_the_zoo(tmp_path):
    from PIL import Image

    extractor = zoo.feature_extractor("world")
    assert extractor.identity.startswith("lightning-gd-world")
    renders = zoo.real_images("world", n=3)
    batches = list(renders.batches(2))
    assert [b.shape[0] for b in batches] == [2, 1] and batches[0].dtype == torch.uint8
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(tmp_path / f"{i}.png")
    folder = zoo.real_images(f"folder:{tmp_path}")
    assert torch.cat(list(folder.batches(5))).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="needs local weights"):
        zoo.feature_extractor("inception")


def test_nested_configs_build_wrapped_networks():
    G = zoo.generator(
        {
            "class_path": "lightning_gd.models.generators.GeneratorWrapper",
            "init_args": {"network": {"class_path": "tests.helpers.TinyConvGenerator"}, "z_dim": 8},
        }
    )
    assert isinstance(G, GeneratorWrapper) and G(torch.randn(2, 8)).shape == (2, 3, 32, 32)


def test_spec_options_reach_the_loader():
    from lightning_gd.zoo import parse_spec

    assert parse_spec("stylegan2:G.pt?truncation=0.7&noise=const") == (
        "stylegan2",
        "G.pt",
        {"truncation": 0.7, "noise": "const"},
    )
    assert parse_spec("torchvision:fcn_resnet50:w.pth?size=None") == (
        "torchvision",
        "fcn_resnet50:w.pth",
        {"size": None},
    )
    assert parse_spec("world") == ("world", None, {})
    seen = {}
    zoo.register("generator", "spy-test", lambda argument, **options: seen.update(options) or PlantedGenerator())
    zoo.generator("spy-test:x?two_layers=True&name=a b")
    assert seen == {"two_layers": True, "name": "a b", "weights": None}
    with pytest.raises(ValueError, match="is not key=value"):
        parse_spec("world:x?oops")


def test_a_broken_plugin_is_left_out_with_a_warning_and_the_world_stays_the_default(monkeypatch):
    import importlib.metadata as metadata

    from lightning_gd import zoo

    group = zoo.ENTRY_POINTS
    broken = metadata.EntryPoint(name="aaa", value="no_such_module_anywhere:register", group=group)
    world = metadata.EntryPoint(name="world", value="lightning_gd.world:register", group=group)
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [broken, world])
    monkeypatch.setattr(zoo, "_loaded", False)
    with pytest.warns(UserWarning, match="zoo plugin aaa .*failed to load and is left out"):
        zoo._load_plugins()
    assert zoo.default_name("generator") == "world"
