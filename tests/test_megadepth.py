"""MegaDepth hourglass: the published architecture, key for key, output for output."""

import numpy as np
import pytest
import torch

from dbsi.train import MegaDepth, WeightPredictor, load_megadepth


def test_published_checkpoint_reproduces_original_outputs(megadepth_fixture, megadepth_probe):
    model = load_megadepth(megadepth_fixture)
    assert not model.training
    with torch.no_grad():
        for name in ("landscape", "portrait"):
            out = model(torch.from_numpy(megadepth_probe[f"input_{name}"])).numpy()
            np.testing.assert_allclose(out, megadepth_probe[f"output_{name}"], rtol=0, atol=1e-5)


def test_megadepth_has_published_parameter_count():
    assert sum(p.numel() for p in MegaDepth().parameters()) == 5_357_153


def test_plain_state_dict_loads_too(tmp_path, megadepth_fixture, megadepth_probe):
    plain = load_megadepth(megadepth_fixture).state_dict()
    torch.save(plain, tmp_path / "plain.pth")
    model = load_megadepth(tmp_path / "plain.pth")
    x = torch.from_numpy(megadepth_probe["input_landscape"])
    with torch.no_grad():
        np.testing.assert_allclose(
            model(x).numpy(), megadepth_probe["output_landscape"], atol=1e-5, rtol=0
        )


def test_misfit_checkpoint_names_missing_unexpected_and_misshaped_keys(tmp_path):
    state = MegaDepth().state_dict()
    del state["4.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as info:
        load_megadepth(tmp_path / "bad.pth")
    message = str(info.value)
    assert "bad.pth" in message
    assert "missing 1 (4.bias)" in message
    assert "unexpected 1 (extra.weight)" in message
    assert "0.weight (1, 1, 1, 1) != (128, 3, 7, 7)" in message


def test_file_that_is_not_a_checkpoint_is_a_value_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth: not a PyTorch checkpoint"):
        load_megadepth(path)


def test_weight_predictor_has_expected_parameter_count():
    assert sum(p.numel() for p in WeightPredictor(num_maps=4).parameters()) == 5_358_884


def test_weight_predictor_backbone_comes_from_megadepth(megadepth_fixture):
    predictor = WeightPredictor(num_maps=4)
    predictor.init_backbone(megadepth_fixture)
    reference = load_megadepth(megadepth_fixture).state_dict()
    state = predictor.state_dict()
    for key, value in reference.items():
        if not key.startswith("4."):
            assert torch.equal(state[key], value), key


def test_backbone_init_refuses_a_narrow_model(megadepth_fixture):
    with pytest.raises(ValueError, match="width 1.0"):
        WeightPredictor(num_maps=4, width=0.25).init_backbone(megadepth_fixture)


def test_weight_predictor_outputs_softmax_maps():
    predictor = WeightPredictor(num_maps=4, width=0.125).eval()
    with torch.no_grad():
        weights = predictor(torch.rand(2, 3, 64, 96))
    assert weights.shape == (2, 4, 64, 96)
    assert weights.min() >= 0
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 64, 96), atol=1e-5, rtol=0)
