"""The static graph rules TensorRT needs (dbsi.export.checks.static_graph_problems)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from dbsi.export.checks import static_graph_problems

MIN_SIDE = 38


def model_of(nodes, initializers=(), opset=18):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, values, dtype=np.float32):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def resize(*inputs, **attrs):
    return helper.make_node("Resize", ["x", *inputs], ["y"], name="resize", mode="linear", **attrs)


def test_resize_to_constant_sizes_passes():
    model = model_of([resize("", "", "sizes")], [const("sizes", [1, 3, 64, 96], np.int64)])
    assert static_graph_problems(model, MIN_SIDE) == []


def test_opset_below_17_is_a_problem():
    model = model_of([helper.make_node("Relu", ["x"], ["y"])], opset=16)
    assert static_graph_problems(model, MIN_SIDE) == ["opset 16 < 17"]


def test_antialiased_resize_is_a_problem():
    model = model_of(
        [resize("", "", "sizes", antialias=1)], [const("sizes", [1, 3, 8, 8], np.int64)]
    )
    assert "antialias=1" in static_graph_problems(model, MIN_SIDE)[0]


def test_resize_by_fractional_scales_is_a_problem():
    model = model_of([resize("", "scales")], [const("scales", [1, 1, 1.5, 1.5])])
    assert "scales instead of sizes" in static_graph_problems(model, MIN_SIDE)[0]


def test_resize_by_computed_scales_is_a_problem():
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["scales"], to=TensorProto.FLOAT),
        resize("", "scales"),
    ]
    assert "scales instead of sizes" in static_graph_problems(model_of(nodes), MIN_SIDE)[0]


def test_resize_by_constant_integer_scales_is_a_problem_too():
    model = model_of([resize("", "scales")], [const("scales", [1, 1, 2, 2])])
    assert "scales instead of sizes" in static_graph_problems(model, MIN_SIDE)[0]


def test_pad_with_shape_dependent_pads_is_a_problem():
    nodes = [
        helper.make_node("Shape", ["x"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect"),
    ]
    assert "shape-dependent pads" in static_graph_problems(model_of(nodes), MIN_SIDE)[0]


def test_reflect_pad_as_large_as_the_minimum_side_is_a_problem():
    pad = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect")
    ok = model_of([pad], [const("pads", [0, 0, 0, 37, 0, 0, 0, 37], np.int64)])
    assert static_graph_problems(ok, MIN_SIDE) == []
    too_big = model_of([pad], [const("pads", [0, 0, 0, 38, 0, 0, 0, 38], np.int64)])
    assert "reaches the minimum input side" in static_graph_problems(too_big, MIN_SIDE)[0]


def test_pads_from_a_constant_node_count_as_constant():
    nodes = [
        helper.make_node(
            "Constant", [], ["pads"], value=const("v", [0, 0, 0, 2, 0, 0, 0, 2], np.int64)
        ),
        helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect"),
    ]
    assert static_graph_problems(model_of(nodes), MIN_SIDE) == []
