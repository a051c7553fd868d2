"""Model FLOPs at an input size, counted by PyTorch's FlopCounterMode (2 FLOPs per
multiply-add) on the meta device, so nothing is computed and any size costs the same.

Counted: every convolution of the weight predictor and of the blur bank, both at the network
size that the config derives from the input size. Not counted: the bilinear resizes, softmax,
blend and colour conversion, which are elementwise (FlopCounterMode counts matmuls and
convolutions only).
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from dbsi.train.blur import GaussianBlurBank
from dbsi.train.config import BokehConfig
from dbsi.train.weight_predictor import WeightPredictor


def count_flops(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward of ``module`` on a float input of ``shape`` (meta device)."""
    meta = copy.deepcopy(module).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return int(counter.get_total_flops())


def predictor_flops(width: float, net_height: int, net_width: int, num_maps: int = 4) -> int:
    """FLOPs of the weight predictor alone on one image of the given network size."""
    with torch.device("meta"):
        predictor = WeightPredictor(num_maps, width)
    return count_flops(predictor, (1, 3, net_height, net_width))


def render_flops(config: BokehConfig, height: int, width: int) -> int:
    """FLOPs of the whole render of one ``height`` x ``width`` image: weight predictor and
    blur bank at the network size ``config`` derives from it."""
    net_h, net_w = config.network_size(height, width)
    blurs = count_flops(GaussianBlurBank(config.kernel_sizes), (1, 3, net_h, net_w))
    return predictor_flops(config.width, net_h, net_w, config.num_maps) + blurs
