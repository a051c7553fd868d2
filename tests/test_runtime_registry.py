"""The backend registry: which backend opens which file, with which options, and the template
every backend's ``run`` goes through."""

from __future__ import annotations

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

    def _run(self, batch, apertures):
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

    def _run(self, batch, apertures):
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
