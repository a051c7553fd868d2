"""INT8: the fp32 graph calibrated on the user's photos and quantized with explicit Q/DQ
(QuantizeLinear / DequantizeLinear), in one of two flavours, one per target:

- ``cpu``: uint8 activations (asymmetric), per-channel int8 weights, QDQ: the format ONNX
  Runtime's x86 kernels run fastest (u8s8 convolutions, VNNI); measured here about 2x the fp32
  graph's speed, while symmetric int8 activations gave about 1.05x (README, INT8).
- ``tensorrt``: TensorRT's explicit quantization: int8 activations and weights, every zero point
  0 ("only symmetric quantization is supported": NvInfer.h, IQuantizeLayer), per-channel weight
  scales on axis 0, Q/DQ on the inputs and weights of the convolutions where TensorRT fuses them
  ("an IDequantizeLayer is required between the weights and the linear operator": TensorRT
  developer guide, Explicit Quantization), biases left in float (TensorRT's DequantizeLinear
  takes INT8, FP8 or INT4, not the INT32 biases ONNX Runtime would make: onnx-tensorrt
  docs/operators.md) and no UINT8 tensor anywhere.

Only the weight predictor is quantized: its convolutions in both flavours (``tensorrt`` keeps
the first in float: see ``convolutions_to_quantize``), and in ``cpu`` the ReLUs,
concatenations, additions and pools between them too, so that its activations stay
uint8 from one convolution to the next (see ``nodes_to_quantize``). The blur bank stays
float: its Gaussian taps reach 1e-4 of the centre tap at a 75-tap tail, below an 8-bit step,
and its output is the picture itself. Softmax (the weights must sum to one), the resizes and
the blend produce the output pixels directly and stay float too. The activation ranges come
from the user's photos (``dbsi.export.calibration``); ONNX Runtime's quantizer places the
Q/DQ nodes with them.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx

from dbsi.export.calibration import (
    CalibrationSet,
    activation_ranges,
    tensors_to_calibrate,
)
from dbsi.export.metadata import model_metadata, set_metadata

FLAVOURS = ("cpu", "tensorrt")
# Chosen by measurement on the demo model (README, INT8): min-max ranges gave the worst check
# photo 0.5-1 dB more than percentile ranges in each of the four flavour/photo-set pairs.
DEFAULT_METHOD = "minmax"
# The worst check photo rose from 36.9 dB (16 synthetic photos) to 40.4 dB (24) on the demo
# model; a full-width model calibrates 32 photos in about 2 minutes on 2 cores.
DEFAULT_CALIBRATION_COUNT = 32


def predictor_convolutions(model: onnx.ModelProto) -> list[str]:
    """The weight predictor's Conv nodes in graph order: every Conv but the blur bank's
    (which read a Pad's output)."""
    pads = {node.output[0] for node in model.graph.node if node.op_type == "Pad"}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] not in pads]


def convolutions_to_quantize(model: onnx.ModelProto, flavour: str) -> list[str]:
    """The predictor's convolutions that ``flavour`` quantizes: every one for ``cpu``; for
    ``tensorrt`` all but its first (7x7 on the picture), which in float raised the demo model's
    worst check batch by 2 dB in that flavour. Why ``cpu`` quantizes it too: it is 3% of the
    predictor's FLOPs but was 10% of OpenVINO's int8 render on an AVX-512 VNNI Xeon (156 ms
    in float, 54 ms in int8, with a float max pool and a layout change after it); quantized,
    the worst check batch moved from 52.0 to 51.6 dB (README, INT8)."""
    convolutions = predictor_convolutions(model)
    return convolutions if flavour == "cpu" else convolutions[1:]


# What the cpu flavour quantizes besides the convolutions: the predictor's ops between them.
CPU_BETWEEN_CONVOLUTIONS = ("Relu", "Concat", "Add", "MaxPool", "AveragePool")


