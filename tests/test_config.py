"""The render config: validation and the dictionary form that travels in artefacts."""

import subprocess
import sys

import pytest

from dbsi.train import BokehConfig


def test_defaults_are_the_papers_kernels_in_fullres_mode():
    config = BokehConfig()
    assert config.kernel_sizes == (25, 45, 75)
    assert config.num_maps == 4
    assert config.min_input_side == 38
    assert config.mode == "fullres"  # chosen by measurement: README, "Two render modes"


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


def test_config_imports_where_torch_cannot_be_imported():
    # The lean runtime and the benchmarks read the config; it must not pull torch in.
    script = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "import dbsi.train.config\n"
        "from dbsi.train import BokehConfig, opencv_gaussian_sigma\n"
        "from dbsi.train.config import BokehConfig as Direct\n"
        "assert BokehConfig is Direct\n"
        "assert BokehConfig().num_maps == 4\n"
        "loaded = [m for m, module in sys.modules.items()\n"
        "          if m.split('.')[0] == 'torch' and module is not None]\n"
        "assert not loaded, loaded\n"
        "try:\n"
        "    import torch  # noqa: F401\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('the blocker must make importing torch fail')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_package_names_resolve_lazily_to_their_modules():
    import dbsi.train
    from dbsi.train import blur, config, megadepth, render, weight_predictor

    homes = (blur, config, megadepth, render, weight_predictor)
    for name in dbsi.train.__all__:
        value = getattr(dbsi.train, name)
        assert any(getattr(home, name, None) is value for home in homes), name
    with pytest.raises(AttributeError, match="no attribute 'render_bokeh'"):
        dbsi.train.render_bokeh  # noqa: B018
