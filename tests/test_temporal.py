"""Temporal smoothing of video (``--temporal``): the host's mix matrix is the exponential
average frame by frame, whatever the batches; scene cuts restart it; the graph applies it like
PyTorch on every CPU backend and renders photos bit for bit as before; graphs exported before
it still render video, without smoothing; a smoothed static clip changes less from frame to
frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dbsi.runtime.contract import TemporalFeed
from dbsi.runtime.temporal import (
    CUT_THRESHOLD,
    TemporalSmoother,
    colour_histogram,
    histogram_change,
    mix_matrix,
)

torch = pytest.importorskip("torch", reason="the graphs are exported from PyTorch")

from dbsi.export.checks import check_temporal_feed, reference_render  # noqa: E402
from dbsi.export.parity import parity_failures, parity_stats  # noqa: E402
from dbsi.runtime.registry import open_backend  # noqa: E402
from tests.test_runtime_cli import export_tiny_model, generated, run_cli  # noqa: E402

DATA = Path(__file__).parent / "data"
MAPS = 4


def smooth_frame_by_frame(state: np.ndarray, maps: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """m_k = c_k m_(k-1) + (1 - c_k) w_k, one frame at a time."""
    out, previous = [], state
    for w, c in zip(maps, carry):
        previous = c * previous + (1 - c) * w
        out.append(previous)
    return np.stack(out)


def apply_mix(mix: np.ndarray, state: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """What the graph does with a state already at the maps' size."""
    stacked = np.concatenate([state[None], maps]).reshape(len(maps) + 1, -1)
    return (mix.astype(np.float64) @ stacked).reshape(maps.shape)


def test_carry_zero_gives_a_mix_of_ones_and_zeros_that_keeps_each_frame():
    mix = mix_matrix(np.zeros(3))
    assert np.array_equal(mix, TemporalFeed.independent(3, MAPS).mix)
    assert set(np.unique(mix)) == {0.0, 1.0}


def test_the_mix_is_the_exponential_average_frame_by_frame():
    rng = np.random.default_rng(0)
    maps, state = rng.random((5, MAPS, 6, 8)), rng.random((MAPS, 6, 8))
    carry = np.array([0.7, 0.7, 0.0, 0.7, 0.5])
    mix = mix_matrix(carry)
    assert np.allclose(mix.sum(axis=1), 1.0, atol=1e-6)
    want = smooth_frame_by_frame(state, maps, carry)
    assert np.allclose(apply_mix(mix, state, maps), want, atol=1e-6)


def test_carry_factors_outside_zero_to_one_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mix_matrix(np.array([0.5, 1.0]))


def test_a_clip_smoothed_in_batches_of_any_size_gets_the_same_maps():
    rng = np.random.default_rng(1)
    frames = np.stack([generated(48, 64, seed=0)] * 7)
    predicted = rng.random((7, MAPS, 6, 8)).astype(np.float32)

    def smoothed(batch: int) -> np.ndarray:
        smoother, out = TemporalSmoother(0.6, MAPS), []
        for start in range(0, 7, batch):
            feed = smoother.feed(frames[start : start + batch])
            state = np.broadcast_to(feed.state[0], predicted.shape[1:])
            used = apply_mix(feed.mix, state, predicted[start : start + batch])
            smoother.update(used.astype(np.float32), len(used))
            out.append(used)
        return np.concatenate(out)

    one = smoothed(7)
    assert np.array_equal(one[0], predicted[0])  # the first frame carries nothing
    for batch in (1, 2, 3):
        assert np.allclose(smoothed(batch), one, atol=1e-6)


def test_a_scene_cut_restarts_the_average():
    first, second = generated(90, 160, seed=1), generated(90, 160, seed=2)[::-1, ::-1] // 3
    frames = np.stack([first, first, second, second])
    smoother = TemporalSmoother(0.6, MAPS)
    mix = smoother.feed(frames).mix
    assert smoother.cuts == [2]
    assert mix[2].tolist() == [0, 0, 0, 1, 0]


def test_a_moving_subject_is_not_a_scene_cut():
    scene = generated(90, 160, seed=3)
    moved = np.roll(scene, 12, axis=1)
    assert histogram_change(colour_histogram(scene), colour_histogram(moved)) < CUT_THRESHOLD
    smoother = TemporalSmoother(0.6, MAPS)
    smoother.feed(np.stack([scene, moved]))
    assert smoother.cuts == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


