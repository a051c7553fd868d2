"""PyTorch -> ONNX: the whole render, from decoded 8-bit pixels to 8-bit bokeh, in one graph.

The graph takes what OpenCV decodes (uint8, N x H x W x 3, BGR) and returns the same layout,
so a runtime feeds decoded pixels straight in and writes what comes out. Colour conversion,
normalisation, resizing, weight prediction, blurs and blend all live inside.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from dbsi.export.metadata import set_metadata
from dbsi.runtime.atomic import atomic_path
from dbsi.runtime.contract import (
    INPUT_LAYOUTS,
    INPUT_NAME,
    MAX_BATCH,
    MAX_SIDE,
    OUTPUT_NAME,
    TEMPORAL_MAPS_NAME,
    WEIGHTS_NAME,
    GraphMetadata,
)
from dbsi.runtime.provenance import toolkit_version
from dbsi.train.render import BokehRenderer

OPSET = 18
# Every graph exported now takes a run-time aperture and the temporal inputs beside the picture.
INPUTS = INPUT_LAYOUTS[-1]


class PixelsToBokeh(nn.Module):
    """uint8 N x H x W x 3 BGR (and float32 apertures [N], and the temporal state and mix)
    -> uint8 N x H x W x 3 BGR (and float weights N x K x H x W, and with the temporal inputs
    the maps each picture used, N x K x h x w at the network size)."""

    def __init__(self, renderer: BokehRenderer, with_weights: bool = False) -> None:
        super().__init__()
        self.renderer = renderer
        self.with_weights = with_weights

    def forward(
        self,
        image: torch.Tensor,
        aperture: torch.Tensor | None = None,
        temporal_state: torch.Tensor | None = None,
        temporal_mix: torch.Tensor | None = None,
    ):
        # Cast first and last: TensorRT accepts UINT8 only as a network input that feeds a Cast
        # and as a network output that a Cast produces, so every transpose and rounding
        # happens on float tensors (see dbsi.export.tensorrt_rules). The picture stays BGR:
        # only the predictor's network-size copy is flipped to RGB (BokehRenderer.render),
        # which spares two full-size flips that OpenVINO ran on its reference kernels (77 ms
        # at 4K on an AVX-512 Xeon); the pixels are the same.
        bgr = image.float().permute(0, 3, 1, 2) / 255.0
        temporal = None if temporal_state is None else (temporal_state, temporal_mix)
        bokeh, weights, maps = self.renderer.render(bgr, aperture, temporal, bgr=True)
        levels = (bokeh.clamp(0.0, 1.0) * 255.0).round().permute(0, 2, 3, 1)
        outputs = [levels.to(torch.uint8)]
        if self.with_weights:
            outputs.append(weights)
        if temporal is not None:
            outputs.append(maps)
        return tuple(outputs) if len(outputs) > 1 else outputs[0]


def read_shapes_after_cast(model: onnx.ModelProto) -> int:
    """Point every ``Shape`` node that reads the uint8 input at the input's ``Cast`` instead
    (same dimensions): the exporter reads the symbolic sizes off the graph input, and TensorRT
    lets a UINT8 input feed nothing but a Cast. Returns how many nodes changed; ValueError when
    the input feeds no Cast."""
    graph = model.graph
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0] == INPUT_NAME]
    if not casts:
        raise ValueError(f"the graph's input '{INPUT_NAME}' feeds no Cast node")
    changed = 0
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] == INPUT_NAME:
            node.input[0] = casts[0].output[0]
            changed += 1
    # The Cast reads only the graph input: moved first, it precedes its new readers, keeping
    # the node list topologically sorted as ONNX requires.
    first = onnx.NodeProto()
    first.CopyFrom(casts[0])
    graph.node.remove(casts[0])
    graph.node.insert(0, first)
    return changed


def trace_onnx(renderer: BokehRenderer, *, with_weights: bool = False) -> onnx.ModelProto:
    """Export ``renderer`` (eval mode) with dynamic batch, height and width; the ONNX model in
    memory, without metadata."""
    renderer = renderer.eval()
    module = PixelsToBokeh(renderer, with_weights).eval()
    min_side = renderer.config.min_input_side
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    height = torch.export.Dim("height", min=min_side, max=MAX_SIDE)
    width = torch.export.Dim("width", min=min_side, max=MAX_SIDE)
    # A sample that specialises nothing: batch 2, sides that differ and are not network sizes,
    # apertures that are not 1.
    sample = torch.randint(0, 256, (2, min_side + 61, min_side + 93, 3), dtype=torch.uint8)
    apertures = torch.tensor([0.7, 1.9])
    # A state of any size (the graph resizes it) and a mix with no exact zeros or ones.
    maps = renderer.config.num_maps
    state = torch.rand(1, maps, 5, 7)
    mix = torch.rand(2, 3)
    state_height = torch.export.Dim("state_height", min=1, max=MAX_SIDE)
    state_width = torch.export.Dim("state_width", min=1, max=MAX_SIDE)
    # The exporter logs one warning per torchvision op it cannot register (torchvision is not
    # needed here); silence that logger for the export only.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (sample, apertures, state, mix),
                dynamo=True,
                dynamic_shapes=(
                    {0: batch, 1: height, 2: width},
                    {0: batch},
                    {2: state_height, 3: state_width},
                    {0: batch, 1: batch + 1},
                ),
                input_names=list(INPUTS),
                output_names=output_names(with_weights),
                opset_version=OPSET,
                verbose=False,
            )
    finally:
        registration_log.setLevel(level)
    model = program.model_proto
    read_shapes_after_cast(model)
    return model


def output_names(with_weights: bool) -> list[str]:
    """The graph's outputs: the bokeh image, the weight maps when asked for, then the maps each
    picture used (the next temporal state)."""
    return [OUTPUT_NAME, *([WEIGHTS_NAME] if with_weights else []), TEMPORAL_MAPS_NAME]


def checkpoint_onnx(
    renderer: BokehRenderer, checkpoint_sha256: str, *, with_weights: bool = False
) -> onnx.ModelProto:
    """The fp32 ONNX of a checkpoint's ``renderer`` with its ``dbsi.*`` metadata (render
    config, input limits, outputs, the checkpoint's hash, the toolkit version): what
    ``bokeh-export onnx`` checks and writes, and what ``bokeh-bench`` caches."""
    model = trace_onnx(renderer, with_weights=with_weights)
    config = renderer.config
    metadata = GraphMetadata(
        config=config.to_dict(),
        min_input_side=config.min_input_side,
        max_input_side=MAX_SIDE,
        outputs=output_names(with_weights),
        precision="fp32",
        checkpoint_sha256=checkpoint_sha256,
        toolkit_version=toolkit_version(),
        inputs=INPUTS,
    )
    set_metadata(model, metadata)
    return model


def write_onnx(model: onnx.ModelProto, path: str | Path) -> None:
    """Save ``model`` atomically: a reader never sees half a file."""
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
