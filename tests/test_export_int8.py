"""bokeh-export onnx --int8 {cpu,tensorrt}: calibration on the user's photos, the two
flavours' quantization formats, the 40 dB check against the fp32 render, and the errors."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

from dbsi.export import calibration as calibration_module
from dbsi.export.calibration import (
    TensorStatistics,
    activation_ranges,
    read_calibration_set,
    strided_sample,
    tensors_to_calibrate,
)
from dbsi.export.calibration_graph import reduction_graph, reduction_order
from dbsi.export.checks import check_photos, photo_cases
from dbsi.export.cli import main
from dbsi.export.int8 import (
    FLAVOURS,
    convolutions_to_quantize,
    nodes_to_quantize,
    predictor_convolutions,
)
from dbsi.export.metadata import model_metadata, read_metadata
from dbsi.export.parity import parity_failures, parity_stats
from dbsi.export.tensorrt_rules import tensor_types, tensorrt_problems
from dbsi.runtime.contract import TemporalFeed, graph_inputs
from dbsi.runtime.errors import BackendError
from dbsi.runtime.registry import open_backend
from dbsi.train.config import BokehConfig
from tests.conftest import real_photo
from tests.export_helpers import make_checkpoint, tiny_graph_metadata

pytestmark = pytest.mark.slow

# Real photos that the export checks do not use (those are astronaut, coffee, chelsea and the
# left motorcycle view): a calibration set unlike the checks' own pictures.
CALIBRATION_PHOTOS = ("rocket", "hubble_deep_field", "camera", "brick", "grass", "coins")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def colour(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, ::-1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("int8")


@pytest.fixture(scope="module")
def calibration(folder):
    photos = folder / "calibration"
    (photos / "nested").mkdir(parents=True)
    for i, name in enumerate(CALIBRATION_PHOTOS):
        where = photos / "nested" if i % 2 else photos
        cv2.imwrite(str(where / f"{name}.{'png' if i % 3 else 'jpg'}"), colour(name))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (photos / "notes.txt").write_text("not a picture")
    return photos


@pytest.fixture(scope="module")
def checkpoint(folder):
    return make_checkpoint(folder / "tiny.pt", width=0.125)


@pytest.fixture(scope="module")
def exports(folder, checkpoint, calibration):
    results = {}
    for flavour in ("cpu", "tensorrt"):
        path = folder / f"tiny-int8-{flavour}.onnx"
        result = invoke(
            "onnx", checkpoint, "-o", path, "--with-weights", "--int8", flavour,
            "--calibration", calibration,
        )  # fmt: skip
        results[flavour] = result, path
    return results


def zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [
        values[node.input[2]]
        for node in model.graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2
    ]


# The export check's photo batches: every graph takes the aperture and temporal inputs.
CASES = photo_cases(check_photos(), tiny_graph_metadata())


@pytest.mark.parametrize("flavour", ["cpu", "tensorrt"])
def test_each_flavour_exports_and_passes_the_40_db_check(exports, flavour):
    result, path = exports[flavour]
    assert result.exit_code == 0, result.output
    assert result.output.count(f"int8-{flavour} parity") == len(CASES)
    assert "FAIL" not in result.output
    assert path.is_file()


@pytest.mark.parametrize("flavour", ["cpu", "tensorrt"])
def test_metadata_records_the_precision_and_the_calibration(exports, calibration, flavour):
    metadata = read_metadata(exports[flavour][1])
    photos = read_calibration_set(calibration, 32)
    assert metadata.precision == f"int8-{flavour}"
    assert metadata.calibration == photos.summary("minmax")
    assert metadata.calibration["images"] == len(CALIBRATION_PHOTOS)
    assert metadata.calibration["skipped"] == 1


def test_an_unreadable_calibration_file_is_skipped_and_counted(exports):
    output = exports["cpu"][0].output
    assert f"calibration: {len(CALIBRATION_PHOTOS)} photos from" in output
    assert "1 skipped" in output and "broken.jpg" in output


def test_the_tensorrt_flavour_is_symmetric_int8_and_keeps_the_parser_rules(exports):
    model = onnx.load(str(exports["tensorrt"][1]))
    points = zero_points(model)
    assert points and all(p.dtype == np.int8 and not p.any() for p in points)
    assert tensorrt_problems(model, read_metadata(exports["tensorrt"][1]).min_input_side) == []
    assert TensorProto.UINT8 not in {
        t for name, t in tensor_types(model).items() if name not in ("image", "bokeh")
    }


def test_the_cpu_flavour_has_uint8_activations_and_is_refused_by_tensorrt(exports, folder):
    model = onnx.load(str(exports["cpu"][1]))
    assert any(p.dtype == np.uint8 for p in zero_points(model))
    assert tensorrt_problems(model, read_metadata(exports["cpu"][1]).min_input_side) != []
    result = invoke("engine", exports["cpu"][1], "-o", folder / "cpu.engine")
    assert result.exit_code == 2
    assert "int8-cpu graph has uint8 activations" in result.output
    assert "--int8 tensorrt" in result.output


@pytest.mark.parametrize(("flavour", "first"), [("cpu", 0), ("tensorrt", 1)])
def test_the_predictors_convolutions_are_quantized_from_the_flavours_first(exports, flavour, first):
    """Every one in ``cpu``; all but the 7x7 on the picture in ``tensorrt``."""
    model = onnx.load(str(exports[flavour][1]))
    dequantized = {
        node.output[0] for node in model.graph.node if node.op_type == "DequantizeLinear"
    }
    convolutions = [node for node in model.graph.node if node.op_type == "Conv"]
    weights_quantized = {n.name for n in convolutions if n.input[1] in dequantized}
    inputs_quantized = {n.name for n in convolutions if n.input[0] in dequantized}
    predictor = predictor_convolutions(model)
    # Q/DQ on both the activations and the weights: what TensorRT's explicit quantization fuses.
    assert weights_quantized == inputs_quantized == set(predictor[first:])
    assert set(convolutions_to_quantize(model, flavour)) == set(predictor[first:])
    blur = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in predictor]
    assert blur and not any(n.input[1] in dequantized for n in blur)
    assert not any(
        n.op_type in ("Softmax", "Resize") and n.input[0] in dequantized for n in model.graph.node
    )


def test_the_cpu_flavour_folds_the_predictors_relus_into_its_quantized_convolutions(
    exports, fp32_graph
):
    graphs = {"fp32": fp32_graph, **{f: onnx.load(str(exports[f][1])) for f in FLAVOURS}}
    relus = {name: sum(n.op_type == "Relu" for n in m.graph.node) for name, m in graphs.items()}
    assert relus["cpu"] == 0 and relus["tensorrt"] == relus["fp32"] > 10


@pytest.mark.parametrize("flavour", ["cpu", "tensorrt"])
def test_an_int8_graph_runs_on_the_runtime_like_any_other(exports, flavour):
    batch = np.ascontiguousarray(real_photo("chelsea")[None, :, :, ::-1])
    with open_backend(exports[flavour][1], provider="cpu") as backend:
        assert backend.precision == f"int8-{flavour}"
        assert backend.run(batch)["bokeh"].shape == batch.shape


def test_int8_without_calibration_is_refused_with_exit_2(folder, checkpoint):
    result = invoke("onnx", checkpoint, "-o", folder / "x.onnx", "--int8", "cpu")
    assert result.exit_code == 2
    assert "--int8 needs --calibration DIR" in result.output
    assert not (folder / "x.onnx").exists()


def test_an_empty_calibration_folder_is_refused_with_exit_2(folder, checkpoint):
    empty = folder / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    result = invoke(
        "onnx", checkpoint, "-o", folder / "x.onnx", "--int8", "cpu", "--calibration", empty
    )
    assert result.exit_code == 2
    assert f"{empty}: no pictures" in result.output


def test_a_folder_of_unreadable_pictures_is_refused_with_exit_2(folder, checkpoint):
    broken = folder / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = invoke(
        "onnx", checkpoint, "-o", folder / "x.onnx", "--int8", "cpu", "--calibration", broken
    )
    assert result.exit_code == 2
    assert "1 pictures, none readable" in result.output


def test_int8_and_fp16_together_is_bad_usage(folder, checkpoint, calibration):
    result = invoke(
        "onnx", checkpoint, "-o", folder / "x.onnx", "--int8", "cpu", "--fp16",
        "--calibration", calibration,
    )  # fmt: skip
    assert result.exit_code == 2 and "choose one" in result.output


def test_int8_with_skip_checks_is_bad_usage(folder, checkpoint, calibration):
    result = invoke(
        "onnx", checkpoint, "-o", folder / "x.onnx", "--int8", "cpu", "--skip-checks",
        "--calibration", calibration,
    )  # fmt: skip
    assert result.exit_code == 2 and "--int8 always runs its checks" in result.output
    assert not (folder / "x.onnx").exists()


def test_an_onnxruntime_too_old_to_quantize_is_refused_in_one_line_before_tracing(
    folder, checkpoint, calibration, monkeypatch
):
    import onnxruntime.quantization

    def quantize_static(model_input, model_output, calibration_data_reader):  # before 1.32
        raise AssertionError("never called")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", quantize_static)
    result = invoke(
        "onnx", checkpoint, "-o", folder / "old.onnx", "--int8", "cpu",
        "--calibration", calibration,
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: int8 export needs onnxruntime 1.32 or newer (ranges are handed to its quantizer "
        "as a calibration cache): pip install -U onnxruntime, on a CPU environment if this one "
        "has onnxruntime-gpu"
    ]


@pytest.mark.parametrize("flavour", ["cpu", "tensorrt"])
def test_a_calibration_of_black_frames_fails_the_40_db_check_and_writes_nothing(
    folder, checkpoint, flavour
):
    black = folder / "black"
    black.mkdir(exist_ok=True)
    for i in range(3):
        cv2.imwrite(str(black / f"{i}.png"), np.zeros((64, 96, 3), np.uint8))
    path = folder / f"black-{flavour}.onnx"
    result = invoke("onnx", checkpoint, "-o", path, "--int8", flavour, "--calibration", black)
    assert result.exit_code == 1
    assert f"FAIL int8-{flavour} parity" in result.output and "< 40 dB" in result.output
    assert not path.exists()


def test_the_cpu_flavour_on_openvino_stays_within_40_db_of_the_fp32_render(exports, checkpoint):
    pytest.importorskip("openvino", reason="openvino is not installed (extra 'cpu')")
    from dbsi.export.checks import check_photos, reference_render
    from dbsi.train.checkpoint import load_renderer

    renderer = load_renderer(checkpoint)
    with open_backend(exports["cpu"][1], "openvino") as backend:
        for name, batch in check_photos().items():
            want = reference_render(renderer, batch)["bokeh"]
            stats = parity_stats(want, backend.run(batch)["bokeh"])
            assert parity_failures(stats, "int8-cpu") == [], (name, stats)


def test_an_int8_cpu_graph_where_tensorrt_is_present_runs_on_the_cpu_kernels(exports, monkeypatch):
    """Fakes only what this machine lacks: ONNX Runtime listing the GPU providers."""
    import onnxruntime

    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: gpu_build)
    path = exports["cpu"][1]
    # ONNX Runtime asked for by name: on a machine without an NVIDIA GPU auto picks OpenVINO.
    with open_backend(path, "onnxruntime") as backend:
        assert backend.name == "onnxruntime-cpu"
    with pytest.raises(BackendError, match="int8-cpu graph runs on ONNX Runtime's CPU kernels"):
        open_backend(path, "onnxruntime", provider="tensorrt")


@pytest.fixture(scope="module")
def fp32_graph(checkpoint) -> onnx.ModelProto:
    from dbsi.export.onnx_graph import checkpoint_onnx
    from dbsi.train.checkpoint import load_renderer

    return checkpoint_onnx(load_renderer(checkpoint), "0" * 64)


def whole_tensor_ranges(model, tensors, photos, method, symmetric):
    """The ranges from every calibrated tensor whole, as graph outputs, reduced in numpy."""
    import onnxruntime

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    infos = {i.name: i for i in onnx.shape_inference.infer_shapes(augmented).graph.value_info}
    augmented.graph.output.extend(infos[name] for name in tensors)
    session = onnxruntime.InferenceSession(
        augmented.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    inputs = [i.name for i in session.get_inputs()]
    config = BokehConfig.from_dict(model_metadata(model, "the fp32 graph").config)
    statistics = {name: TensorStatistics(symmetric, method == "percentile") for name in tensors}
    for batch in photos.network_inputs(config):
        feed = graph_inputs(
            inputs, batch, None, TemporalFeed.independent(len(batch), config.num_maps)
        )
        for name, value in zip(tensors, session.run(tensors, feed)):
            statistics[name].add(float(value.min()), float(value.max()), strided_sample(value))
    return {name: statistics[name].range(method) for name in tensors}


@pytest.mark.parametrize("symmetric", [False, True], ids=["cpu", "tensorrt"])
@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_ranges_reduced_inside_the_graph_equal_those_of_the_whole_tensors(
    fp32_graph, calibration, monkeypatch, method, symmetric
):
    # A small sample so that the tiny model's tensors are strided too (step > 1).
    monkeypatch.setattr(calibration_module, "SAMPLE", 1000)
    photos = read_calibration_set(calibration, 3)
    flavour = "tensorrt" if symmetric else "cpu"
    tensors = tensors_to_calibrate(fp32_graph, nodes_to_quantize(fp32_graph, flavour))
    got = activation_ranges(fp32_graph, tensors, photos, method=method, symmetric=symmetric)
    want = whole_tensor_ranges(fp32_graph, tensors, photos, method, symmetric)
    assert list(got) == tensors
    assert got == want


def test_the_calibration_graph_outputs_only_the_reductions(fp32_graph):
    tensors = tensors_to_calibrate(fp32_graph, convolutions_to_quantize(fp32_graph, "cpu"))
    reduced, outputs = reduction_graph(fp32_graph, tensors, None)
    assert [o.name for o in reduced.graph.output] == [n for pair in outputs for n in pair]
    # The blend after the predictor is not computed: no node of the graph's own outputs.
    produced = {name for node in reduced.graph.node for name in node.output}
    assert not produced.intersection(o.name for o in fp32_graph.graph.output)


def test_each_tensor_is_reduced_before_the_nodes_only_later_tensors_need():
    from onnx import helper

    relus = [helper.make_node("Relu", [f"t{i - 1}" if i else "x"], [f"t{i}"]) for i in range(3)]
    # Reductions last, as ONNX Runtime's optimizer appends the nodes it adds.
    reductions = [
        helper.make_node(op, [f"t{i}"], [f"{op}{i}"], keepdims=0)
        for i in range(3)
        for op in ("ReduceMin", "ReduceMax")
    ]
    outputs = [(f"ReduceMin{i}", f"ReduceMax{i}") for i in range(3)]
    graph = helper.make_graph(
        relus + reductions,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, []) for p in outputs for n in p],
    )
    model = helper.make_model(graph)
    reduction_order(model, outputs)
    assert [node.output[0] for node in model.graph.node] == [
        name for i in range(3) for name in (f"t{i}", f"ReduceMin{i}", f"ReduceMax{i}")
    ]
