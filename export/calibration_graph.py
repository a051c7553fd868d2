"""The calibration graph: the fp32 graph reduced to each calibrated tensor's extremes (and
sample), run in an order that frees every activation as soon as it is reduced.

``reduction_graph`` cuts the graph down to the nodes the calibrated tensors need and gives each
tensor a ReduceMin, a ReduceMax and, for histograms, a strided sample; only those are outputs.
That alone did not lower the peak (16.9 GB on the full-width model, 8 photos): ONNX Runtime's
layout optimizer (NCHWc, level ``ORT_ENABLE_ALL``) adds a ReorderOutput node in front of every
reduction, new nodes run after the graph's own ones in either of its execution orders, and so
every reordered activation stayed alive until the end. Running at a lower optimization level
frees them but computes the convolutions with other kernels, whose ranges differ in the last
bits from the ones ``bokeh-export`` measured before.

So ``calibration_session`` lets ONNX Runtime optimize the graph at its default level once and
save the result, orders the saved nodes by the first calibrated tensor that needs each
(``reduction_order``), and runs that graph as it is (optimizations off, priority order, which
follows the node order): the same kernels on the same values, each activation freed once its
consumers have run. Measured on the full-width model: 1.8 GiB peak for 8 photos of 5 shapes,
against 18 GiB with every activation an output (README, INT8).
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

PREFIX = "dbsi_calibration"


def reduction_graph(
    model: onnx.ModelProto, tensors: Sequence[str], sample: int | None
) -> tuple[onnx.ModelProto, list[tuple[str, ...]]]:
    """A copy of ``model`` cut down to the nodes the ``tensors`` need, whose only outputs are
    each tensor's minimum and maximum (float32 scalars) and, with ``sample``, every
    ``max(1, size // sample)``-th of its values flattened; with the output names per tensor,
    in the order of ``tensors``. Each tensor's reductions follow its producer."""
    graph = onnx.helper.make_graph(
        [], model.graph.name, list(model.graph.input), [], list(model.graph.initializer)
    )
    constants = {
        "flat": [-1],
        "one": [1],
        "zero": [0],
        "end": [np.iinfo(np.int64).max],
        "sample": sample or 1,
        "unit": 1,
    }
    for key, value in constants.items():
        array = np.array(value, np.int64)
        graph.initializer.append(onnx.numpy_helper.from_array(array, f"{PREFIX}/{key}"))
    reductions: dict[str, list[onnx.NodeProto]] = {name: [] for name in tensors}
    outputs = []

    def node(tensor: str, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        made = onnx.helper.make_node(op, inputs, [output], name=output, **attributes)
        reductions[tensor].append(made)
        return output

    for index, name in enumerate(tensors):
        out = f"{PREFIX}/{index}"
        names = (
            node(name, "ReduceMin", [name], f"{out}/min", keepdims=0),
            node(name, "ReduceMax", [name], f"{out}/max", keepdims=0),
        )
        if sample is not None:
            flat = node(name, "Reshape", [name, f"{PREFIX}/flat"], f"{out}/flat")
            size = node(name, "Size", [name], f"{out}/size")
            step = node(name, "Div", [size, f"{PREFIX}/sample"], f"{out}/quotient")
            step = node(name, "Max", [step, f"{PREFIX}/unit"], f"{out}/step")
            steps = node(name, "Reshape", [step, f"{PREFIX}/one"], f"{out}/steps")
            ends = [flat, f"{PREFIX}/zero", f"{PREFIX}/end", f"{PREFIX}/zero", steps]
            names += (node(name, "Slice", ends, f"{out}/sample"),)
        outputs.append(names)
    # The nodes the tensors need, in graph order (a topological one).
    needed = set(tensors)
    kept = []
    for original in reversed(model.graph.node):
        if needed.intersection(original.output):
            kept.append(original)
            needed.update(original.input)
    for original in reversed(kept):
        graph.node.append(original)
        for name in original.output:
            graph.node.extend(reductions.get(name, ()))
    used = {name for n in graph.node for name in n.input}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    # The calibrated tensors are the fp32 graph's activations: float32 all.
    for names in outputs:
        shapes = [[], [], [None]][: len(names)]
        graph.output.extend(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)
            for name, shape in zip(names, shapes)
        )
    reduced = onnx.helper.make_model(graph)
    del reduced.opset_import[:]
    reduced.opset_import.extend(model.opset_import)
    reduced.ir_version = model.ir_version
    return reduced, outputs


def reduction_order(model: onnx.ModelProto, outputs: Sequence[Sequence[str]]) -> None:
    """Reorder ``model``'s nodes (in a topological order already) in place: by the first group
    of ``outputs`` each node leads to, then by position, each node as soon as its inputs exist.
    Group k's nodes, its reductions among them, then run before anything only later groups
    need, so each calibrated tensor is reduced and freed right after it is computed."""
    nodes = list(model.graph.node)
    last = len(outputs)
    group = {name: k for k, names in enumerate(outputs) for name in names}
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    first = [last] * len(nodes)
    for index in reversed(range(len(nodes))):
        for name in nodes[index].output:
            reached = [first[reader] for reader in readers.get(name, ())]
            first[index] = min(first[index], group.get(name, last), *reached)
    producer = {name: index for index, node in enumerate(nodes) for name in node.output}
    waiting = [len({producer[name] for name in n.input if name in producer}) for n in nodes]
    ready = [(first[index], index) for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, index = heapq.heappop(ready)
        order.append(nodes[index])
        for reader in {r for name in nodes[index].output for r in readers.get(name, ())}:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, (first[reader], reader))
    del model.graph.node[:]
    model.graph.node.extend(order)


def calibration_session(
    model: onnx.ModelProto, tensors: Sequence[str], sample: int | None
) -> tuple[Any, list[tuple[str, ...]]]:
    """An ONNX Runtime CPU session computing ``reduction_graph(model, tensors, sample)`` with
    the kernels of ONNX Runtime's default optimization level, in ``reduction_order`` (see the
    module docstring); with the output names per tensor."""
    import onnxruntime as ort

    reduced, outputs = reduction_graph(model, tensors, sample)
    with tempfile.TemporaryDirectory(prefix="dbsi-calibration-") as folder:
        optimizing = ort.SessionOptions()
        optimizing.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        # Errors only: ONNX Runtime warns that the saved graph fits only this machine, which
        # is the only place it runs.
        optimizing.log_severity_level = 3
        ort.InferenceSession(
            reduced.SerializeToString(), optimizing, providers=["CPUExecutionProvider"]
        )
        optimized = onnx.load(optimizing.optimized_model_filepath)
    reduction_order(optimized, outputs)
    running = ort.SessionOptions()
    running.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    running.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # A memory pattern is planned and kept per input shape, one more block for each aspect
    # ratio among the photos: 3.4 GiB peak for 8 photos of 5 shapes with, 1.8 GiB without.
    running.enable_mem_pattern = False
    session = ort.InferenceSession(
        optimized.SerializeToString(), running, providers=["CPUExecutionProvider"]
    )
    return session, outputs
