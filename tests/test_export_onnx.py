"""bokeh-export onnx / check / info on real exports: a tiny model and a full-width one (network
size 128 to keep CPU time down), fp32 and fp16, each exported once per session."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

from dbsi.export.checks import (
    check_photos,
    onnx_session,
    photo_cases,
    return_freed_memory,
    run_checks,
)
from dbsi.export.cli import main
from dbsi.export.fp16 import convert_to_fp16
from dbsi.export.metadata import read_metadata
from dbsi.export.parity import PARITY_THRESHOLDS
from dbsi.export.tensorrt_rules import tensorrt_problems
from dbsi.runtime.contract import TemporalFeed, graph_inputs
from dbsi.runtime.provenance import file_sha256, toolkit_version
from dbsi.train.checkpoint import load_renderer, read_checkpoint
from dbsi.train.config import BokehConfig
from tests.export_helpers import make_checkpoint, tiny_graph_metadata
from tests.needs import skip_without_fp16_converter

pytestmark = pytest.mark.slow


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def tiny_checkpoint(export_dir):
    return make_checkpoint(export_dir / "tiny.pt", width=0.125)


@pytest.fixture(scope="session")
def full_checkpoint(export_dir):
    return make_checkpoint(export_dir / "full.pt", width=1.0, megadepth_backbone=True)


@pytest.fixture(scope="session")
def tiny_fp32(export_dir, tiny_checkpoint):
    path = export_dir / "tiny.onnx"
    return invoke("onnx", tiny_checkpoint, "-o", path, "--with-weights"), path


@pytest.fixture(scope="session")
def tiny_fp16(export_dir, tiny_checkpoint):
    skip_without_fp16_converter()
    path = export_dir / "tiny-fp16.onnx"
    return invoke("onnx", tiny_checkpoint, "-o", path, "--fp16", "--with-weights"), path


@pytest.fixture(scope="session")
def full_fp32(export_dir, full_checkpoint):
    path = export_dir / "full.onnx"
    return invoke("onnx", full_checkpoint, "-o", path), path


@pytest.fixture(scope="session")
def full_fp16_report(export_dir, full_checkpoint, full_fp32):
    skip_without_fp16_converter()
    path = export_dir / "full-fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(full_fp32[1]))), str(path))
    return run_checks(path, load_renderer(full_checkpoint)), path


def assert_exported(result, path):
    assert result.exit_code == 0, result.output
    assert path.is_file()
    assert "checks passed" in result.output
    assert "FAIL" not in result.output


def test_tiny_fp32_export_passes_every_check(tiny_fp32):
    result, path = tiny_fp32
    assert_exported(result, path)
    assert result.output.count("fp32 parity") == len(
        photo_cases(check_photos(), tiny_graph_metadata())
    )


def test_full_width_fp32_export_passes_every_check(full_fp32):
    result, path = full_fp32
    assert_exported(result, path)
    assert path.stat().st_size > 15e6  # the full MegaDepth trunk, about 21 MB of fp32 weights


def test_tiny_fp16_export_passes_its_psnr_check(tiny_fp16):
    result, path = tiny_fp16
    assert_exported(result, path)
    assert result.output.count("fp16 parity") == len(
        photo_cases(check_photos(), tiny_graph_metadata())
    )


def test_full_width_fp16_reaches_40_db_on_every_photo(full_fp16_report):
    report, _ = full_fp16_report
    assert report.passed
    assert len(report.parity) == len(photo_cases(check_photos(), tiny_graph_metadata()))
    for row in report.parity:
        assert row["psnr_db"] >= PARITY_THRESHOLDS["fp16"]["min_psnr_db"], row


def test_checks_cover_a_portrait_an_odd_size_and_a_batch(tiny_fp32):
    shapes = [tuple(batch.shape) for batch in check_photos().values()]
    assert any(h > w for _, h, w, _ in shapes)
    assert (1, 333, 517, 3) in shapes
    assert any(n > 1 for n, _, _, _ in shapes)
    assert len({(h, w) for _, h, w, _ in shapes}) >= 3


def test_metadata_carries_the_config_checkpoint_hash_and_versions(tiny_fp32, tiny_checkpoint):
    metadata = read_metadata(tiny_fp32[1])
    assert metadata.config == read_checkpoint(tiny_checkpoint)["config"]
    assert metadata.checkpoint_sha256 == file_sha256(tiny_checkpoint)
    assert metadata.toolkit_version == toolkit_version()
    assert metadata.precision == "fp32"
    assert metadata.outputs == ("bokeh", "weights", "temporal_maps")
    assert metadata.min_input_side == 38


def test_graph_takes_any_batch_and_size_and_returns_weights_that_sum_to_one(tiny_fp32):
    session = onnx_session(tiny_fp32[1])
    batch = np.random.default_rng(0).integers(0, 256, (3, 38, 71, 3), dtype=np.uint8)
    metadata = read_metadata(tiny_fp32[1])
    feed = graph_inputs(metadata.inputs, batch, None, TemporalFeed.independent(3, 4))
    bokeh, weights, maps = session.run(None, feed)
    assert bokeh.dtype == np.uint8 and bokeh.shape == batch.shape
    assert weights.dtype == np.float32 and weights.shape == (3, 4, 38, 71)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    # The maps each picture used, at the network size
    assert maps.shape == (3, 4, *BokehConfig.from_dict(metadata.config).network_size(38, 71))
    np.testing.assert_allclose(maps.sum(axis=1), 1.0, atol=1e-5)


def test_fp16_graph_keeps_io_types_and_softmax_and_blurs_in_fp32(tiny_fp16):
    model = onnx.load(str(tiny_fp16[1]))
    assert read_metadata(tiny_fp16[1]).precision == "fp16"
    io = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io == {
        "image": TensorProto.UINT8,
        "aperture": TensorProto.FLOAT,
        "temporal_state": TensorProto.FLOAT,
        "temporal_mix": TensorProto.FLOAT,
        "bokeh": TensorProto.UINT8,
        "weights": TensorProto.FLOAT,
        "temporal_maps": TensorProto.FLOAT,
    }
    types = {t.name: t.data_type for t in model.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info})
    types.update({v.name: v.type.tensor_type.elem_type for v in model.graph.input})
    pads = {n.output[0] for n in model.graph.node if n.op_type == "Pad"}
    blur_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[0] in pads]
    assert len(blur_convs) == 6  # three kernels, two separable passes each
    # The temporal mix too: a photo's ones and zeros pass the maps on unchanged.
    mixes = [n for n in model.graph.node if n.op_type in ("Softmax", "MatMul")]
    assert len(mixes) == 2
    for node in blur_convs + mixes:
        assert {types[name] for name in node.input if name} == {TensorProto.FLOAT}, node.name
    assert sum(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer) > 100


def test_fp16_file_is_about_half_the_fp32_one(full_fp32, full_fp16_report):
    ratio = full_fp16_report[1].stat().st_size / full_fp32[1].stat().st_size
    assert 0.45 < ratio < 0.6


def test_a_perturbed_weight_in_the_onnx_fails_the_check_with_exit_1(
    tiny_fp32, tiny_checkpoint, export_dir
):
    broken = export_dir / "broken.onnx"
    model = onnx.load(str(tiny_fp32[1]))
    for tensor in model.graph.initializer:
        if tensor.name.endswith("predictor.4.bias"):  # the head: logit of the sharp map
            bias = numpy_helper.to_array(tensor).copy()
            bias[0] += 0.1
            tensor.CopyFrom(numpy_helper.from_array(bias, tensor.name))
    onnx.save(model, str(broken))
    result = invoke("check", broken, "--checkpoint", tiny_checkpoint)
    assert result.exit_code == 1
    assert "FAIL fp32 parity" in result.output
    assert "levels" in result.output.split("FAIL fp32 parity")[1]  # pixels, not only the maps
    assert broken.is_file()  # check reports; it deletes nothing


def test_check_command_passes_on_the_export(tiny_fp32, tiny_checkpoint):
    result = invoke("check", tiny_fp32[1], "--checkpoint", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "checks passed" in result.output


def test_a_render_mode_chosen_at_export_is_in_the_graph_and_checks_pass(
    export_dir, tiny_checkpoint
):
    stored = read_checkpoint(tiny_checkpoint)["config"]["mode"]
    chosen = "fullres" if stored == "paper" else "paper"
    path = export_dir / f"tiny-{chosen}.onnx"
    assert_exported(invoke("onnx", tiny_checkpoint, "-o", path, "--mode", chosen), path)
    assert read_metadata(path).config["mode"] == chosen
    result = invoke("check", path, "--checkpoint", tiny_checkpoint)
    assert result.exit_code == 0, result.output


def test_every_export_variant_keeps_the_tensorrt_parser_rules(
    export_dir, tiny_checkpoint, tiny_fp32, tiny_fp16, full_fp32, full_fp16_report
):
    fullres = export_dir / "tiny-fullres-rules.onnx"
    assert_exported(invoke("onnx", tiny_checkpoint, "-o", fullres, "--mode", "fullres"), fullres)
    variants = [tiny_fp32[1], tiny_fp16[1], full_fp32[1], full_fp16_report[1], fullres]
    for path in variants:
        model = onnx.load(str(path))
        min_side = read_metadata(path).min_input_side
        assert tensorrt_problems(model, min_side) == [], path.name
        # Cast first and last: the uint8 input feeds one Cast, the uint8 output comes from one.
        readers = [n.op_type for n in model.graph.node if "image" in n.input]
        makers = [n.op_type for n in model.graph.node if "bokeh" in n.output]
        assert (readers, makers) == (["Cast"], ["Cast"]), path.name


def test_skip_checks_still_runs_the_static_checks_but_not_the_photos(export_dir, tiny_checkpoint):
    path = export_dir / "tiny-skipped.onnx"
    result = invoke("onnx", tiny_checkpoint, "-o", path, "--skip-checks")
    assert result.exit_code == 0, result.output
    assert "ok   TensorRT parser rules" in result.output
    assert "parity" not in result.output and "not run on photos" in result.output


def test_an_unknown_render_mode_is_refused_with_exit_2(export_dir, tiny_checkpoint):
    result = invoke("onnx", tiny_checkpoint, "-o", export_dir / "x.onnx", "--mode", "cinema")
    assert result.exit_code == 2
    assert "mode: 'cinema' is not one of" in result.output
    assert not (export_dir / "x.onnx").exists()


def test_check_without_checkpoint_runs_the_graph_without_judging_pixels(tiny_fp32):
    result = invoke("check", tiny_fp32[1])
    assert result.exit_code == 0, result.output
    assert "parity not judged" in result.output


def test_check_refuses_a_checkpoint_the_onnx_was_not_exported_from(tiny_fp32, export_dir):
    other = make_checkpoint(export_dir / "other.pt", width=0.125, seed=1)
    result = invoke("check", tiny_fp32[1], "--checkpoint", other)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "another checkpoint" in result.stderr


def test_info_prints_the_onnx_metadata(tiny_fp32):
    text = invoke("info", tiny_fp32[1])
    assert text.exit_code == 0
    assert "dbsi.color_order" in text.output and "BGR" in text.output
    as_json = invoke("info", tiny_fp32[1], "--json")
    assert json.loads(as_json.output) == read_metadata(tiny_fp32[1]).to_props()


def test_failed_checks_write_nothing_and_keep_the_existing_file(
    tiny_checkpoint, export_dir, monkeypatch
):
    # Thresholds nothing can meet (a negative error) make the real checks fail.
    monkeypatch.setitem(
        PARITY_THRESHOLDS, "fp32", {**PARITY_THRESHOLDS["fp32"], "max_abs_error": -1}
    )
    output = export_dir / "kept.onnx"
    output.write_bytes(b"an earlier export")
    result = invoke("onnx", tiny_checkpoint, "-o", output)
    assert result.exit_code == 1
    assert "not written" in result.stderr
    assert output.read_bytes() == b"an earlier export"
    assert not [p for p in export_dir.iterdir() if ".partial" in p.name]


def test_export_checks_and_benchmarks_use_the_same_bgr_photos():
    from skimage import data

    from dbsi.benchmarks.images import real_photos

    photos, real = real_photos()
    assert real and np.array_equal(photos["coffee"], data.coffee()[..., ::-1])
    portrait = check_photos()["coffee portrait 600x400"][0]
    assert np.array_equal(portrait, photos["coffee"].transpose(1, 0, 2))


def test_returning_freed_memory_gives_freed_heap_pages_back_to_the_system():
    import ctypes

    if getattr(ctypes.CDLL(None), "malloc_trim", None) is None:
        pytest.skip("this C library has no malloc_trim (not glibc)")

    def resident_mib() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    # 300 MB in blocks below glibc's mmap threshold, the last kept: the freed ones lie below
    # it in the heap, where free() alone never returns them.
    blocks = [np.ones(100_000 // 8) for _ in range(3000)]
    kept = blocks[-1]
    del blocks
    before = resident_mib()
    return_freed_memory()
    assert resident_mib() < before - 200
    assert kept.sum() == kept.size
