"""The OpenVINO backend: the same exported graphs as ONNX Runtime, the same pictures, the same
errors; precision always explicit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dbsi.export.parity import parity_failures, parity_stats
from dbsi.runtime.errors import BackendError
from dbsi.runtime.registry import open_backend
from tests.conftest import real_photo
from tests.test_runtime_cli import generated, read, run_cli, write
from tests.test_runtime_cli import tiny_model as tiny_model  # noqa: F401

pytest.importorskip("openvino", reason="openvino is not installed (extra 'cpu')")


def test_bokeh_run_on_openvino_renders_what_onnxruntime_renders(tiny_model, tmp_path):
    pictures = {
        "chelsea.png": np.ascontiguousarray(real_photo("chelsea")[:, :, ::-1]),
        "portrait.png": generated(150, 97, 1),
        "wide.png": generated(64, 200, 2),
    }
    for name, bgr in pictures.items():
        write(tmp_path / "in" / name, bgr)
    for backend in ("openvino", "onnxruntime"):
        code, output = run_cli(
            tiny_model.path, tmp_path / "in", "--out", tmp_path / backend, "--backend", backend
        )
        assert code == 0, output
    for name in pictures:
        stats = parity_stats(
            read(tmp_path / "onnxruntime" / name), read(tmp_path / "openvino" / name)
        )
        assert parity_failures(stats, "fp32") == [], (name, stats)


def test_openvino_computes_in_f32_unless_bf16_is_asked_for(tiny_model):
    import openvino as ov

    with open_backend(tiny_model.path, "openvino") as backend:
        assert backend.name == "openvino" and backend.precision == "fp32"
        assert backend._compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32


# In a process of its own: on this suite's AMD CPU a bf16-compiled OpenVINO model was seen to
# precede crashes in torch's training code (docs/DESIGN.md section 6); and should the blur's
# bf16 kernel hang (it did on AVX-512 BF16 CPUs before it was kept in f32), the timeout ends it.
BF16_SCRIPT = """
import json, sys
import numpy as np
from dbsi.runtime.openvino_backend import blur_convolutions
from dbsi.runtime.registry import open_backend
with open_backend(sys.argv[1], "openvino", openvino_precision="bf16") as backend:
    np.save(sys.argv[2], backend.run(np.load(sys.argv[3]))["bokeh"])
    blur = set(blur_convolutions(backend._model))
    precisions = {}
    for op in backend._compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "Convolution" in info["layerType"].astype(str):
            names = set(info["originalLayersNames"].astype(str).split(","))
            kind = "blur" if names & blur else "net"
            precisions.setdefault(kind, set()).add(info["runtimePrecision"].astype(str))
    print(json.dumps({
        "precision": backend.precision,
        "hint": str(backend._compiled.get_property("INFERENCE_PRECISION_HINT")),
        "blur_layers": len(blur),
        "convolutions": {kind: sorted(p) for kind, p in precisions.items()},
    }))
