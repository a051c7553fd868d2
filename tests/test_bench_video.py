"""bokeh-bench video on a tiny synthetic set and a tiny model: a row per backend and temporal
strength with real figures, smoothing that lowers the flicker of a still camera, the table and
the reports, and one-line refusals of bad input."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dbsi.benchmarks.cli import main

pytest.importorskip("av", reason="video needs PyAV")
torch = pytest.importorskip("torch", reason="the tiny model is exported from PyTorch")

from dbsi.benchmarks.video import INPUT_BACKEND, score_clip  # noqa: E402
from dbsi.export.metadata import set_metadata  # noqa: E402
from dbsi.export.onnx_graph import output_names, trace_onnx, write_onnx  # noqa: E402
from dbsi.runtime.contract import GraphMetadata  # noqa: E402
from dbsi.train.config import BokehConfig  # noqa: E402
from dbsi.train.render import BokehRenderer  # noqa: E402
from dbsi.train.synthetic import SceneSpec  # noqa: E402
from dbsi.train.synthetic_video import ClipSpec, write_videos  # noqa: E402

DATA = Path(__file__).parent / "data"
# Two clips (0 a still camera, 1 a pan) of six frames, the size the video tests render.
SPEC = ClipSpec(SceneSpec(height=64, width=96), frames=6)
STRENGTHS = (0.0, 0.8)
BACKENDS = ("onnxruntime-cpu",) + (("openvino",) if importlib.util.find_spec("openvino") else ())
# The jittery head's gain: its maps swing with one level of noise as a trained model's do
# with far more (measured on SPEC's static clip in PyTorch: flicker 0.93 levels at temporal 0,
# 0.48 at 0.8).
JITTER_GAIN = 30.0


def export_jittery_model(path: Path) -> Path:
    """A tiny graph whose weight maps follow the pixel noise: the real renderer and export
    around a one-layer head of zero-sum 3x3 filters (detail and noise in, brightness ignored).

    Why not the random tiny model of the runtime tests: its maps hardly move (a mean change of
    7e-5 per frame on SPEC's clips), so its flicker is the input noise passing through the
    blend, the same with smoothing or without (0.5126 levels either way), and the test could
    not tell a working smoother from a broken one."""
    torch.manual_seed(0)
    config = BokehConfig(width=0.125, net_long_side=128)
    renderer = BokehRenderer(config)
    head = torch.nn.Conv2d(3, config.num_maps, 3, padding=1)
    with torch.no_grad():
        weights = torch.randn_like(head.weight)
        head.weight.copy_(JITTER_GAIN * (weights - weights.mean(dim=(2, 3), keepdim=True)))
        head.bias.zero_()
    renderer.predictor = torch.nn.Sequential(head, torch.nn.Softmax(dim=1))
    model = trace_onnx(renderer.eval())
    metadata = GraphMetadata(
        config=config.to_dict(),
        min_input_side=config.min_input_side,
        max_input_side=8192,
        outputs=output_names(with_weights=False),
        precision="fp32",
        checkpoint_sha256="0" * 64,
        toolkit_version="test",
    )
    set_metadata(model, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_onnx(model, path)
    return path


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_videos(folder, 2, seed=0, spec=SPEC)
    return folder


@pytest.fixture(scope="module")
def bench(clips, tmp_path_factory) -> tuple[dict, str, Path]:
    """The report, the console output and the report folder of one run over the set."""
    model = export_jittery_model(tmp_path_factory.mktemp("model") / "jittery.onnx")
    out = tmp_path_factory.mktemp("bench")
    args = ["video", clips, "--model", model, "--batch", 4, "--out", out]
    args += ["--strip", out / "strip.png"]
    for strength in STRENGTHS:
        args += ["--temporal", strength]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "video.json").read_text()), result.output, out


def test_a_row_per_backend_and_strength_with_real_figures(bench):
    report, _, _ = bench
    rendered = [r for r in report["rows"] if r["backend"] != INPUT_BACKEND]
    # Every backend here: CUDA and TensorRT providers too on a machine with an NVIDIA GPU.
    backends = {r["backend"] for r in rendered}
    assert backends >= set(BACKENDS)
    assert sorted((r["backend"], r["temporal"]) for r in rendered) == sorted(
        (b, s) for b in backends for s in STRENGTHS
    )
    for row in rendered:
        assert row["frames_per_s"] > 0 and row["clips"] == 2 and row["failed"] == 0
        assert row["frames"] == 2 * SPEC.frames and row["precision"] == "fp32"
        for key in ("psnr_db", "ssim", "flicker", "psnr_db_static", "flicker_pan"):
            assert math.isfinite(row[key]), key
    assert {r["clip"] for r in report["per_clip"]} == {"0", "1"}
    assert report["machine"]["cpu_model"] and "int8" in report["machine"]["cpu_isa"]


def test_the_inputs_have_a_row_that_shows_the_scale(bench):
    report, _, _ = bench
    (inputs,) = [r for r in report["rows"] if r["backend"] == INPUT_BACKEND]
    assert inputs["flicker"] > 0 and inputs.get("frames_per_s") is None


def test_smoothing_lowers_the_flicker_of_a_still_camera(bench):
    report, _, _ = bench
    for backend in BACKENDS:
        flicker = {
            r["temporal"]: r["flicker"]
            for r in report["per_clip"]
            if r["backend"] == backend and r["camera"] == "static"
        }
        assert flicker[0.8] < 0.8 * flicker[0.0], (backend, flicker)
        (smoothed,) = [
            r for r in report["rows"] if r["backend"] == backend and r["temporal"] == 0.8
        ]
        assert smoothed["flicker_ratio_static"] < 1
        independent = next(
            r for r in report["rows"] if r["backend"] == backend and r["temporal"] == 0
        )
        assert smoothed["maps_change_static"] < 0.5 * independent["maps_change_static"]
        assert smoothed["psnr_change_db"] == pytest.approx(
            smoothed["psnr_db"]
            - next(
                r["psnr_db"]
                for r in report["rows"]
                if r["backend"] == backend and r["temporal"] == 0
            )
        )


def test_the_table_prints_and_both_reports_are_written(bench):
    _, output, out = bench
    assert "flicker vs independent" in output and "PSNR change dB" in output
    assert INPUT_BACKEND in output and "Machine: " in output
    assert "| flicker vs independent |" in (out / "video.md").read_text()


def test_the_strip_shows_three_frames_of_each_clip_and_their_change(bench):
    import cv2

    _, output, out = bench
    assert f"Strip: {out / 'strip.png'}" in output
    strip = cv2.imread(str(out / "strip.png"))
    # Input, the strengths and the truth, then the change of all but the input: 2n + 3
    # columns side by side, three rows of frames.
    assert strip is not None and strip.shape[1] > 2 * strip.shape[0]


def test_the_truth_against_itself_has_no_flicker_and_the_noisy_input_some(clips):
    truth, original = clips / "bokeh" / "0.mkv", clips / "original" / "0.mkv"
    itself = score_clip(truth, truth)
    assert itself["flicker"] == 0 and itself["psnr_db"] == math.inf and itself["ssim"] == 1
    assert itself["frames"] == SPEC.frames and 0 < itself["static_share"] <= 1
    assert score_clip(truth, original)["flicker"] > 0


def test_a_graph_from_before_the_temporal_inputs_gets_temporal_0_only(clips, tmp_path):
    model = DATA / "pre_aperture" / "model.onnx"
    result = invoke("video", clips, "--model", model, "--backend", "onnxruntime", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "video.json").read_text())
    assert [r["temporal"] for r in report["rows"] if r["backend"] != INPUT_BACKEND] == [0]
    assert any("exported before the temporal inputs" in note for note in report["notes"])


def test_a_folder_without_video_json_exits_2_with_one_line(tmp_path):
    result = invoke("video", tmp_path, "--model", tmp_path / "model.onnx", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "no video.json" in result.output


@pytest.mark.parametrize(
    "name, message", [("best.pt", "bokeh-export onnx"), ("model.txt", "unknown model type")]
)
def test_a_model_that_is_not_exported_exits_2_with_one_line(clips, tmp_path, name, message):
    model = tmp_path / name
    model.write_bytes(b"not a model")
    result = invoke("video", clips, "--model", model, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output


def test_maps_change_is_the_mean_l1_change_per_pixel_across_batches():
    from dbsi.benchmarks.video import MapsChange

    sharp = np.zeros((1, 2, 3, 4), np.float32)
    sharp[:, 0] = 1
    blurred = sharp[:, ::-1].copy()
    change = MapsChange()
    change.add(np.concatenate([sharp, sharp]))  # still: 0
    change.add(blurred)  # every pixel's weight moved from one map to the other: 2
    assert change.mean == pytest.approx(2 / 2)
