"""``bokeh-run`` end to end on ONNX Runtime CPU with a tiny exported model: parity with the
PyTorch render, every kind of bad input, interruption and resume, shards, a torch-free process,
and the refusals of the TensorRT path that a machine without a GPU can check."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dbsi.runtime.backend import describe_shape_problem
from dbsi.runtime.cli import main
from dbsi.runtime.onnxruntime_backend import OnnxRuntimeBackend
from dbsi.runtime.registry import open_backend
from dbsi.runtime.weight_maps import colour_weights
from tests.conftest import real_photo

torch = pytest.importorskip("torch", reason="the reference render and the export need torch")

from dbsi.export.metadata import set_metadata  # noqa: E402
from dbsi.export.onnx_graph import (  # noqa: E402
    PixelsToBokeh,
    output_names,
    trace_onnx,
    write_onnx,
)
from dbsi.export.parity import parity_failures, parity_stats  # noqa: E402
from dbsi.runtime.contract import GraphMetadata  # noqa: E402
from dbsi.train.config import BokehConfig  # noqa: E402
from dbsi.train.render import BokehRenderer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class TinyModel:
    """The exported ONNX (with the weights output) and the PyTorch module it came from."""

    def __init__(self, path: Path, module: PixelsToBokeh, metadata: GraphMetadata) -> None:
        self.path = path
        self.module = module
        self.metadata = metadata

    def reference(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """PyTorch render of one uint8 BGR picture: (bokeh BGR uint8, weights (n+1) x H x W)."""
        with torch.no_grad():
            bokeh, weights = self.module(torch.from_numpy(np.ascontiguousarray(bgr[None])))
        return bokeh[0].numpy(), weights[0].numpy()


@functools.cache
def export_tiny_model(folder: Path) -> TinyModel:
    """The tiny model exported once per folder and process (the CLI and signal tests share
    it: an export takes a while on a small CPU)."""
    torch.manual_seed(0)
    config = BokehConfig(width=0.125, net_long_side=128)
    renderer = BokehRenderer(config).eval()
    metadata = GraphMetadata(
        config=config.to_dict(),
        min_input_side=config.min_input_side,
        max_input_side=8192,
        outputs=output_names(with_weights=True),
        precision="fp32",
        checkpoint_sha256="0" * 64,
        toolkit_version="test",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.onnx"
    model = trace_onnx(renderer, with_weights=True)
    set_metadata(model, metadata)
    write_onnx(model, path)
    return TinyModel(path, PixelsToBokeh(renderer, with_weights=True).eval(), metadata)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    return export_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


def run_cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def generated(height: int, width: int, seed: int) -> np.ndarray:
    """A synthetic BGR picture: smooth gradients, hard edges and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x ^ y) & 255])
    picture = picture.transpose(1, 2, 0).astype(np.int16)
    picture[height // 3 : height // 2, width // 4 : width // 2] = rng.integers(0, 256, 3)
    picture += rng.integers(-12, 13, picture.shape, dtype=np.int16)
    return np.clip(picture, 0, 255).astype(np.uint8)


def write(path: Path, bgr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, bgr)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def read(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


def assert_fp32_parity(reference: np.ndarray, candidate: np.ndarray, label: str) -> None:
    stats = parity_stats(reference, candidate)
    assert parity_failures(stats, "fp32") == [], f"{label}: {stats}"


def test_real_and_generated_photos_match_the_pytorch_render(tiny_model, tmp_path):
    inputs = tmp_path / "in"
    motorcycle = real_photo("motorcycle")[::2, ::2]
    pictures = {
        "real/astronaut.png": real_photo("astronaut")[:, :, ::-1],
        "real/coffee.jpg": real_photo("coffee")[:, :, ::-1],
        "real/chelsea.png": real_photo("chelsea")[:, :, ::-1],
        "real/motorcycle.png": motorcycle[:, :, ::-1],
        "generated/portrait_a.png": generated(150, 97, 1),
        "generated/portrait_b.png": generated(150, 97, 2),
        "generated/narrow.png": generated(40, 333, 3),
    }
    for name, bgr in pictures.items():
        write(inputs / name, bgr)
    code, output = run_cli(
        tiny_model.path, inputs, "--out", tmp_path / "out", "--format", "png", "--batch", 2
    )
    assert code == 0, output
    assert "done 7, failed 0, skipped 0" in output
    for name in pictures:
        decoded = read(inputs / name)  # the JPEG's decoded pixels are the model's input
        produced = read((tmp_path / "out" / name).with_suffix(".png"))
        assert_fp32_parity(tiny_model.reference(decoded)[0], produced, name)


def test_save_weights_writes_the_maps_as_one_colour_picture(tiny_model, tmp_path):
    bgr = real_photo("chelsea")[:, :, ::-1]
    write(tmp_path / "in" / "cat.png", bgr)
    code, output = run_cli(
        tiny_model.path, tmp_path / "in", "--out", tmp_path / "out", "--save-weights"
    )
    assert code == 0, output
    picture = read(tmp_path / "out" / "cat.weights.png")
    expected = colour_weights(tiny_model.reference(bgr)[1])
    assert picture.shape == (*bgr.shape[:2], 3)
    assert np.abs(picture.astype(int) - expected).max() <= 1


def test_alpha_and_grey_inputs_come_out_with_alpha_unchanged_and_colour_rendered(
    tiny_model, tmp_path
):
    bgr = real_photo("coffee")[::2, ::2, ::-1]
    alpha = np.tile(np.linspace(0, 255, bgr.shape[1]).astype(np.uint8), (bgr.shape[0], 1))
    write(tmp_path / "in" / "cutout.png", np.dstack([bgr, alpha]))
    grey = real_photo("chelsea")[:, :, 0]
    write(tmp_path / "in" / "grey.png", grey)
    code, output = run_cli(tiny_model.path, tmp_path / "in", "--out", tmp_path / "out")
    assert code == 0, output
    cutout = read(tmp_path / "out" / "cutout.png")
    np.testing.assert_array_equal(cutout[:, :, 3], alpha)
    assert_fp32_parity(tiny_model.reference(bgr)[0], cutout[:, :, :3], "cutout")
    rendered_grey = read(tmp_path / "out" / "grey.png")
    assert rendered_grey.shape == (*grey.shape, 3)
    assert_fp32_parity(
        tiny_model.reference(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))[0], rendered_grey, "grey"
    )


def test_every_bad_input_is_reported_with_its_reason_and_the_run_goes_on(tiny_model, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write(inputs / "good.png", generated(64, 96, 4))
    jpeg = bytearray(cv2.imencode(".jpg", real_photo("coffee")[:, :, ::-1])[1].tobytes())
    (inputs / "truncated.jpg").write_bytes(bytes(jpeg[: len(jpeg) // 2]))
    frame = jpeg.find(b"\xff\xc0")
    jpeg[frame + 5 : frame + 9] = bytes(4)  # a frame header of zero height and width
    (inputs / "corrupt.jpg").write_bytes(bytes(jpeg))
    (inputs / "empty.jpg").write_bytes(b"")
    (inputs / "text.jpg").write_text("not a picture\n", encoding="utf-8")
    write(inputs / "tiny.png", generated(20, 30, 5))
    write(inputs / "deep.png", generated(48, 48, 6).astype(np.uint16) * 257)
    (inputs / "ghost.jpg").symlink_to(inputs / "deleted.jpg")
    write(inputs / "blocked" / "pic.png", generated(64, 64, 7))
    out.mkdir()
    (out / "blocked").write_text("a file where the output folder should be", encoding="utf-8")
    code, output = run_cli(tiny_model.path, inputs, "--out", out, "--batch", 4)
    assert code == 1, output
    expected = {
        "truncated.jpg": "truncated JPEG",
        "corrupt.jpg": "not a decodable image",
        "empty.jpg": "empty file",
        "text.jpg": "not a decodable image",
        "tiny.png": "height 20 is outside the accepted 38..8192",
        "deep.png": "16-bit",
        "ghost.jpg": "cannot read",
        "pic.png": "cannot write",
    }
    lines = [line for line in output.splitlines() if line.startswith("FAILED")]
    assert len(lines) == len(expected), output
    for name, reason in expected.items():
        assert any(name in line and reason in line for line in lines), (name, output)
    assert (out / "good.png").is_file()
    assert "done 1, failed 8, skipped 0" in output


def test_a_killed_run_leaves_only_whole_files_and_skip_existing_completes_it(tiny_model, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    pictures = {f"p{i:02d}.png": generated(64, 96, 100 + i) for i in range(30)}
    for name, bgr in pictures.items():
        write(inputs / name, bgr)
    command = [sys.executable, "-c", "from dbsi.runtime.cli import main; main()"]
    args = [str(tiny_model.path), str(inputs), "--out", str(out), "--workers", "1", "--no-progress"]
    process = subprocess.Popen(command + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and len(list(out.glob("p*.png"))) >= 3:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    whole = sorted(p.name for p in out.glob("p*.png"))
    assert 3 <= len(whole) < len(pictures)
    for name in whole:  # every file under its final name is complete
        assert read(out / name).shape == (64, 96, 3), name
    for name in (whole[0], whole[-1]):
        assert_fp32_parity(tiny_model.reference(pictures[name])[0], read(out / name), name)

    code, output = run_cli(tiny_model.path, inputs, "--out", out, "--skip-existing")
    assert code == 0, output
    assert f"done {len(pictures) - len(whole)}, failed 0, skipped {len(whole)}" in output
    assert sorted(p.name for p in out.iterdir()) == sorted(pictures), "no temporary file is left"
    for name in sorted(pictures)[-3:]:
        assert_fp32_parity(tiny_model.reference(pictures[name])[0], read(out / name), name)


def test_shards_together_render_every_picture_exactly_once(tiny_model, tmp_path):
    names = {f"set/{i % 3}/img{i}.png" for i in range(15)}
    for i, name in enumerate(sorted(names)):
        write(tmp_path / "in" / name, generated(48, 64, 200 + i))
    rendered: list[str] = []
    for index in range(3):
        out = tmp_path / f"out{index}"
        code, output = run_cli(
            tiny_model.path, tmp_path / "in", "--out", out, "--shard", f"{index}/3", "--batch", 3
        )
        assert code == 0, output
        rendered += [p.relative_to(out).as_posix() for p in out.rglob("*.png")]
    assert len(rendered) == len(set(rendered)), "no picture is rendered by two shards"
    assert set(rendered) == names, "together the shards render every picture"


def test_runtime_and_cli_run_where_torch_cannot_be_imported(tiny_model, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('torch is blocked here')\n")
    write(tmp_path / "in" / "a.png", generated(64, 80, 9))
    script = (
        "import sys\n"
        "import dbsi.runtime, dbsi.runtime.backend, dbsi.runtime.cli, dbsi.runtime.images\n"
        "import dbsi.runtime.onnxruntime_backend, dbsi.runtime.pipeline, dbsi.runtime.sources\n"
        "import dbsi.runtime.tensorrt_backend, dbsi.runtime.weight_maps\n"
        "leaked = [m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        "          or m.startswith(('dbsi.train', 'dbsi.export'))]\n"
        "assert not leaked, leaked\n"
        "from dbsi.runtime.cli import main\n"
        "main()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(blocker))
    args = [str(tiny_model.path), str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a.png").is_file()
    blocked = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, check=False
    )
    assert blocked.returncode != 0, "the blocker must make importing torch fail"


def test_backend_interface_on_onnxruntime_cpu(tiny_model):
    with open_backend(tiny_model.path, provider="cpu") as backend:
        assert backend.name == "onnxruntime-cpu"
        assert backend.outputs == ["bokeh", "weights", "temporal_maps"]
        assert backend.metadata == tiny_model.metadata
        assert backend.config["width"] == 0.125
        assert backend.accepts((2, 64, 96, 3)) is None
        assert "width 37" in backend.accepts((1, 64, 37, 3))
        assert "N x H x W x 3" in backend.accepts((1, 64, 64, 4))
        batch = np.stack([generated(64, 96, 10), generated(64, 96, 11)])
        outputs = backend.run(batch)
        assert outputs["bokeh"].dtype == np.uint8 and outputs["bokeh"].shape == batch.shape
        assert outputs["weights"].shape == (2, 4, 64, 96)
        np.testing.assert_allclose(outputs["weights"].sum(axis=1), 1.0, atol=1e-5)
        with pytest.raises(ValueError, match="height 10"):
            backend.run(np.zeros((1, 10, 64, 3), np.uint8))


def test_onnx_without_dbsi_metadata_is_refused_with_exit_2(tiny_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_model.path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    write(tmp_path / "a.png", generated(64, 64, 12))
    code, output = run_cli(bare, tmp_path / "a.png", "--out", tmp_path / "out")
    assert code == 2
    assert "not a DBSI model" in output and "bare.onnx" in output


def test_save_weights_needs_the_weights_output(tiny_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_model.path))
    kept = [o for o in model.graph.output if o.name == "bokeh"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    for prop in model.metadata_props:
        if prop.key == "dbsi.outputs":
            prop.value = json.dumps(["bokeh"])
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    write(tmp_path / "a.png", generated(64, 64, 13))
    code, output = run_cli(plain, tmp_path / "a.png", "--out", tmp_path / "out", "--save-weights")
    assert code == 2 and "--save-weights needs a model exported with its 'weights'" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provider", "cuda"], "provider 'cuda' is not available"),
        (["--shard", "3/2"], "need 0 <= i < n"),
        (["--batch", "0"], "--batch"),
    ],
)
def test_bad_usage_and_missing_backends_exit_2(tiny_model, tmp_path, args, message):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and "cuda" in args:
        pytest.skip("this onnxruntime has the CUDA provider")
    write(tmp_path / "a.png", generated(64, 64, 14))
    code, output = run_cli(tiny_model.path, tmp_path / "a.png", "--out", tmp_path / "out", *args)
    assert code == 2 and message in output, output


def test_missing_model_and_no_images_exit_2(tiny_model, tmp_path):
    code, output = run_cli(tmp_path / "nope.onnx", tmp_path, "--out", tmp_path / "out")
    assert code == 2 and "no such model file" in output
    (tmp_path / "empty").mkdir()
    code, output = run_cli(tiny_model.path, tmp_path / "empty", "--out", tmp_path / "out")
    assert code == 2 and "no input images" in output


class ProfileLimitedBackend(OnnxRuntimeBackend):
    """The tiny ONNX on CPU behind an engine-like profile that takes 2..3 pictures per run, as
    a TensorRT profile with min batch 2 and max batch 3 would; records every batch it runs."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, provider="cpu")
        self.batches: list[int] = []

    @property
    def min_batch(self) -> int:
        return 2

    @property
    def max_batch(self) -> int:
        return 3

    def accepts(self, shape):
        return describe_shape_problem(shape, (2, 38, 38), (3, 8192, 8192))

    def run(self, batch, aperture=None):
        self.batches.append(len(batch))
        return super().run(batch, aperture)


def test_a_batch_beyond_the_backends_limits_renders_every_picture(
    tiny_model, tmp_path, monkeypatch
):
    backend = ProfileLimitedBackend(tiny_model.path)
    monkeypatch.setattr("dbsi.runtime.cli.open_backend", lambda *args, **kwargs: backend)
    pictures = {f"square_{i}.png": generated(64, 64, 30 + i) for i in range(4)}
    pictures["wide.png"] = generated(64, 96, 40)
    for name, bgr in pictures.items():
        write(tmp_path / "in" / name, bgr)
    code, output = run_cli(
        tiny_model.path, tmp_path / "in", "--out", tmp_path / "out", "--batch", 8
    )
    assert code == 0, output
    assert "--batch 8 is outside the 2...3 this model takes; using 3" in output
    assert "done 5, failed 0" in output
    # 4 squares: a full batch of 3, then 1 padded to 2; the wide one alone, padded to 2.
    assert sorted(backend.batches) == [2, 2, 3]
    for name, bgr in pictures.items():
        assert_fp32_parity(tiny_model.reference(bgr)[0], read(tmp_path / "out" / name), name)


def test_a_checkpoint_as_the_model_exits_2_with_the_export_command(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"PK torch checkpoint")
    write(tmp_path / "a.png", generated(64, 64, 50))
    code, output = run_cli(checkpoint, tmp_path / "a.png", "--out", tmp_path / "out")
    assert code == 2, output
    assert f"bokeh-export onnx {checkpoint} -o {tmp_path / 'best.onnx'}" in output
    assert "--backend" not in output


def test_an_input_that_does_not_exist_exits_2_before_any_work(tiny_model, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was opened before the inputs were checked")

    monkeypatch.setattr("dbsi.runtime.cli.open_backend", no_work)
    write(tmp_path / "in" / "a.png", generated(64, 64, 51))
    missing = tmp_path / "in" / "typo.png"
    code, output = run_cli(
        tiny_model.path, tmp_path / "in" / "a.png", missing, "--out", tmp_path / "out"
    )
    assert code == 2, output
    assert output.strip().splitlines() == [f"bokeh-run: no such input file or folder: {missing}"]
    assert not (tmp_path / "out").exists()


def test_failed_lines_come_after_the_run_header(tiny_model, tmp_path):
    write(tmp_path / "in" / "good.png", generated(64, 64, 52))
    (tmp_path / "in" / "broken.png").write_bytes(b"not a picture")
    listing = tmp_path / "list.txt"
    listing.write_text("in/good.png\nin/gone.png\n", encoding="utf-8")
    code, output = run_cli(
        tiny_model.path, tmp_path / "in", f"@{listing}", "--out", tmp_path / "out"
    )
    assert code == 1, output
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("bokeh-run: "))
    failed = [i for i, line in enumerate(lines) if line.startswith("FAILED")]
    assert len(failed) == 2, output  # gone.png before the run, broken.png during it
    assert min(failed) > header, output


def test_shard_auto_takes_the_shard_from_a_slurm_array(tiny_model, tmp_path, monkeypatch):
    from dbsi.runtime.sources import shard_of

    environ = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    environ |= {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    names = [f"img{i}.png" for i in range(9)]
    for i, name in enumerate(names):
        write(tmp_path / "in" / name, generated(48, 64, 60 + i))
    out = tmp_path / "out"
    code, output = run_cli(tiny_model.path, tmp_path / "in", "--out", out, "--shard", "auto")
    assert code == 0, output
    assert "(shard 1/3 from SLURM_ARRAY_TASK_ID=1)" in output
    mine = {n for n in names if shard_of(Path(n), 3) == 1}
    assert mine and {p.name for p in out.glob("*.png")} == mine


def test_shard_auto_outside_an_array_job_exits_2(tmp_path, monkeypatch):
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    write(tmp_path / "a.png", generated(64, 64, 53))
    model = tmp_path / "m.onnx"
    code, output = run_cli(model, tmp_path / "a.png", "--out", tmp_path / "out", "--shard", "auto")
    assert code == 2, output
    assert "--shard" in output and "neither is set here" in output