"""


def test_openvino_in_bf16_keeps_the_blur_in_f32_and_renders_within_16_bit_parity(
    tiny_model, tmp_path
):
    import json

    batch = np.stack([generated(96, 128, 7), generated(96, 128, 8)])
    np.save(tmp_path / "batch.npy", batch)
    args = [tiny_model.path, tmp_path / "out.npy", tmp_path / "batch.npy"]
    done = subprocess.run(
        [sys.executable, "-c", BF16_SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    found = json.loads(done.stdout.splitlines()[-1])
    kernels = tiny_model.metadata.config["kernel_sizes"]
    assert found["precision"] == "bf16" and "bfloat16" in found["hint"]
    assert found["blur_layers"] == 2 * len(kernels)  # a row and a column pass per kernel
    assert found["convolutions"]["blur"] == ["f32"]
    with open_backend(tiny_model.path, "openvino") as backend:
        reference = backend.run(batch)["bokeh"]
    stats = parity_stats(reference, np.load(tmp_path / "out.npy"))
    assert parity_failures(stats, "fp16") == [], stats


def test_the_openvino_backend_reads_the_graphs_metadata(tiny_model):
    with open_backend(tiny_model.path, "openvino") as backend:
        assert backend.metadata == tiny_model.metadata
        assert backend.outputs == ["bokeh", "weights", "temporal_maps"]
        assert "width 10" in backend.accepts((1, 64, 10, 3))
        batch = np.stack([generated(64, 96, 3), generated(64, 96, 4)])
        out = backend.run(batch)
        np.testing.assert_allclose(out["weights"].sum(axis=1), 1.0, atol=1e-5)


def test_openvino_missing_is_a_clear_error_with_exit_2(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendError, match="openvino is not installed"):
        open_backend(tiny_model.path, "openvino")
    write(tmp_path / "a.png", generated(64, 64, 5))
    code, output = run_cli(
        tiny_model.path, tmp_path / "a.png", "--out", tmp_path / "out", "--backend", "openvino"
    )
    assert code == 2 and "openvino is not installed" in output


def test_a_graph_without_our_metadata_is_refused_by_openvino_too(tiny_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_model.path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(BackendError, match="bare.onnx: not a DBSI model"):
        open_backend(bare, "openvino")


def test_the_openvino_precision_option_is_refused_for_onnxruntime(tiny_model):
    with pytest.raises(BackendError, match="--openvino-precision does not apply to the onnx"):
        open_backend(tiny_model.path, "onnxruntime", openvino_precision="bf16")


def test_a_bf16_hint_is_refused_for_a_graph_that_is_not_fp32(tiny_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_model.path))
    for prop in model.metadata_props:
        if prop.key == "dbsi.precision":
            prop.value = "int8-cpu"
    labelled = tmp_path / "int8.onnx"
    onnx.save(model, str(labelled))
    with pytest.raises(BackendError, match="int8.onnx: OpenVINO precision bf16 applies to fp32"):
        open_backend(labelled, "openvino", openvino_precision="bf16")


def static_image_shapes(backend) -> list[tuple[int, ...]]:
    """The image shapes of the models compiled for their shapes, in the order compiled."""
    return [dict(key)["image"] for key in backend._static]


def test_a_size_met_again_gets_its_own_model_and_renders_the_same(tiny_model):
    from dbsi.runtime.openvino_backend import MAX_STATIC

    sizes = [(64, 64 + 8 * i) for i in range(MAX_STATIC + 2)]
    with open_backend(tiny_model.path, "openvino") as backend:
        first = {size: backend.run(generated(*size, 7)[None])["bokeh"] for size in sizes}
        assert len(backend._static) == 0
        for size in sizes:
            again = backend.run(generated(*size, 7)[None])["bokeh"]
            assert parity_failures(parity_stats(first[size], again), "fp32") == [], size
        assert static_image_shapes(backend) == [(1, *size, 3) for size in sizes[:MAX_STATIC]]


def test_shapes_met_equally_often_never_recompile_in_turns(tiny_model, monkeypatch):
    from dbsi.runtime.openvino_backend import MAX_STATIC

    sizes = [(64, 64 + 8 * i) for i in range(MAX_STATIC + 2)]
    with open_backend(tiny_model.path, "openvino") as backend:
        compiles = []
        real_compile = backend._compile
        monkeypatch.setattr(backend, "_compile", lambda m: compiles.append(1) or real_compile(m))
        for _ in range(4):  # a folder of six sizes, met in turn
            for size in sizes:
                backend.run(generated(*size, 8)[None])
        assert len(compiles) == MAX_STATIC
        # A size met twice as often as the least used kept one takes its slot.
        for _ in range(4):
            backend.run(generated(*sizes[-1], 8)[None])
        assert len(compiles) == MAX_STATIC + 1
        assert (1, *sizes[-1], 3) in static_image_shapes(backend)
        assert len(backend._static) == MAX_STATIC


def test_openvino_renders_each_pictures_aperture_as_onnxruntime_does(tiny_model):
    batch = np.stack([generated(96, 128, 9), generated(96, 128, 10)])
    apertures = np.array([0.5, 2.0], np.float32)
    with open_backend(tiny_model.path, provider="cpu") as cpu:
        want = cpu.run(batch, apertures)["bokeh"]
    with open_backend(tiny_model.path, "openvino") as backend:
        for _ in range(2):  # the dynamic model, then the one compiled for this shape
            got = backend.run(batch, apertures)["bokeh"]
            assert parity_failures(parity_stats(want, got), "fp32") == []
        assert (2, 96, 128, 3) in static_image_shapes(backend)


def test_openvino_refuses_an_aperture_for_a_graph_exported_before_it(tmp_path):
    from tests.test_aperture import FIXTURE

    write(tmp_path / "a.png", generated(64, 64, 11))
    code, output = run_cli(
        FIXTURE / "model.onnx", tmp_path / "a.png", "--out", tmp_path / "out",
        "--backend", "openvino", "--aperture", "2",
    )  # fmt: skip
    assert code == 2 and "exported without the aperture input" in output, output


def test_an_openvino_backend_dropped_on_another_thread_leaves_the_signal_stack_in_place(
    tiny_model,
):
    # A process of its own: without the fix the reproducer dies of SIGSEGV (docs/DESIGN.md
    # section 6), and it changes the main thread's signal state on purpose.
    reproducer = Path(__file__).with_name("openvino_signal_stack.py")
    done = subprocess.run(
        [sys.executable, str(reproducer), str(tiny_model.path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dropped on another thread: mapped" in done.stdout
    assert "handled SIGUSR1" in done.stdout
