"""Synthetic clips with their true defocused clips (``bokeh-train synth --video``): deterministic
by seed, lossless files of the asked length, size and rate, a truth blurred off the focus layer
and sharp on it, a still background under a still camera and a moving one under a pan, the
audio where the manifest says, and one-line refusals of bad values."""

from __future__ import annotations

import json
from fractions import Fraction

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dbsi.train.cli import main
from dbsi.train.synthetic import SceneSpec
from dbsi.train.synthetic_video import (
    ClipSpec,
    is_generated,
    plan_clip,
    read_clip,
    static_mask,
    write_videos,
)

TINY = ClipSpec(SceneSpec(height=32, width=48), frames=4)
SMALL = ClipSpec(SceneSpec(height=64, width=96), frames=6, noise=0)


def rendered(seed: int, index: int, spec: ClipSpec) -> dict[str, np.ndarray]:
    """Every frame of a clip, stacked: original, bokeh, layer (T x ...)."""
    plan = plan_clip(seed, index, spec)
    frames = [plan.frame(t) for t in range(spec.frames)]
    keys = ("original", "bokeh", "layer")
    return {key: np.stack([getattr(f, key) for f in frames]) for key in keys}


def test_same_seed_gives_the_same_frames_another_seed_other_ones():
    a, b, c = rendered(3, 1, TINY), rendered(3, 1, TINY), rendered(4, 1, TINY)
    for key in a:
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["original"], c["original"])


def test_written_clips_have_the_frames_size_and_rate_asked(tmp_path):
    av = pytest.importorskip("av", reason="writing clips needs PyAV")
    spec = ClipSpec(TINY.scene, frames=5, fps=Fraction(30000, 1001))
    manifest = write_videos(tmp_path, 2, seed=0, spec=spec)
    for clip in manifest["clips"]:
        for folder in ("original", "bokeh"):
            with av.open(str(tmp_path / clip[folder])) as container:
                stream = container.streams.video[0]
                assert stream.average_rate == Fraction(30000, 1001)
                assert stream.codec_context.name == "ffv1"
                frames = list(container.decode(stream))
            assert len(frames) == 5
            assert (frames[0].height, frames[0].width) == (32, 48)
    # Lossless: the files hold exactly the frames rendered.
    truth = rendered(0, 1, spec)
    assert np.array_equal(read_clip(tmp_path / "original" / "1.mkv"), truth["original"])
    assert np.array_equal(read_clip(tmp_path / "bokeh" / "1.mkv"), truth["bokeh"])


