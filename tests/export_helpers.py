"""Checkpoints and small ONNX graphs for the bokeh-export tests."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper

from dbsi.runtime.contract import GraphMetadata
from dbsi.train.checkpoint import save_checkpoint
from dbsi.train.config import BokehConfig
from dbsi.train.render import BokehRenderer

DATA = Path(__file__).parent / "data"
# A fresh head gives every map about a quarter everywhere; scaled up, the maps span roughly
# 0.01 to 0.9 across a photo, as a trained model's do, so parity is judged on a real blend.
HEAD_SCALE = 20.0


def make_renderer(width: float, seed: int = 0, megadepth_backbone: bool = False) -> BokehRenderer:
    """A renderer at network size 128 with a sharpened random head (see HEAD_SCALE)."""
    torch.manual_seed(seed)
    renderer = BokehRenderer(BokehConfig(width=width, net_long_side=128))
    if megadepth_backbone:
        renderer.predictor.init_backbone(DATA / "megadepth_original_format.pth")
    with torch.no_grad():
        renderer.predictor[-2].weight.mul_(HEAD_SCALE)
    return renderer.eval()


def make_checkpoint(path: Path, width: float, seed: int = 0, **kwargs) -> Path:
    save_checkpoint(path, make_renderer(width, seed, **kwargs), phase=1)
    return path


def tiny_graph_metadata(**changes) -> GraphMetadata:
    """The metadata bokeh-export writes for a tiny paper-mode graph (kernels 5/11/21, network
    long side 64) with the weights output; ``changes`` replace fields."""
    config = {
        "kernel_sizes": [5, 11, 21],
        "net_long_side": 64,
        "mode": "paper",
        "width": 0.125,
        "config_version": 1,
    }
    fields = {
        "config": config,
        "min_input_side": 11,
        "max_input_side": 8192,
        "outputs": ["bokeh", "weights", "temporal_maps"],
        "precision": "fp32",
        "checkpoint_sha256": "0" * 64,
        "toolkit_version": "test",
        **changes,
    }
    return GraphMetadata(**fields)


def foreign_onnx(path: Path) -> Path:
    """A valid ONNX model (uint8 identity) that bokeh-export did not write: no dbsi metadata."""
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", "h", "w", 3])
    out = helper.make_tensor_value_info("bokeh", TensorProto.UINT8, ["n", "h", "w", 3])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["bokeh"])], "g", [image], [out]
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path
