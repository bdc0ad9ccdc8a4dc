"""The world's FID feature net, registered with torch-fidelity: its features are the shipped net's, and the
registration is idempotent."""

import torch

from lightning_gd import world
from lightning_gd.world.evaluate import render
from lightning_gd.world.features import register_world_feature_extractor


def test_feature_net_and_fidelity_registration():
    net = world.load_feature_net()
    images, _ = render(4, show_progress=False)
    f = net.forward_features(images)
    assert f.shape == (4, net.feature_dim)
    name = register_world_feature_extractor()
    assert register_world_feature_extractor() == name  # idempotent
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor(name, ["features"], cuda=False)
    u8 = ((images + 1) * 127.5).round().to(torch.uint8)
    (feats,) = fe(u8)
    assert torch.allclose(feats.float(), f, atol=1e-3)
