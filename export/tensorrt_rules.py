"""What TensorRT's ONNX parser accepts, written as checks that run without TensorRT.

No machine that runs the test suite has TensorRT, so the graph is held to the parser's documented
rules here; each rule cites where NVIDIA states it:

- [ops] onnx/onnx-tensorrt ``docs/operators.md`` (branch 10.1-GA, "TensorRT 10.0 supports
  operators in the inclusive range of opset 9 to opset 20"): the operator support matrix, each
  operator's supported types and restrictions.
- [uint8] the same page: "UINT8 is only supported as network input or output tensor types";
  onnx-tensorrt ``ModelImporter.cpp`` (10.1-GA, ``parseNode``) refuses a node whose UINT8 output
  is not a graph output ("TensorRT does not support UINT8 types for intermediate tensors!");
  NVIDIA/TensorRT#3985: "all UINT8 inputs must directly feed into a cast layer; no other layers
  support UINT8 inputs, even data-movement ops like reshape / transpose".
- [double] the same page: DOUBLE has "limited support", cast down to FLOAT with clamping; a
  render has no use for it, so any DOUBLE tensor is a mistake.
- [resize] the Resize row: transformation modes, nearest modes, aspect ratio policy,
  "Antialiasing is not supported"; the modes nearest, linear and cubic, and tf_half_pixel_for_nn
  only with round_prefer_floor (``onnxOpCheckers.cpp``, Resize, which accepts cubic though the
  table lists only nearest and linear). Resizing by ``sizes`` (not ``scales``) keeps a
  dynamic-shape graph's output size exact, and a reflect pad must stay below the padded side.
- [axes] Slice, Squeeze, Pad, CumSum and the Reduce operators: "``axes`` must be an
  initializer"; Unsqueeze: "a constant tensor".
- [pool] AveragePool, MaxPool: "``dilations`` must be empty or all ones"; MaxPool: "``Indices``
  output tensor unsupported".
- [qdq] QuantizeLinear: "``y_zero_point`` must be 0"; DequantizeLinear: "``x_zero_point``
  must be zero", input INT8, FP8 or INT4.
- [constant] Constant: "``sparse_value``, ``value_string``, and ``value_strings`` attributes
  are unsupported".

The graph's I/O contract (uint8 image in, uint8 bokeh and float32 weights out, whatever the
precision inside) is checked by ``dbsi.export.checks.io_problems``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# Opsets: 17 is the least our graph needs (channel softmax, Resize; docs/DESIGN.md section 4.4);
# 20 is the most onnx-tensorrt documents for TensorRT 10.0 [ops].
MIN_OPSET = 17
MAX_OPSET = 20

_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
_NUMBERS = _FLOATS | {TensorProto.INT32, TensorProto.INT64}
_DATA = _NUMBERS | {TensorProto.BOOL}


def _table(types: set[int], names: str) -> dict[str, frozenset[int]]:
    return {name: frozenset(types) for name in names.split()}


# [ops]: every operator the matrix marks supported, with the types it lists for it.
SUPPORTED_OPS: dict[str, frozenset[int]] = {
    **_table(
        _FLOATS,
        "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv "
        "ConvTranspose Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool "
        "GlobalLpPool GlobalMaxPool GroupNormalization GRU HardSigmoid HardSwish Hardmax "
        "ImageScaler InstanceNormalization IsInf LayerNormalization LeakyRelu Log LogSoftmax LRN "
        "LSTM LpNormalization LpPool MatMul MaxPool MeanVarianceNormalization ParametricSoftplus "
        "Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike "
        "Reciprocal Resize RNN Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus "
        "Softsign Sqrt Tan Tanh ThresholdedRelu Upsample",
    ),
    **_table(
        _NUMBERS,
        "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less "
        "LessOrEqual Max Min Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum "
        "ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare "
        "Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub Sum TopK",
    ),
    **_table(
        _DATA,
        "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND "
        "Identity If Loop OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile "
        "Transpose Trilu Unsqueeze Where",
    ),
    **_table(
        {TensorProto.FLOAT, TensorProto.FLOAT16},
        "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
    ),
    **_table({TensorProto.BOOL}, "And Not Or Xor"),
    **_table(_DATA | {TensorProto.UINT8}, "Cast CastLike"),
    **_table({TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4}, "DequantizeLinear"),
    **_table(_NUMBERS | {TensorProto.INT8}, "Gelu"),
    **_table(_NUMBERS | {TensorProto.FLOAT8E4M3FN}, "Mean"),
}

# [resize]
RESIZE_TRANSFORMS = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
RESIZE_MODES = {"nearest", "linear", "cubic"}
RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}

# [axes]: operators whose input at this index, when given, must be a constant.
CONSTANT_INPUTS = {
    "Slice": (3, "axes"),
    "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"),
    "CumSum": (1, "axis"),
    **{
        f"Reduce{kind}": (1, "axes")
        for kind in ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod", "Sum")
    },
    "ReduceSumSquare": (1, "axes"),
}
# Pad's ``axes`` is input 3; its ``pads`` (input 1) must be constant for our reflect-pad rule.
PAD_AXES_INPUT = 3


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` node outputs by tensor name (whichever ``value*``
    attribute the Constant uses)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            value = onnx.helper.get_attribute_value(node.attribute[0])
            if isinstance(value, onnx.TensorProto):
                value = numpy_helper.to_array(value)
            values[node.output[0]] = np.asarray(value)
    return values


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type ONNX shape inference can tell."""
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except onnx.shape_inference.InferenceError:
        graph = model.graph  # the strict shape-inference check reports why; use what is declared
    types = {t.name: t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes and those of every subgraph (If and Loop bodies), depth first."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            for subgraph in [attr.g] if attr.HasField("g") else list(attr.graphs):
                nodes += all_nodes(subgraph)
    return nodes


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name or node.output[0]} ({node.op_type})"


