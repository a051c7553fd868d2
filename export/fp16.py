"""FP16 ONNX for strongly typed TensorRT builds (TensorRT 11 has no FP16 builder flag: the
precision of every layer comes from the types in the graph).

onnxconverter-common's float16 conversion, with:
- the graph's I/O types unchanged (uint8 image in and out, float32 weight maps);
- softmax and the blur bank (reflect pads and the depthwise Gaussian convs, whose tail taps are
  tiny) kept in float32; Resize stays float32 too (onnxconverter-common's default block list,
  because its ``scales`` input must stay float32);
and three repairs of onnxconverter-common 1.16's output on a dynamo export:
- value_info entries of initializers are dropped first: the converter retypes them to float16
  while keeping the float32 data of initializers read by blocked nodes, then casts the "float16"
  constant back (a Resize's scales would become a runtime Cast);
- the exporter's ``Cast(uint8 -> float)`` is retargeted to float16: the converter retypes that
  tensor but leaves the Cast's ``to`` attribute, which no checker accepts;
- a float32 graph output made by a blocked node (the weight maps come out of a float32 Resize)
  is restored to float32: the converter casts it to float16 despite ``keep_io_types``.
"""

from __future__ import annotations

import warnings

import onnx
from onnx import TensorProto
from onnxconverter_common import float16

from dbsi.export.metadata import has_metadata, model_metadata, set_metadata


def fp32_node_names(model: onnx.ModelProto) -> list[str]:
    """Nodes that must stay float32: every Softmax, every reflect Pad, and every Conv that
    reads a Pad's output (the separable Gaussian passes)."""
    pad_outputs = {node.output[0] for node in model.graph.node if node.op_type == "Pad"}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in ("Softmax", "Pad")
        or (node.op_type == "Conv" and node.input[0] in pad_outputs)
    ]


def retarget_float_casts(model: onnx.ModelProto) -> int:
    """Point ``Cast(to=float)`` nodes whose output the converter retyped to float16 at float16;
    returns how many changed."""
    graph = model.graph
    types = {
        info.name: info.type.tensor_type.elem_type for info in [*graph.value_info, *graph.output]
    }
    changed = 0
    for node in graph.node:
        if node.op_type != "Cast" or types.get(node.output[0]) != TensorProto.FLOAT16:
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
                changed += 1
    return changed


def drop_initializer_value_info(model: onnx.ModelProto) -> None:
    """Remove value_info entries that describe initializers (they are redundant)."""
    initializers = {t.name for t in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in initializers]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor in every node and value_info of ``graph`` (not in graph outputs)."""
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def restore_float_outputs(model: onnx.ModelProto, float_outputs: set[str]) -> None:
    """Make the named graph outputs float32 again. Nodes inside the graph keep reading the
    float16 tensor (renamed ``<name>_fp16``); the output becomes the float32 tensor before a
    final ``Cast(to=float16)``, or a new ``Cast(to=float)`` of the float16 one."""
    graph = model.graph
    for output in graph.output:
        if output.name not in float_outputs:
            continue
        if output.type.tensor_type.elem_type == TensorProto.FLOAT:
            continue
        fp16_name = f"{output.name}_fp16"
        rename_tensor(graph, output.name, fp16_name)
        types = {info.name: info.type.tensor_type.elem_type for info in graph.value_info}
        producer = next(node for node in graph.node if fp16_name in node.output)
        source = producer.input[0] if producer.op_type == "Cast" else None
        if source is not None and types.get(source) == TensorProto.FLOAT:
            rename_tensor(graph, source, output.name)
        else:
            graph.node.append(
                onnx.helper.make_node(
                    "Cast",
                    [fp16_name],
                    [output.name],
                    name=f"{output.name}_to_fp32",
                    to=TensorProto.FLOAT,
                )
            )
        output.type.tensor_type.elem_type = TensorProto.FLOAT


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of an fp32 export; its ``dbsi.*`` metadata (when present) says fp16."""
    source = onnx.ModelProto()
    source.CopyFrom(model)
    drop_initializer_value_info(source)
    float_outputs = {
        o.name for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    with warnings.catch_warnings():
        # One warning per weight below fp16's range (clamped to 1e-7): noise, not news.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            source,
            keep_io_types=True,
            node_block_list=fp32_node_names(model),
            op_block_list=float16.DEFAULT_OP_BLOCK_LIST,
        )
    retarget_float_casts(converted)
    restore_float_outputs(converted, float_outputs)
    if has_metadata(model):
        metadata = model_metadata(model, "the fp32 export")
        set_metadata(converted, metadata.replace(precision="fp16"))
    return converted
