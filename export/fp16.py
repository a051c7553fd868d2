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

import importlib
import warnings
from types import ModuleType

import onnx
from onnx import TensorProto

from dbsi.export.metadata import has_metadata, model_metadata, set_metadata
from dbsi.train.aperture import ApertureMix
from dbsi.train.temporal import TemporalMix

APERTURE_MODULE = f"{ApertureMix.__module__}.{ApertureMix.__qualname__}"
TEMPORAL_MODULE = f"{TemporalMix.__module__}.{TemporalMix.__qualname__}"


def require_fp16_converter() -> ModuleType:
    """onnxconverter-common's ``float16`` module, imported only when an fp16 export is asked
    for (an optional package: a machine that never converts to fp16 need not have it);
    RuntimeError with the install line when it is missing."""
    try:
        return importlib.import_module("onnxconverter_common.float16")
    except ImportError as exc:
        raise RuntimeError(
            f"--fp16 needs onnxconverter-common, which is not importable here ({exc}): "
            "pip install 'dbsi-bokeh[train]'"
        ) from exc


def fp32_node_names(model: onnx.ModelProto) -> list[str]:
    """Nodes that must stay float32: every Softmax, every reflect Pad, every Conv that reads a
    Pad's output (the separable Gaussian passes), the aperture mix (its matrix and the
    weighted sums of the softmax's maps, so that aperture 1 passes them on unchanged) and the
    temporal mix (so that a photo's ones-and-zeros mix passes them on unchanged too). The
    mixes' nodes are found by the exporter's record of the module that made them."""
    pad_outputs = {node.output[0] for node in model.graph.node if node.op_type == "Pad"}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in ("Softmax", "Pad")
        or (node.op_type == "Conv" and node.input[0] in pad_outputs)
        or _made_by(node, APERTURE_MODULE)
        or _made_by(node, TEMPORAL_MODULE)
    ]


def _made_by(node: onnx.NodeProto, module_class: str) -> bool:
    """Whether the exporter recorded ``module_class`` among the modules that made ``node``
    (``pkg.torch.onnx.class_hierarchy`` in its metadata_props)."""
    return any(
        prop.key == "pkg.torch.onnx.class_hierarchy" and module_class in prop.value
        for prop in node.metadata_props
    )


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


def restore_float_outputs(
    model: onnx.ModelProto, float_outputs: set[str], blocked: set[str]
) -> None:
    """Make the named graph outputs float32 again. Nodes inside the graph keep reading the
    float16 tensor (renamed ``<name>_fp16``); the output becomes the float32 tensor before a
    final ``Cast(to=float16)``, or a new ``Cast(to=float)`` of the float16 one. The
    ``blocked`` (float32) nodes among the readers read the float32 tensor: the converter
    points them at its float16 Cast when the output is made by a blocked node too (the
    temporal mix's maps, read by the aperture mix), and the Cast goes when nothing else reads
    it."""
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
            readers = [node for node in graph.node if fp16_name in node.input]
            for node in readers:
                if node.name in blocked:
                    node.input[:] = [output.name if i == fp16_name else i for i in node.input]
            if all(node.name in blocked for node in readers):
                graph.node.remove(producer)
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


def remove_round_trip_casts(model: onnx.ModelProto) -> int:
    """Let float32 nodes read each other's float32 outputs directly: the converter routes a
    tensor between two blocked nodes through ``Cast(to=float16)`` then ``Cast(to=float)``,
    rounding it to float16 on the way (the aperture mix would then change the weights at
    aperture 1). Returns how many round trips were removed."""
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    outputs = {o.name for o in graph.output}

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    removed = 0
    for node in list(graph.node):
        down = producer.get(node.input[0]) if node.input else None
        if cast_to(node) != TensorProto.FLOAT or down is None:
            continue
        if cast_to(down) != TensorProto.FLOAT16 or node.output[0] in outputs:
            continue
        source = producer.get(down.input[0])
        if source is not None and cast_to(source) == TensorProto.FLOAT16:
            continue  # a float16 tensor cast up and down: not a round trip from float32
        for consumer in graph.node:
            for i, name in enumerate(consumer.input):
                if name == node.output[0]:
                    consumer.input[i] = down.input[0]
        graph.node.remove(node)
        removed += 1
    read = {name for node in graph.node for name in node.input} | outputs
    for node in list(graph.node):
        if node.op_type == "Cast" and node.output[0] not in read:
            graph.node.remove(node)
    return removed


def unshare_initializers(model: onnx.ModelProto, blocked: set[str]) -> int:
    """Give the ``blocked`` nodes their own copy of every float initializer they share with
    converted nodes (the exporter stores each constant once, e.g. one 0.0 for every clamp):
    the converter retypes a shared one to float16 under the float32 node too, which no runtime
    accepts. Returns how many were copied."""
    graph = model.graph
    floats = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    readers: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in floats:
                readers.setdefault(name, set()).add(node.name in blocked)
    copied = 0
    for name, kinds in readers.items():
        if kinds != {True, False}:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(floats[name])
        copy.name = f"{name}_fp32"
        graph.initializer.append(copy)
        for node in graph.node:
            if node.name in blocked:
                for i, input_name in enumerate(node.input):
                    if input_name == name:
                        node.input[i] = copy.name
        copied += 1
    return copied


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of an fp32 export; its ``dbsi.*`` metadata (when present) says fp16.
    RuntimeError when onnxconverter-common is not installed."""
    float16 = require_fp16_converter()
    source = onnx.ModelProto()
    source.CopyFrom(model)
    drop_initializer_value_info(source)
    blocked = fp32_node_names(source)
    unshare_initializers(source, set(blocked))
    float_outputs = {
        o.name for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    with warnings.catch_warnings():
        # One warning per weight below fp16's range (clamped to 1e-7): noise, not news.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            source,
            keep_io_types=True,
            node_block_list=blocked,
            op_block_list=float16.DEFAULT_OP_BLOCK_LIST,
        )
    retarget_float_casts(converted)
    restore_float_outputs(converted, float_outputs, set(blocked))
    remove_round_trip_casts(converted)
    if has_metadata(model):
        metadata = model_metadata(model, "the fp32 export")
        set_metadata(converted, metadata.replace(precision="fp16"))
    return converted
