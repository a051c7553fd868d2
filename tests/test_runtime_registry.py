"""The backend registry: which backend opens which file, with which options, and the template
every backend's ``run`` goes through."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dbsi.runtime import registry
from dbsi.runtime.backend import Backend, describe_shape_problem
from dbsi.runtime.contract import GraphMetadata
from dbsi.runtime.errors import BackendError
from dbsi.runtime.registry import BackendEntry, backend_for, open_backend


class EchoBackend(Backend):
    """A backend that returns its input: what one new file plus one registry line gives."""

    name = "echo"
    outputs = ["bokeh"]

    def __init__(self, path: Path, shout: bool = False) -> None:
        self.path, self.shout, self.calls = path, shout, 0
        self.metadata = GraphMetadata(
            config={"kernel_sizes": [5]},
            min_input_side=8,
            max_input_side=64,
            outputs=["bokeh"],
            precision="fp32",
            checkpoint_sha256="0" * 64,
            toolkit_version="test",
        )

    @property
    def device(self) -> str:
        return "CPU"

    def accepts(self, shape):
        return describe_shape_problem(shape, (1, 8, 8), (4, 64, 64))

    def _run(self, batch, apertures, temporal):
        self.calls += 1
        return {"bokeh": batch}

    def close(self) -> None:
        pass


@pytest.fixture
def echo_registered(monkeypatch):
    entry = BackendEntry(__name__, "EchoBackend", (".echo",), {"shout": "--shout"})
    monkeypatch.setitem(registry.REGISTRY, "echo", entry)


@pytest.mark.parametrize(
    ("name", "backend"),
    [("m.onnx", "onnxruntime"), ("m.engine", "tensorrt"), ("m.PLAN", "tensorrt")],
)
def test_a_model_file_opens_with_the_backend_its_suffix_names(name, backend):
    assert backend_for(Path(name)) == backend


def test_a_checkpoint_is_not_a_model_the_runtime_opens(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"torch")
    with pytest.raises(BackendError, match="PyTorch checkpoint") as refused:
        open_backend(checkpoint)
    assert f"bokeh-export onnx {checkpoint} -o {tmp_path / 'best.onnx'}" in str(refused.value)
    assert "--backend" not in str(refused.value)


def test_a_checkpoint_is_refused_whichever_backend_is_named(tmp_path):
    checkpoint = tmp_path / "last.pth"
    checkpoint.write_bytes(b"torch")
    with pytest.raises(BackendError, match="PyTorch checkpoint.*bokeh-export onnx"):
        open_backend(checkpoint, "onnxruntime")


def test_an_unknown_suffix_lists_each_model_suffix_once_and_the_backends(tmp_path):
    with pytest.raises(BackendError) as refused:
        backend_for(tmp_path / "model.bin")
    message = str(refused.value)
    assert "expected .onnx, .engine, .plan, .trt)" in message
    assert "--backend onnxruntime|tensorrt|openvino" in message


def test_an_option_of_another_backend_is_refused_naming_its_flag(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    with pytest.raises(BackendError, match="--provider does not apply to the tensorrt backend"):
        open_backend(engine, provider="cpu")


def test_a_registered_backend_opens_its_files_with_its_options(echo_registered, tmp_path):
    model = tmp_path / "m.echo"
    model.write_bytes(b"")
    backend = open_backend(model, shout=True)
    assert isinstance(backend, EchoBackend) and backend.shout


def test_run_checks_the_batch_before_the_backend_sees_it(echo_registered, tmp_path):
    model = tmp_path / "m.echo"
    model.write_bytes(b"")
    backend = open_backend(model)
    batch = np.zeros((2, 16, 16, 3), np.uint8)
    assert backend.run(batch)["bokeh"] is batch
    with pytest.raises(ValueError, match="uint8"):
        backend.run(batch.astype(np.float32))
    with pytest.raises(ValueError, match="height 100 is outside"):
        backend.run(np.zeros((1, 100, 16, 3), np.uint8))
    assert backend.calls == 1


class ApertureEchoBackend(EchoBackend):
    """Records the apertures the template hands to ``_run``."""

    def _run(self, batch, apertures, temporal):
        self.calls += 1
        self.apertures = apertures
        return {"bokeh": batch}


def test_one_aperture_is_given_to_every_picture_of_the_batch(tmp_path):
    backend = ApertureEchoBackend(tmp_path / "m.echo")
    backend.run(np.zeros((3, 8, 8, 3), np.uint8), 0.5)
    assert backend.apertures.dtype == np.float32 and backend.apertures.tolist() == [0.5] * 3
    backend.run(np.zeros((2, 8, 8, 3), np.uint8))
    assert backend.apertures.tolist() == [1.0, 1.0]  # none given: the model as trained


@pytest.mark.parametrize(
    ("aperture", "message"),
    [
        ([0.5, 2.0], r"one aperture for the batch or one per picture \(3\), got 2"),
        (np.ones((3, 1)), r"one per picture \(3\), got 3"),
        (float("nan"), "apertures must be finite"),
        ([1.0, float("inf"), 1.0], "apertures must be finite"),
    ],
)
def test_apertures_that_do_not_fit_the_batch_are_refused_before_running(
    tmp_path, aperture, message
):
    backend = ApertureEchoBackend(tmp_path / "m.echo")
    with pytest.raises(ValueError, match=message):
        backend.run(np.zeros((3, 8, 8, 3), np.uint8), aperture)
    assert backend.calls == 0


# --backend auto: the machine decides (the GPU probe and OpenVINO's presence are faked at their
# boundary: registry.nvidia_gpu and the import system), options that one backend takes steer.
TINY_ONNX = Path(__file__).parent / "data" / "pre_aperture" / "model.onnx"


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(registry, "nvidia_gpu", lambda: None)


@pytest.fixture
def nvidia(monkeypatch):
    monkeypatch.setattr(registry, "nvidia_gpu", lambda: "NVIDIA H200")


@pytest.fixture
def openvino_importable(monkeypatch):
    """OpenVINO present whether or not this environment has it (only its spec is looked up)."""
    real_find_spec = registry.importlib.util.find_spec

    def find_spec(name, *args):
        if name == "openvino":
            return object()
        return real_find_spec(name, *args)

    monkeypatch.setattr(registry.importlib.util, "find_spec", find_spec)


@pytest.fixture
def openvino_missing(monkeypatch):
    """``import openvino`` fails, as without the cpu extra (None in sys.modules: ImportError)."""
    monkeypatch.setitem(sys.modules, "openvino", None)


def test_auto_picks_openvino_for_an_onnx_without_an_nvidia_gpu(no_gpu, openvino_importable):
    name, why = registry.choose_backend(Path("m.onnx"))
    assert name == "openvino"
    assert why == "auto: no NVIDIA GPU, OpenVINO installed; --backend onnxruntime to override"


def test_auto_picks_onnxruntime_without_a_gpu_when_openvino_is_missing(no_gpu, openvino_missing):
    name, why = registry.choose_backend(Path("m.onnx"))
    assert name == "onnxruntime"
    assert why == "auto: no NVIDIA GPU, OpenVINO not installed; --backend openvino to override"


def test_auto_picks_onnxruntime_on_an_nvidia_machine_even_with_openvino(
    nvidia, openvino_importable
):
    name, why = registry.choose_backend(Path("m.onnx"))
    assert name == "onnxruntime"
    assert why.startswith("auto: NVIDIA GPU NVIDIA H200, providers tensorrt > cuda > cpu;")


def test_a_provider_steers_auto_to_onnxruntime(no_gpu, openvino_importable):
    name, why = registry.choose_backend(Path("m.onnx"), {"provider": "cpu"})
    assert name == "onnxruntime" and why == "auto: --provider is its option"


def test_an_openvino_precision_steers_auto_to_openvino_on_an_nvidia_machine(
    nvidia, openvino_importable
):
    options = {"provider": None, "openvino_precision": "bf16", "allow_host_code": False}
    assert registry.choose_backend(Path("m.onnx"), options)[0] == "openvino"


def test_an_engine_opens_on_tensorrt_whatever_the_machine(no_gpu, openvino_importable):
    assert registry.choose_backend(Path("m.engine")) == ("tensorrt", "auto: .engine file")


def test_open_backend_auto_opens_what_choose_backend_picks(no_gpu, openvino_missing):
    with open_backend(TINY_ONNX) as backend:
        assert backend.name == "onnxruntime-cpu"


def test_the_gpu_probe_says_none_without_cuda_python(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", None)
    assert registry.nvidia_gpu() is None


def bokeh_run(tmp_path: Path, *args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from dbsi.runtime.cli import main

    picture = tmp_path / "a.png"
    if not picture.exists():
        cv2 = pytest.importorskip("cv2")
        cv2.imwrite(str(picture), np.full((48, 64, 3), 128, np.uint8))
    result = CliRunner().invoke(
        main, [str(TINY_ONNX), str(picture), "--out", str(tmp_path / "out"), *args]
    )
    return result.exit_code, result.output


def header(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("bokeh-run: 1 picture"))


def test_the_run_header_names_openvino_chosen_by_auto_and_why(tmp_path, no_gpu):
    pytest.importorskip("openvino", reason="openvino is not installed (extra 'cpu')")
    code, output = bokeh_run(tmp_path, "--no-progress", "--workers", "1")
    assert code == 0, output
    assert header(output) == (
        "bokeh-run: 1 picture(s) on openvino (CPU, fp32), batch 1, 1 worker(s); backend "
        "openvino (auto: no NVIDIA GPU, OpenVINO installed; --backend onnxruntime to override)"
    )


def test_the_run_header_names_a_backend_given_with_backend(tmp_path, no_gpu):
    code, output = bokeh_run(
        tmp_path, "--no-progress", "--workers", "1", "--backend", "onnxruntime"
    )
    assert code == 0, output
    assert header(output) == (
        "bokeh-run: 1 picture(s) on onnxruntime-cpu (CPU, fp32), batch 1, 1 worker(s); backend "
        "onnxruntime (--backend onnxruntime)"
    )


def test_auto_sends_an_int8_cpu_graph_to_openvino_on_an_nvidia_machine(nvidia, tmp_path):
    """Its uint8 layers run on CPU kernels whatever the providers, and OpenVINO's are faster."""
    pytest.importorskip("openvino")
    from dbsi.export.metadata import load_onnx, model_metadata, set_metadata

    model = load_onnx(TINY_ONNX)
    set_metadata(model, model_metadata(model, "tiny").replace(precision="int8-cpu"))
    path = tmp_path / "int8.onnx"
    path.write_bytes(model.SerializeToString())
    name, why = registry.choose_backend(path)
    assert name == "openvino"
    assert why == (
        "auto: NVIDIA GPU NVIDIA H200, but an int8-cpu graph runs on CPU kernels, OpenVINO "
        "installed; --backend onnxruntime to override"
    )
    assert registry.choose_backend(TINY_ONNX)[0] == "onnxruntime"
