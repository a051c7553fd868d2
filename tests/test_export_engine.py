"""bokeh-export engine: profile rules and refusals everywhere; real builds only where TensorRT
and an NVIDIA GPU exist (skipped with the reason elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from dbsi.export.checks import check_photos
from dbsi.export.cli import main
from dbsi.export.engine import EnvironmentProblem, build_engine, require_tensorrt_and_gpu
from dbsi.export.metadata import set_metadata
from dbsi.export.parity import parity_failures, parity_stats
from dbsi.runtime.contract import INPUT_LAYOUTS, GraphMetadata
from dbsi.runtime.profile import DEFAULT_MAX_SHAPE, DEFAULT_OPT_SHAPE, build_profile, parse_shape
from tests.export_helpers import foreign_onnx
from tests.needs import needs_tensorrt, skip_without_fp16_converter


def environment_problem() -> str | None:
    try:
        require_tensorrt_and_gpu()
    except EnvironmentProblem as exc:
        return str(exc)
    return None


MISSING = environment_problem()


def metadata(precision="fp32"):
    return GraphMetadata(
        config={
            "kernel_sizes": [25, 45, 75],
            "net_long_side": 128,
            "mode": "fullres",
            "width": 0.125,
            "config_version": 1,
        },
        min_input_side=38,
        max_input_side=8192,
        outputs=["bokeh"],
        precision=precision,
        checkpoint_sha256="0" * 64,
        toolkit_version="test",
    )


def test_shapes_parse_as_n_h_w_3():
    assert parse_shape("2x1080x1920x3") == (2, 1080, 1920, 3)
    for bad in ("1x1024x1536", "1x1024x1536x4", "axbxcx3", "0x64x64x3"):
        with pytest.raises(ValueError, match="NxHxWx3"):
            parse_shape(bad)


def test_default_profile_starts_at_the_models_minimum_and_covers_hd_batches():
    profile = build_profile(metadata())
    assert profile["min"] == [1, 38, 38, 3]
    assert profile["opt"] == list(DEFAULT_OPT_SHAPE)
    assert profile["max"] == list(DEFAULT_MAX_SHAPE)
    n, h, w, _ = profile["max"]
    assert n >= 4 and min(h, w) >= 1080 and max(h, w) >= 1920


def test_profile_below_the_minimum_side_is_refused():
    with pytest.raises(ValueError, match=r"must lie in \[38, 8192\]"):
        build_profile(metadata(), min_shape=(1, 16, 16, 3))


def test_profile_out_of_order_is_refused():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        build_profile(metadata(), opt_shape=(8, 1024, 1536, 3), max_shape=(4, 2048, 2048, 3))


def test_a_max_shape_alone_brings_the_default_opt_within_it():
    profile = build_profile(metadata(), max_shape=(2, 512, 512, 3))
    assert profile == {"min": [1, 38, 38, 3], "opt": [1, 512, 512, 3], "max": [2, 512, 512, 3]}


def test_a_min_or_opt_shape_alone_raises_the_default_max_to_it():
    profile = build_profile(metadata(), min_shape=(8, 64, 64, 3))
    assert profile["max"] == [8, 2048, 2048, 3]
    assert profile["opt"] == [8, 1024, 1536, 3]
    profile = build_profile(metadata(), opt_shape=(2, 3000, 1000, 3))
    assert profile == {"min": [1, 38, 38, 3], "opt": [2, 3000, 1000, 3], "max": [4, 3000, 2048, 3]}


def test_a_max_shape_below_the_default_min_lowers_it_per_dimension():
    profile = build_profile(metadata(), opt_shape=(1, 40, 64, 3), max_shape=(1, 40, 64, 3))
    assert profile["min"] == [1, 38, 38, 3]
    with pytest.raises(ValueError, match=r"min shape \[1, 30, 30, 3\] \(default"):
        build_profile(metadata(), max_shape=(1, 30, 30, 3))


@pytest.mark.skipif(MISSING is None, reason="this machine can build engines")
def test_engine_without_tensorrt_or_gpu_exits_2_and_writes_nothing(tmp_path):
    model = onnx.load(str(foreign_onnx(tmp_path / "m.onnx")))
    set_metadata(model, metadata())
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = CliRunner().invoke(
        main, ["engine", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.engine")]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot build a TensorRT engine here")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_engine_with_a_malformed_shape_is_a_usage_error(tmp_path):
    path = foreign_onnx(tmp_path / "m.onnx")
    result = CliRunner().invoke(
        main, ["engine", str(path), "-o", str(tmp_path / "m.engine"), "--max-shape", "4x2048"]
    )
    assert result.exit_code == 2
    assert "NxHxWx3" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ---- real builds (TensorRT + GPU) ----

SMALL_PROFILE = {"min": [1, 38, 38, 3], "opt": [1, 512, 512, 3], "max": [2, 600, 600, 3]}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from dbsi.export.fp16 import convert_to_fp16
    from dbsi.export.onnx_graph import output_names, trace_onnx
    from tests.export_helpers import make_renderer

    skip_without_fp16_converter()
    folder = tmp_path_factory.mktemp("engine")
    renderer = make_renderer(0.125)
    model = trace_onnx(renderer)
    config = renderer.config
    set_metadata(
        model,
        GraphMetadata(
            config=config.to_dict(),
            min_input_side=config.min_input_side,
            max_input_side=8192,
            outputs=output_names(False),
            precision="fp32",
            checkpoint_sha256="0" * 64,
            toolkit_version="test",
        ),
    )
    onnx.save(model, str(folder / "tiny.onnx"))
    onnx.save(convert_to_fp16(model), str(folder / "tiny-fp16.onnx"))
    return folder / "tiny.onnx", folder / "tiny-fp16.onnx"


def build(onnx_path, engine_path, cache):
    return build_engine(
        onnx_path, engine_path, profile=SMALL_PROFILE, workspace_bytes=1 << 30, timing_cache=cache
    )


def run_engine(engine_path, batch):
    from dbsi.runtime.registry import open_backend

    with open_backend(engine_path) as backend:
        return backend.run(batch)["bokeh"]


def run_onnx(onnx_path, batch):
    """The reference: the same graph on ONNX Runtime's CPU kernels."""
    from dbsi.runtime.registry import open_backend

    with open_backend(onnx_path, "onnxruntime", provider="cpu") as backend:
        return backend.run(batch)["bokeh"]