def nodes_to_quantize(model: onnx.ModelProto, flavour: str) -> list[str]:
    """The nodes the quantizer is given for ``flavour``: ``convolutions_to_quantize``, and for
    ``cpu`` the ReLU after each of them and the concatenations, additions and pools that feed
    them. Why: with only the convolutions quantized, every ReLU, skip concatenation and pool
    of the predictor ran in float between a DequantizeLinear and a QuantizeLinear; ONNX
    Runtime's profile of the full-width graph on an AVX-512 VNNI Xeon showed 242 such Q/DQ
    nodes and 88 ReLUs, 18% of the render's layer time (README, "Measured"). Quantized, ONNX
    Runtime drops a ReLU whose output range starts at 0 into the convolution before it and
    runs the rest on uint8. Not for ``tensorrt``: TensorRT places its own fusions around the
    convolutions' Q/DQ, and a symmetric int8 output cannot stand in for a ReLU."""
    convolutions = convolutions_to_quantize(model, flavour)
    if flavour != "cpu":
        return convolutions
    quantized = set(convolutions)
    producer = {name: node.name for node in model.graph.node for name in node.output}
    read_by: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            read_by.setdefault(name, set()).add(node.name)
    between = [
        node.name
        for node in model.graph.node
        if (node.op_type == "Relu" and producer.get(node.input[0]) in quantized)
        or (
            node.op_type in CPU_BETWEEN_CONVOLUTIONS[1:]
            and read_by.get(node.output[0], set()) & quantized
        )
    ]
    return convolutions + between


def require_quantizer() -> None:
    """RuntimeError unless ONNX Runtime's quantizer takes a calibration cache (1.32 on), the
    way ``quantize`` hands it our ranges."""
    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise RuntimeError(
            "int8 export needs onnxruntime 1.32 or newer (ranges are handed to its quantizer "
            "as a calibration cache): pip install -U onnxruntime, on a CPU environment if this "
            "one has onnxruntime-gpu"
        )


def quantize(
    model: onnx.ModelProto,
    flavour: str,
    photos: CalibrationSet,
    method: str = DEFAULT_METHOD,
    progress: Callable[[], None] = lambda: None,
) -> onnx.ModelProto:
    """An int8 copy of the fp32 export ``model`` (see the module docstring); its metadata says
    ``int8-<flavour>`` and records the calibration. ``progress`` is called once per photo."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        TensorData,
        TensorsData,
        quantize_static,
        save_tensors_data,
    )

    if flavour not in FLAVOURS:
        raise ValueError(f"int8 flavour {flavour!r} is not one of {', '.join(FLAVOURS)}")
    require_quantizer()
    metadata = model_metadata(model, "the fp32 export")
    if metadata.precision != "fp32":
        raise ValueError(f"int8 quantizes an fp32 export, not a {metadata.precision} one")
    symmetric = flavour == "tensorrt"
    nodes = nodes_to_quantize(model, flavour)
    chosen = set(nodes)
    op_types = sorted({node.op_type for node in model.graph.node if node.name in chosen})
    ranges = activation_ranges(
        model,
        tensors_to_calibrate(model, nodes),
        photos,
        method=method,
        symmetric=symmetric,
        progress=progress,
    )
    calibrated = TensorsData(
        CalibrationMethod.MinMax,
        {
            name: TensorData(lowest=np.float32(low), highest=np.float32(high))
            for name, (low, high) in ranges.items()
        },
    )
    with tempfile.TemporaryDirectory(prefix="dbsi-int8-") as folder, _quiet_quantizer():
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        cache = Path(folder) / "ranges.json"
        onnx.save(model, str(source))
        save_tensors_data(calibrated, cache)
        quantize_static(
            str(source),
            str(target),
            None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                "QuantizeBias": not symmetric,
            },
        )
        quantized = onnx.load(str(target))
    drop_quantization_before(quantized, "Softmax")
    set_metadata(
        quantized,
        metadata.replace(precision=f"int8-{flavour}", calibration=photos.summary(method)),
    )
    return quantized


def drop_quantization_before(model: onnx.ModelProto, op_type: str) -> int:
    """Feed every ``op_type`` node the float tensor that a Q -> DQ pair in front of it
    quantizes, and remove pairs nothing else reads. ONNX Runtime quantizes the head
    convolution's output because it is a quantized node's output; the logits would reach the
    softmax rounded to 256 levels. Returns how many inputs were restored."""
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    restored = 0
    for node in graph.node:
        if node.op_type != op_type:
            continue
        dequantize = producer.get(node.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producer.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        node.input[0] = quantize.input[0]
        restored += 1
    # Last first: a DequantizeLinear goes before the QuantizeLinear it reads.
    for node in reversed(list(graph.node)):
        read = {name for other in graph.node for name in other.input}
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.output[0] not in read:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    unused = [t for t in graph.initializer if t.name not in read]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return restored


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence onnxruntime.quantization's advice (it logs through the root logger and prints)
    while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