def test_an_independent_feed_renders_bit_for_bit_as_without_one(tiny):
    renderer = tiny.module.renderer
    image = torch.from_numpy(generated(70, 90, seed=4)).permute(2, 0, 1)[None].float() / 255
    image = torch.cat([image, image.flip(3)])
    feed = TemporalFeed.independent(2, MAPS)
    with torch.no_grad():
        plain = renderer(image)
        fed = renderer.render(
            image, None, (torch.from_numpy(feed.state), torch.from_numpy(feed.mix))
        )
    assert torch.equal(plain[0], fed[0]) and torch.equal(plain[1], fed[1])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_each_cpu_backend_smooths_like_pytorch(tiny, backend):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is not installed")
    batch = np.stack([generated(70, 90, seed=5), generated(70, 90, seed=6)])
    feed = check_temporal_feed(MAPS)
    want = reference_render(tiny.module.renderer, batch, False, None, feed)["bokeh"]
    plain = reference_render(tiny.module.renderer, batch)["bokeh"]
    with open_backend(tiny.path, backend) as opened:
        got = opened.run(batch, None, feed)
    assert parity_failures(parity_stats(want, got["bokeh"]), "fp32") == []
    assert not np.array_equal(want, plain)  # the mix changed the render
    assert got["temporal_maps"].shape == (2, MAPS, 96, 128)


def test_a_feed_for_another_batch_size_is_refused(tiny):
    with open_backend(tiny.path, "onnxruntime") as opened:
        with pytest.raises(ValueError, match="temporal mix must be 1 x 2"):
            opened.run(generated(70, 90, seed=7)[None], None, check_temporal_feed(MAPS))


def test_a_graph_from_before_the_temporal_inputs_renders_but_refuses_a_feed():
    with open_backend(DATA / "pre_aperture" / "model.onnx", "onnxruntime") as opened:
        assert not opened.metadata.takes_temporal
        batch = generated(70, 90, seed=8)[None]
        assert opened.run(batch)["bokeh"].shape == batch.shape
        with pytest.raises(ValueError, match="without the temporal inputs"):
            opened.run(batch, None, TemporalFeed.independent(1, opened.metadata.maps))


def lossless_frames(path: Path) -> np.ndarray:
    av = pytest.importorskip("av", reason="video needs PyAV")
    with av.open(str(path)) as clip:
        return np.stack([f.to_ndarray(format="bgr24") for f in clip.decode(video=0)])


def test_a_smoothed_clip_starts_like_the_unsmoothed_one_and_then_differs(tiny, tmp_path):
    from tests.test_runtime_video import write_clip

    clip = write_clip(tmp_path / "clip.mkv", list(range(8)), codec="ffv1", pix_fmt="bgr0")
    rendered = {}
    for strength in ("0", "0.8"):
        out = tmp_path / f"out-{strength}"
        code, output = run_cli(
            tiny.path,
            clip,
            "--out",
            out,
            "--temporal",
            strength,
            "--batch",
            "3",
            "--video-codec",
            "ffv1",
        )
        assert code == 0, output
        rendered[strength] = lossless_frames(out / clip.name)
    assert "smoothed over time at 0.8 (scene cuts at: " in output
    plain, smoothed = rendered["0"], rendered["0.8"]
    assert len(smoothed) == len(plain) == 8
    assert np.array_equal(smoothed[0], plain[0])  # the first frame carries nothing
    assert any(not np.array_equal(a, b) for a, b in zip(smoothed[1:], plain[1:]))


def test_a_graph_from_before_the_temporal_inputs_renders_video_frame_by_frame(tmp_path):
    from tests.test_runtime_video import write_clip

    clip = write_clip(tmp_path / "clip.mp4", list(range(4)), size=(64, 96))
    model = DATA / "pre_aperture" / "model.onnx"
    code, output = run_cli(model, clip, "--out", tmp_path / "out", "--temporal", "0.5")
    assert code == 0, output
    assert "--temporal 0.5 is ignored and every frame is rendered on its own" in output
    assert (tmp_path / "out" / clip.name).is_file()