def opset_problems(model: onnx.ModelProto) -> list[str]:
    """The default-domain opset against ``MIN_OPSET``..``MAX_OPSET``."""
    opset = max(
        (imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), default=0
    )
    if opset < MIN_OPSET:
        return [f"opset {opset} < {MIN_OPSET}"]
    if opset > MAX_OPSET:
        return [f"opset {opset} > {MAX_OPSET}, the newest onnx-tensorrt documents for TensorRT 10"]
    return []


def uint8_problems(model: onnx.ModelProto, types: dict[str, int]) -> list[str]:
    """[uint8]: a UINT8 tensor is a graph input that feeds only Cast nodes, or a graph output
    that a Cast produces; nothing else."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    problems = []
    for node in graph.node:
        for name in node.input:
            if name in inputs and types.get(name) == TensorProto.UINT8 and node.op_type != "Cast":
                problems.append(
                    f"{_label(node)} reads the UINT8 input '{name}'; only a Cast may read it"
                )
        for name in node.output:
            if types.get(name) != TensorProto.UINT8:
                continue
            if name not in outputs:
                problems.append(
                    f"{_label(node)} makes the UINT8 tensor '{name}' between layers; TensorRT "
                    "takes UINT8 only as a network input or output"
                )
            elif node.op_type != "Cast":
                problems.append(
                    f"{_label(node)} makes the UINT8 output '{name}'; it must come from a Cast"
                )
    return problems


def operator_problems(model: onnx.ModelProto, types: dict[str, int]) -> list[str]:
    """[ops] and [double]: every operator in the support matrix, its data input of a type the
    matrix lists for it, no DOUBLE tensor anywhere."""
    problems = []
    for node in all_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{_label(node)}: custom domain '{node.domain}' needs a plugin")
            continue
        supported = SUPPORTED_OPS.get(node.op_type)
        if supported is None:
            problems.append(f"{_label(node)}: not in onnx-tensorrt's operator support matrix")
            continue
        data_type = types.get(node.input[0]) if node.input and node.input[0] else None
        if data_type is not None and data_type not in supported:
            problems.append(
                f"{_label(node)}: input type {_type_name(data_type)} is not among "
                f"{', '.join(sorted(_type_name(t) for t in supported))}"
            )
    doubles = sorted(name for name, t in types.items() if t == TensorProto.DOUBLE)
    problems += [f"tensor '{name}' is DOUBLE" for name in doubles]
    return problems


def attribute_problems(
    model: onnx.ModelProto, constants: dict[str, np.ndarray], min_input_side: int
) -> list[str]:
    """[resize], [axes], [pool], [qdq], [constant], and the reflect-pad limit."""
    problems = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        label = _label(node)
        if node.op_type == "Resize":
            problems += _resize_problems(node, attrs, label)
        elif node.op_type == "Pad":
            problems += _pad_problems(node, attrs, constants, min_input_side, label)
        elif node.op_type in ("AveragePool", "MaxPool"):
            if any(d != 1 for d in attrs.get("dilations", [])):
                problems.append(f"{label}: dilations {attrs['dilations']} are not all ones")
            if len(node.output) > 1 and node.output[1]:
                problems.append(f"{label}: the Indices output is not supported")
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _zero_point_problems(node, constants, label)
        elif node.op_type == "Constant":
            unsupported = {"sparse_value", "value_string", "value_strings"} & set(attrs)
            if unsupported:
                problems.append(f"{label}: unsupported attribute {', '.join(sorted(unsupported))}")
        if node.op_type in CONSTANT_INPUTS:
            index, what = CONSTANT_INPUTS[node.op_type]
            if len(node.input) > index and node.input[index] and node.input[index] not in constants:
                problems.append(f"{label}: {what} is not a constant")
    return problems


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _resize_problems(node: onnx.NodeProto, attrs: dict, label: str) -> list[str]:
    problems = []
    if attrs.get("antialias", 0) == 1:
        problems.append(f"{label}: Resize with antialias=1")
    checks = (
        ("mode", "nearest", RESIZE_MODES),
        ("coordinate_transformation_mode", "half_pixel", RESIZE_TRANSFORMS),
        ("nearest_mode", "round_prefer_floor", RESIZE_NEAREST_MODES),
        ("keep_aspect_ratio_policy", "stretch", {"stretch"}),
    )
    values = {name: _text(attrs.get(name, default)) for name, default, _ in checks}
    for name, _, allowed in checks:
        if values[name] not in allowed:
            problems.append(f"{label}: {name} '{values[name]}' is not one of {sorted(allowed)}")
    if (
        values["coordinate_transformation_mode"] == "tf_half_pixel_for_nn"
        and values["nearest_mode"] != "round_prefer_floor"
    ):
        problems.append(f"{label}: tf_half_pixel_for_nn needs nearest_mode round_prefer_floor")
    scales = node.input[2] if len(node.input) > 2 else ""
    sizes = node.input[3] if len(node.input) > 3 else ""
    if scales and not sizes:
        problems.append(f"{label}: Resize by scales instead of sizes")
    return problems


def _pad_problems(
    node: onnx.NodeProto,
    attrs: dict,
    constants: dict[str, np.ndarray],
    min_input_side: int,
    label: str,
) -> list[str]:
    problems = []
    if len(node.input) > PAD_AXES_INPUT and node.input[PAD_AXES_INPUT]:
        if node.input[PAD_AXES_INPUT] not in constants:
            problems.append(f"{label}: axes is not a constant")
    pads = constants.get(node.input[1]) if len(node.input) > 1 else None
    if pads is None:
        problems.append(f"{label}: Pad with shape-dependent pads")
    elif _text(attrs.get("mode", "constant")) == "reflect" and pads.max() >= min_input_side:
        problems.append(
            f"{label}: reflect pad {int(pads.max())} reaches the minimum input side "
            f"{min_input_side}"
        )
    return problems


def _zero_point_problems(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], label: str
) -> list[str]:
    if len(node.input) < 3 or not node.input[2]:
        return []  # no zero point: ONNX defines it as 0
    zero_point = constants.get(node.input[2])
    if zero_point is None:
        return [f"{label}: zero point is not a constant"]
    if np.any(zero_point != 0):
        return [f"{label}: zero point is not 0 (TensorRT quantizes symmetrically)"]
    return []


def tensorrt_problems(model: onnx.ModelProto, min_input_side: int) -> list[str]:
    """Everything in ``model`` that TensorRT's ONNX parser would refuse or get wrong, one line
    per problem naming the node; empty when the graph keeps every rule above."""
    types = tensor_types(model)
    constants = constant_values(model)
    return [
        *opset_problems(model),
        *uint8_problems(model, types),
        *operator_problems(model, types),
        *attribute_problems(model, constants, min_input_side),
    ]
