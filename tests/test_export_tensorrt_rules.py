"""The TensorRT ONNX-parser rules, checked without TensorRT (dbsi.export.tensorrt_rules)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dbsi.export.tensorrt_rules import tensorrt_problems

MIN_SIDE = 38


def model_of(nodes, initializers=(), opset=18, x_type=TensorProto.FLOAT, y_type=None):
    x = helper.make_tensor_value_info("x", x_type, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("y", y_type or x_type, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, values, dtype=np.float32):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def resize(*inputs, **attrs):
    attrs.setdefault("mode", "linear")
    return helper.make_node("Resize", ["x", *inputs], ["y"], name="resize", **attrs)


def pixels_graph(*middle, first="Cast", last="Cast"):
    """uint8 x -> ``first`` -> float ... -> ``last`` -> uint8 y, with ``middle`` nodes between
    ``a`` and ``b``."""
    nodes = [
        helper.make_node(first, ["x"], ["a"], name="first", **_cast_to(first, TensorProto.FLOAT)),
        *middle,
        helper.make_node(last, ["b"], ["y"], name="last", **_cast_to(last, TensorProto.UINT8)),
    ]
    return model_of(nodes, x_type=TensorProto.UINT8)


def _cast_to(op, elem_type):
    return {"to": elem_type} if op == "Cast" else {}


def test_cast_first_and_last_passes():
    model = pixels_graph(helper.make_node("Transpose", ["a"], ["b"], perm=[0, 1, 3, 2]))
    assert tensorrt_problems(model, MIN_SIDE) == []


def test_a_uint8_transpose_between_layers_fails_naming_the_node():
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="flip_uint8", perm=[0, 1, 3, 2]),
        helper.make_node("Cast", ["t"], ["a"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Cast", ["b"], ["y"], name="to_uint8", to=TensorProto.UINT8),
    ]
    problems = tensorrt_problems(model_of(nodes, x_type=TensorProto.UINT8), MIN_SIDE)
    assert "flip_uint8 (Transpose) reads the UINT8 input 'x'; only a Cast may read it" in problems
    assert any(
        "flip_uint8 (Transpose) makes the UINT8 tensor 't' between layers" in p for p in problems
    )


def test_a_shape_read_of_the_uint8_input_fails():
    model = pixels_graph(helper.make_node("Relu", ["a"], ["b"]))
    model.graph.node.insert(0, helper.make_node("Shape", ["x"], ["dims"], name="dims_of_x"))
    problems = tensorrt_problems(model, MIN_SIDE)
    assert "dims_of_x (Shape) reads the UINT8 input 'x'; only a Cast may read it" in problems


def test_a_uint8_output_that_no_cast_makes_fails():
    nodes = [
        helper.make_node("Cast", ["x"], ["a"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["a"], ["b"], to=TensorProto.UINT8),
        helper.make_node("Identity", ["b"], ["y"], name="pass_through"),
    ]
    problems = tensorrt_problems(model_of(nodes, x_type=TensorProto.UINT8), MIN_SIDE)
    assert any("makes the UINT8 tensor 'b' between layers" in p for p in problems)
    assert any("pass_through (Identity) makes the UINT8 output 'y'" in p for p in problems)


def test_an_operator_outside_the_support_matrix_fails():
    model = model_of(
        [helper.make_node("BitShift", ["x", "x"], ["y"], name="shift", direction="LEFT")],
        x_type=TensorProto.INT32,
    )
    assert tensorrt_problems(model, MIN_SIDE) == [
        "shift (BitShift): not in onnx-tensorrt's operator support matrix"
    ]


def test_an_operator_on_a_type_the_matrix_does_not_list_fails():
    model = model_of(
        [helper.make_node("Floor", ["x"], ["y"], name="floor")], x_type=TensorProto.INT32
    )
    assert tensorrt_problems(model, MIN_SIDE) == [
        "floor (Floor): input type INT32 is not among BFLOAT16, FLOAT, FLOAT16"
    ]


def test_a_custom_domain_fails():
    node = helper.make_node("Blur", ["x"], ["y"], name="plugin", domain="com.example")
    model = model_of([node])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    assert "custom domain" in tensorrt_problems(model, MIN_SIDE)[0]


def test_a_double_tensor_fails():
    nodes = [
        helper.make_node("Cast", ["x"], ["d"], name="to_double", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT),
    ]
    assert "tensor 'd' is DOUBLE" in tensorrt_problems(model_of(nodes), MIN_SIDE)


def test_resize_to_constant_sizes_passes():
    model = model_of([resize("", "", "sizes")], [const("sizes", [1, 3, 64, 96], np.int64)])
    assert tensorrt_problems(model, MIN_SIDE) == []


def test_an_unknown_resize_mode_fails_and_cubic_passes():
    sizes = const("sizes", [1, 3, 8, 8], np.int64)
    bad = model_of([resize("", "", "sizes", mode="area")], [sizes])
    assert "mode 'area' is not one of" in tensorrt_problems(bad, MIN_SIDE)[0]
    cubic = model_of([resize("", "", "sizes", mode="cubic")], [sizes])
    assert tensorrt_problems(cubic, MIN_SIDE) == []


def test_tf_half_pixel_for_nn_needs_round_prefer_floor():
    node = resize(
        "",
        "",
        "sizes",
        mode="nearest",
        coordinate_transformation_mode="tf_half_pixel_for_nn",
        nearest_mode="floor",
    )
    model = model_of([node], [const("sizes", [1, 3, 8, 8], np.int64)])
    assert "needs nearest_mode round_prefer_floor" in tensorrt_problems(model, MIN_SIDE)[0]


def test_a_resize_transformation_mode_tensorrt_lacks_fails():
    model = model_of(
        [resize("", "", "sizes", coordinate_transformation_mode="tf_crop_and_resize")],
        [const("sizes", [1, 3, 8, 8], np.int64)],
    )
    assert "coordinate_transformation_mode" in tensorrt_problems(model, MIN_SIDE)[0]


@pytest.mark.parametrize("opset, message", [(16, "opset 16 < 17"), (21, "opset 21 > 20")])
def test_an_opset_outside_17_to_20_fails(opset, message):
    model = model_of([helper.make_node("Relu", ["x"], ["y"])], opset=opset)
    assert tensorrt_problems(model, MIN_SIDE)[0].startswith(message)


def test_antialiased_resize_fails():
    model = model_of(
        [resize("", "", "sizes", antialias=1)], [const("sizes", [1, 3, 8, 8], np.int64)]
    )
    assert "antialias=1" in tensorrt_problems(model, MIN_SIDE)[0]


def test_resize_by_fractional_scales_fails():
    model = model_of([resize("", "scales")], [const("scales", [1, 1, 1.5, 1.5])])
    assert "scales instead of sizes" in tensorrt_problems(model, MIN_SIDE)[0]


def test_resize_by_computed_scales_fails():
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["scales"], to=TensorProto.FLOAT),
        resize("", "scales"),
    ]
    assert "scales instead of sizes" in tensorrt_problems(model_of(nodes), MIN_SIDE)[0]


def test_resize_by_constant_integer_scales_fails_too():
    model = model_of([resize("", "scales")], [const("scales", [1, 1, 2, 2])])
    assert "scales instead of sizes" in tensorrt_problems(model, MIN_SIDE)[0]


def test_pad_with_shape_dependent_pads_fails():
    nodes = [
        helper.make_node("Shape", ["x"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect"),
    ]
    assert "shape-dependent pads" in tensorrt_problems(model_of(nodes), MIN_SIDE)[0]


def test_reflect_pad_as_large_as_the_minimum_side_fails():
    pad = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect")
    ok = model_of([pad], [const("pads", [0, 0, 0, 37, 0, 0, 0, 37], np.int64)])
    assert tensorrt_problems(ok, MIN_SIDE) == []
    too_big = model_of([pad], [const("pads", [0, 0, 0, 38, 0, 0, 0, 38], np.int64)])
    assert "reaches the minimum input side" in tensorrt_problems(too_big, MIN_SIDE)[0]


def test_pads_from_a_constant_node_count_as_constant():
    nodes = [
        helper.make_node(
            "Constant", [], ["pads"], value=const("v", [0, 0, 0, 2, 0, 0, 0, 2], np.int64)
        ),
        helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect"),
    ]
    assert tensorrt_problems(model_of(nodes), MIN_SIDE) == []


def test_slice_with_computed_axes_fails():
    nodes = [
        helper.make_node("Shape", ["x"], ["dims"]),
        helper.make_node("Slice", ["dims", "starts", "ends", "dims"], ["axes_cut"], name="cut"),
        helper.make_node("Relu", ["x"], ["y"]),
    ]
    starts, ends = const("starts", [0], np.int64), const("ends", [1], np.int64)
    model = model_of(nodes, [starts, ends])
    assert "cut (Slice): axes is not a constant" in tensorrt_problems(model, MIN_SIDE)


def test_pooling_with_dilations_fails():
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], dilations=[2, 2]
    )
    assert tensorrt_problems(model_of([node]), MIN_SIDE) == [
        "pool (MaxPool): dilations [2, 2] are not all ones"
    ]


def qdq_graph(zero_point, dtype=np.int8):
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], name="dequant"),
    ]
    return model_of(nodes, [const("scale", 0.02), const("zero", zero_point, dtype)])


def test_symmetric_int8_quantization_passes():
    assert tensorrt_problems(qdq_graph(0), MIN_SIDE) == []


def test_a_nonzero_zero_point_fails_on_both_sides():
    problems = tensorrt_problems(qdq_graph(3), MIN_SIDE)
    assert [p.split(":")[0] for p in problems] == [
        "quant (QuantizeLinear)",
        "dequant (DequantizeLinear)",
    ]
    assert all("zero point is not 0" in p for p in problems)


def test_uint8_quantized_activations_fail():
    problems = tensorrt_problems(qdq_graph(128, np.uint8), MIN_SIDE)
    assert any("makes the UINT8 tensor 'q' between layers" in p for p in problems)
    assert any("dequant (DequantizeLinear): input type UINT8" in p for p in problems)


def test_axes_from_a_value_ints_constant_count_as_constant():
    nodes = [
        helper.make_node("Constant", [], ["axes"], value_ints=[3]),
        helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean"),
    ]
    assert tensorrt_problems(model_of(nodes), MIN_SIDE) == []


def test_reduce_axes_computed_at_run_time_fail():
    nodes = [
        helper.make_node("Shape", ["x"], ["dims"]),
        helper.make_node("Slice", ["dims", "one", "two", "zero"], ["axes"]),
        helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean"),
    ]
    starts = [const(n, [v], np.int64) for n, v in (("one", 1), ("two", 2), ("zero", 0))]
    assert "mean (ReduceMean): axes is not a constant" in tensorrt_problems(
        model_of(nodes, starts), MIN_SIDE
    )


def test_max_pool_with_its_indices_output_fails():
    node = helper.make_node("MaxPool", ["x"], ["y", "where"], name="pool", kernel_shape=[2, 2])
    assert tensorrt_problems(model_of([node]), MIN_SIDE) == [
        "pool (MaxPool): the Indices output is not supported"
    ]


def test_an_unsupported_operator_inside_a_subgraph_fails():
    inner_out = helper.make_tensor_value_info("z", TensorProto.INT32, None)
    inner = helper.make_graph(
        [helper.make_node("BitShift", ["k", "k"], ["z"], name="inner_shift", direction="LEFT")],
        "branch",
        [],
        [inner_out],
        initializer=[const("k", [1], np.int32)],
    )
    nodes = [
        helper.make_node("Constant", [], ["flag"], value=const("f", True, np.bool_)),
        helper.make_node(
            "If", ["flag"], ["y"], name="choose", then_branch=inner, else_branch=inner
        ),
    ]
    model = model_of(nodes, y_type=TensorProto.INT32)
    assert "inner_shift (BitShift): not in onnx-tensorrt's operator support matrix" in (
        tensorrt_problems(model, MIN_SIDE)
    )
