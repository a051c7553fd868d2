"""The native TensorRT backend on a real GPU: an engine built from the tiny ONNX renders what
ONNX Runtime renders, and engines from another GPU or TensorRT version are refused.

Skips with the reason where a GPU ("no CUDA device"), TensorRT or cuda-python is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dbsi.export.engine import build_engine
from dbsi.runtime.errors import BackendError
from dbsi.runtime.registry import open_backend
from tests.needs import needs_tensorrt
from tests.test_runtime_cli import TinyModel, generated, run_cli, write
from tests.test_runtime_cli import tiny_model as tiny_model  # noqa: F401

PROFILE = {"min": [1, 38, 38, 3], "opt": [2, 96, 128, 3], "max": [4, 512, 512, 3]}


@pytest.fixture(scope="module")
def engine(tiny_model: TinyModel, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("engine") / "tiny.engine"
    build_engine(tiny_model.path, path, profile=PROFILE, workspace_bytes=2 << 30, timing_cache=None)
    return path


@needs_tensorrt
def test_engine_renders_what_onnxruntime_renders(tiny_model, engine):
    batch = np.stack([generated(96, 128, 1), generated(96, 128, 2)])
    with open_backend(engine) as native, open_backend(tiny_model.path, provider="cpu") as cpu:
        assert native.name == "tensorrt" and native.outputs == cpu.outputs
        got, want = native.run(batch), cpu.run(batch)
    diff = np.abs(got["bokeh"].astype(int) - want["bokeh"])
    assert diff.max() <= 2 and np.mean(diff.max(axis=-1) > 1) <= 0.001
    np.testing.assert_allclose(got["weights"], want["weights"], atol=1e-3)


@needs_tensorrt
def test_engine_renders_each_pictures_aperture_as_onnxruntime_does(tiny_model, engine):
    batch = np.stack([generated(96, 128, 5), generated(96, 128, 6)])
    apertures = np.array([0.5, 2.0], np.float32)
    with open_backend(engine) as native, open_backend(tiny_model.path, provider="cpu") as cpu:
        got, want = native.run(batch, apertures), cpu.run(batch, apertures)
        as_trained = cpu.run(batch)
    assert not np.array_equal(want["bokeh"], as_trained["bokeh"])  # the apertures do something
    diff = np.abs(got["bokeh"].astype(int) - want["bokeh"])
    assert diff.max() <= 2 and np.mean(diff.max(axis=-1) > 1) <= 0.001


@needs_tensorrt
def test_engine_profile_limits_are_reported_per_picture(engine, tmp_path):
    write(tmp_path / "in" / "ok.png", generated(96, 128, 3))
    write(tmp_path / "in" / "big.png", generated(600, 128, 4))
    code, output = run_cli(engine, tmp_path / "in", "--out", tmp_path / "out")
    assert code == 1 and "height 600 is outside the accepted 38..512" in output
    assert (tmp_path / "out" / "ok.png").is_file()


@needs_tensorrt
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpu_name": "Some Other GPU"}, "built for Some Other GPU"),
        ({"tensorrt_version": "9.0.0"}, "built with TensorRT 9.0.0"),
    ],
)
def test_engine_for_another_gpu_or_tensorrt_is_refused(
    tiny_model, engine, tmp_path, change, message
):
    sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
    copy = tmp_path / "other.engine"
    copy.write_bytes(engine.read_bytes())
    copy.with_name(copy.name + ".json").write_text(json.dumps({**sidecar, **change}))
    with pytest.raises(BackendError, match=message):
        open_backend(copy)