def test_the_same_seed_writes_the_same_bytes(tmp_path):
    pytest.importorskip("av", reason="writing clips needs PyAV")
    for folder in ("a", "b"):
        write_videos(tmp_path / folder, 1, seed=5, spec=TINY)
    for name in ("original/0.mkv", "bokeh/0.mkv", "video.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_truth_is_sharp_on_the_focus_layer_and_blurred_off_it():
    plan = plan_clip(0, 0, SMALL)
    frame = plan.frame(2)
    diff = np.abs(frame.original.astype(int) - frame.bokeh.astype(int)).mean(axis=2)
    focus = (frame.layer == plan.focus_layer).astype(np.uint8)
    inner = cv2.erode(focus, np.ones((7, 7), np.uint8)).astype(bool)
    background = frame.layer == 0
    assert inner.sum() > 20 and diff[inner].mean() < 2.0
    assert diff[background].mean() > 3 * diff[inner].mean() + 1


def test_sensor_noise_is_in_the_original_only():
    noisy = rendered(0, 0, ClipSpec(SMALL.scene, frames=SMALL.frames))
    clean = rendered(0, 0, SMALL)
    assert np.array_equal(noisy["bokeh"], clean["bokeh"])
    noise = noisy["original"].astype(int) - clean["original"].astype(int)
    assert 0.5 < noise.std() < 4
    # Fresh noise in every frame, even where nothing moves.
    assert not np.array_equal(noise[0], noise[1])


@pytest.mark.parametrize("index", [0, 2, 4])
def test_a_still_camera_keeps_the_background_still_and_the_moving_shapes_change(index):
    spec = ClipSpec(SMALL.scene, frames=6, camera="static", noise=0)
    plan = plan_clip(0, index, spec)
    clip = rendered(0, index, spec)
    still = static_mask(clip["bokeh"])
    assert still.shape == (5, 64, 96) and still.dtype == bool
    layer = clip["layer"]
    background = (layer[1:] == 0) & (layer[:-1] == 0)
    moving = [k for k, lay in enumerate(plan.layers) if lay.moving]
    assert moving and 0 not in moving
    assert still[background].mean() > 0.85
    assert still[np.isin(layer[1:], moving)].mean() < 0.6


@pytest.mark.parametrize("index", [1, 3, 5])
def test_a_pan_moves_the_background(index):
    spec = ClipSpec(SMALL.scene, frames=6, camera="pan", noise=0)
    clip = rendered(0, index, spec)
    layer, truth = clip["layer"], clip["bokeh"]
    background = (layer[1:] == 0) & (layer[:-1] == 0)
    assert static_mask(truth)[background].mean() < 0.6
    same = np.all(truth[0] == truth[-1], axis=-1)
    assert same[(layer[0] == 0) & (layer[-1] == 0)].mean() < 0.3


def test_the_camera_alternates_and_the_manifest_says_where_the_audio_is(tmp_path):
    av = pytest.importorskip("av", reason="writing clips needs PyAV")
    spec = ClipSpec(TINY.scene, frames=6, fps=Fraction(12))
    manifest = write_videos(tmp_path, 3, seed=0, spec=spec)
    assert [c["camera"] for c in manifest["clips"]] == ["static", "pan", "static"]
    assert [c["audio"] for c in manifest["clips"]] == [True, True, False]
    on_disk = json.loads((tmp_path / "video.json").read_text())
    assert on_disk["frames"] == 6 and on_disk["fps"] == "12" and on_disk["seed"] == 0
    assert (on_disk["height"], on_disk["width"]) == (32, 48)
    assert on_disk["clips"][0]["focus_layer"] >= 1
    for clip in manifest["clips"]:
        for folder in ("original", "bokeh"):
            with av.open(str(tmp_path / clip[folder])) as container:
                audio = container.streams.audio
                if folder == "original" and clip["audio"]:
                    assert len(audio) == 1 and audio[0].codec_context.name == "aac"
                    packets = [p for p in container.demux(audio[0]) if p.size]
                    end = max(float((p.pts + p.duration) * p.time_base) for p in packets)
                    assert end == pytest.approx(0.5, abs=0.05)  # 6 frames at 12 fps
                else:
                    assert len(audio) == 0


def synth(out, *extra):
    args = ["synth", "--video", "--out", str(out), "--count", "2", "--frames", "3"]
    return CliRunner().invoke(main, [*args, "--height", "32", "--width", "48", *extra])


def test_synth_video_writes_skips_redoes_and_prunes(tmp_path):
    pytest.importorskip("av", reason="writing clips needs PyAV")
    first = synth(tmp_path, "--camera", "pan")
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in (tmp_path / "bokeh").iterdir()) == ["0.mkv", "1.mkv"]
    assert is_generated(tmp_path, 2, 0, ClipSpec(TINY.scene, frames=3, camera="pan"))
    again = synth(tmp_path, "--camera", "pan")
    assert again.exit_code == 0 and "nothing to do" in again.output
    forced = synth(tmp_path, "--camera", "pan", "--force")
    assert forced.exit_code == 0 and "wrote 2 clips" in forced.output
    fewer = synth(tmp_path, "--count", "1")
    assert fewer.exit_code == 0 and "removed 2 files" in fewer.output
    assert sorted(p.name for p in (tmp_path / "original").iterdir()) == ["0.mkv"]


def test_an_interrupted_set_is_not_complete_and_is_redone(tmp_path):
    pytest.importorskip("av", reason="writing clips needs PyAV")

    def interrupt(i):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_videos(tmp_path, 2, seed=0, spec=ClipSpec(TINY.scene, frames=3), on_clip=interrupt)
    assert not is_generated(tmp_path, 2, seed=0, spec=ClipSpec(TINY.scene, frames=3))
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    result = synth(tmp_path)
    assert result.exit_code == 0 and "wrote 2 clips" in result.output


def test_a_folder_with_other_files_is_refused_without_force(tmp_path):
    pytest.importorskip("av", reason="synth --video checks for PyAV first")
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "7.jpg").write_bytes(b"not ours")
    result = synth(tmp_path)
    assert result.exit_code == 2 and "pass --force" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fps", "0"], "fps: 0 is outside"),
        (["--fps", "fast"], "'fast' is not a frame rate"),
        (["--frames", "1"], "'--frames': 1 is not in the range"),
        (["--camera", "tilt"], "'tilt' is not one of"),
        (["--count", "0"], "'--count': 0 is not in the range"),
        (["--noise", "-1"], "noise: -1.0 is outside"),
        (["--height", "8"], "'--height': 8 is not in the range"),
        (["--max-coc", "0.7"], "max_coc: 0.7 is outside"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, args, message):
    result = synth(tmp_path / "out", *args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_video_options_without_video_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--frames", "3"])
    assert result.exit_code == 2 and "--frames: only with --video" in result.output