@needs_tensorrt
def test_engine_and_sidecar_describe_the_build(tiny_onnx, tmp_path):
    import hashlib

    import tensorrt as trt

    engine = tmp_path / "tiny.engine"
    sidecar = build(tiny_onnx[0], engine, tmp_path / "cache")
    assert json.loads((tmp_path / "tiny.engine.json").read_text()) == sidecar.to_dict()
    assert sidecar.tensorrt_version == trt.__version__
    assert sidecar.precision == "fp32" and sidecar.tf32 is False
    assert sidecar.profile == SMALL_PROFILE
    assert sidecar.engine_sha256 == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert sidecar.onnx_sha256 == hashlib.sha256(tiny_onnx[0].read_bytes()).hexdigest()
    assert sidecar.onnx_metadata.min_input_side == 38
    assert sidecar.gpu_name and "." in sidecar.compute_capability


@needs_tensorrt
def test_timing_cache_is_written_and_reused(tiny_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    assert build(tiny_onnx[0], tmp_path / "a.engine", cache).timing_cache_bytes_loaded == 0
    first = cache.read_bytes()
    assert first
    second = build(tiny_onnx[0], tmp_path / "b.engine", cache)
    assert second.timing_cache_bytes_loaded == len(first)


@needs_tensorrt
def test_fp32_engine_matches_onnx_runtime(tiny_onnx, tmp_path):
    engine = tmp_path / "tiny.engine"
    build(tiny_onnx[0], engine, tmp_path / "cache")
    for name, batch in check_photos().items():
        if max(batch.shape[1:3]) > 600:
            continue
        want = run_onnx(tiny_onnx[0], batch)
        assert parity_failures(parity_stats(want, run_engine(engine, batch)), "fp32") == [], name


@needs_tensorrt
def test_fp16_engine_reaches_40_db(tiny_onnx, tmp_path):
    engine = tmp_path / "tiny-fp16.engine"
    sidecar = build(tiny_onnx[1], engine, tmp_path / "cache")
    assert sidecar.precision == "fp16"
    batch = check_photos()["astronaut 512x512"]
    want = run_onnx(tiny_onnx[0], batch)
    assert parity_failures(parity_stats(want, run_engine(engine, batch)), "fp16") == []


@needs_tensorrt
def test_an_int8_tensorrt_graph_builds_a_strongly_typed_engine_that_renders_like_it(tmp_path):
    graph = Path(__file__).parent / "data" / "int8_tensorrt" / "model.onnx"
    engine = tmp_path / "int8.engine"
    sidecar = build(graph, engine, tmp_path / "cache")
    assert sidecar.precision == "int8-tensorrt"
    batch = check_photos()["astronaut 512x512"]
    want = run_onnx(graph, batch)
    assert parity_failures(parity_stats(want, run_engine(engine, batch)), "int8-tensorrt") == []


@needs_tensorrt
def test_engine_command_builds_with_the_given_profile(tiny_onnx, tmp_path):
    engine = tmp_path / "cli.engine"
    result = CliRunner().invoke(
        main,
        [
            "engine",
            str(tiny_onnx[0]),
            "-o",
            str(engine),
            "--min-shape",
            "1x38x38x3",
            "--opt-shape",
            "1x256x256x3",
            "--max-shape",
            "2x512x512x3",
            "--workspace",
            "1",
            "--timing-cache",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "cli.engine.json").read_text())
    assert sidecar["profile"]["max"] == [2, 512, 512, 3]
    assert (tmp_path / "cache").is_file()


@needs_tensorrt
def test_a_damaged_timing_cache_is_replaced_by_a_fresh_one(tiny_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"not a timing cache of this GPU")
    sidecar = build(tiny_onnx[0], tmp_path / "a.engine", cache)
    assert sidecar.timing_cache_bytes_loaded == 0
    assert cache.read_bytes() not in (b"", b"not a timing cache of this GPU")


def test_the_other_inputs_get_the_image_profiles_batch_sizes_and_the_network_sizes():
    from dbsi.runtime.profile import input_shapes

    profile = {"min": [1, 38, 38, 3], "opt": [2, 96, 128, 3], "max": [4, 512, 512, 3]}
    graph = metadata().replace(inputs=INPUT_LAYOUTS[-1])
    # 3 blurs: 4 maps; the state runs from a photo's 1 x 1 to the network's long side (128).
    assert input_shapes(profile, graph) == {
        "min": {
            "image": [1, 38, 38, 3],
            "aperture": [1],
            "temporal_state": [1, 4, 1, 1],
            "temporal_mix": [1, 2],
        },
        "opt": {
            "image": [2, 96, 128, 3],
            "aperture": [2],
            "temporal_state": [1, 4, 128, 128],
            "temporal_mix": [2, 3],
        },
        "max": {
            "image": [4, 512, 512, 3],
            "aperture": [4],
            "temporal_state": [1, 4, 128, 128],
            "temporal_mix": [4, 5],
        },
    }


def test_graphs_from_before_the_temporal_inputs_get_profiles_for_their_own_inputs():
    from dbsi.runtime.profile import input_shapes

    profile = {"min": [1, 38, 38, 3], "opt": [2, 96, 128, 3], "max": [4, 512, 512, 3]}
    older = input_shapes(profile, metadata().replace(inputs=INPUT_LAYOUTS[1]))
    assert older["max"] == {"image": [4, 512, 512, 3], "aperture": [4]}
    oldest = input_shapes(profile, metadata().replace(inputs=INPUT_LAYOUTS[0]))
    assert oldest["max"] == {"image": [4, 512, 512, 3]}
