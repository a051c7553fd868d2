"""bokeh-bench FLOP counts: the docs/DESIGN.md section 1.6 figures, on the meta device."""

import pytest

from dbsi.benchmarks.flops import predictor_flops, render_flops
from dbsi.train.config import BokehConfig


def test_full_width_predictor_is_241_gflop_at_384x512():
    assert predictor_flops(1.0, 384, 512) == pytest.approx(241e9, rel=0.01)


def test_render_flops_are_the_predictor_and_blurs_at_the_network_size():
    config = BokehConfig(width=0.125, net_long_side=128)
    net_h, net_w = config.network_size(1024, 1536)
    predictor = predictor_flops(0.125, net_h, net_w)
    total = render_flops(config, 1024, 1536)
    # Blurs: per output value, 2 FLOPs per tap, two passes, 3 channels, each kernel.
    blurs = sum(2 * k * 2 * 3 * net_h * net_w for k in config.kernel_sizes)
    assert total == pytest.approx(predictor + blurs, rel=0.02)
    # The network size is fixed by net_long_side, so a larger input costs the same.
    assert render_flops(config, 2048, 3072) == total
