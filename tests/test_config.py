"""The render config: validation and the dictionary form that travels in artefacts."""

import pytest

from dbsi.train import BokehConfig


def test_paper_defaults():
    config = BokehConfig()
    assert config.kernel_sizes == (25, 45, 75)
    assert config.num_maps == 4
    assert config.min_input_side == 38
    assert config.mode == "paper"


def test_dict_round_trip():
    config = BokehConfig(kernel_sizes=(5, 25, 45), net_long_side=512, mode="paper", width=0.25)
    assert BokehConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel_sizes=(24,)), "odd"),
        (dict(kernel_sizes=()), "at least one"),
        (dict(net_long_side=1000), "multiple of 16"),
        (dict(net_long_side=32), "smaller than 48"),
        (dict(mode="cinematic"), "not one of"),
        (dict(width=0), "width"),
        (dict(config_version=99), "not supported"),
    ],
)
def test_invalid_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BokehConfig(**kwargs)


def test_unknown_field_is_rejected():
    with pytest.raises(ValueError, match="unknown config fields: colour"):
        BokehConfig.from_dict({"colour": "RGB"})
