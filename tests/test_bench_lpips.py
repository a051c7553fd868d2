"""LPIPS AlexNet v0.1 plumbing, with random backbone weights (the real backbone is a separate
download that this machine does not have)."""

import numpy as np
import pytest
import torch

from dbsi.benchmarks.lpips_alex import (
    LpipsAlex,
    alexnet_features,
    heads_path,
    load_lpips,
    load_weights,
    lpips_distance,
)
from tests.conftest import real_photo


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    return LpipsAlex(load_weights(heads_path()), backbone=None)


@pytest.fixture(scope="module")
def photo():
    return np.ascontiguousarray(real_photo("astronaut")[::2, ::2, ::-1])


def test_heads_come_from_the_installed_lpips_package_without_importing_it():
    import sys

    path = heads_path()
    assert path is not None and path.parts[-3:] == ("weights", "v0.1", "alex.pth")
    assert "lpips" not in sys.modules


def test_distance_of_an_image_to_itself_is_zero(random_lpips, photo):
    assert lpips_distance(random_lpips, photo, photo.copy()) == 0.0


def test_distance_grows_with_the_distortion(random_lpips, photo):
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, photo.shape)

    def noisy(sigma):
        return np.clip(photo + sigma * noise, 0, 255).astype(np.uint8)

    d = [lpips_distance(random_lpips, photo, noisy(s)) for s in (4, 16, 64)]
    assert 0 < d[0] < d[1] < d[2]


def test_missing_backbone_makes_lpips_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    model, status = load_lpips()
    assert model is None
    assert status.startswith("unavailable") and "alexnet-owt-7be5be79.pth" in status


def test_a_torchvision_format_backbone_file_loads(tmp_path):
    features = alexnet_features()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)  # torchvision's file has these too
    torch.save(state, tmp_path / "alexnet-owt-7be5be79.pth")
    model, status = load_lpips(tmp_path / "alexnet-owt-7be5be79.pth")
    assert model is not None and "backbone" in status
    torch.testing.assert_close(model.features[3].weight, features[3].weight)
