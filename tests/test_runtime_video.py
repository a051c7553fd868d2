"""``bokeh-run`` on video files, with clips written by PyAV in the tests: the output keeps the
frame count, frame rate, timestamps (variable rate too), size, rotation and the audio packets
byte for byte; encoded losslessly its frames match the same frames rendered as pictures; bad
files (truncated, audio only) fail alone with their reason; --skip-existing and a SIGTERM
behave per video."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.test_runtime_cli import export_tiny_model, generated, run_cli

av = pytest.importorskip("av", reason="video needs PyAV")
pytest.importorskip("torch", reason="the tiny model is exported from PyTorch")

from dbsi.export.parity import parity_failures, parity_stats  # noqa: E402
from dbsi.runtime.registry import open_backend  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 64, 96
SAMPLE_RATE = 16000
VFR_PTS = [0, 1, 2, 4, 5, 7, 8, 9, 12, 13, 15, 16]  # in 1/24 s: irregular gaps


def write_clip(
    path: Path,
    pts: list[int],
    rate: int = 24,
    codec: str = "libx264",
    audio: bool = True,
    video: bool = True,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    size: tuple[int, int] = (HEIGHT, WIDTH),
    pix_fmt: str = "yuv420p",
    transfer: int | None = None,
    subtitles: tuple[str, ...] = (),
) -> Path:
    """A clip of generated frames at ``pts`` (in 1/rate s) and, with ``audio``, one second of
    a 440 Hz sine tone in AAC; ``subtitles``: SubRip lines, one every 100 ms. ``transfer``: the
    colour transfer tagged (16: PQ, HDR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, rate)
    with av.open(str(path), "w", options=options or {}) as out:
        # Every stream before the first packet: the header is written with it.
        stream = out.add_stream(codec, rate=rate) if video else None
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        text = out.add_mux_stream("subrip") if subtitles else None
        if stream is not None:
            stream.height, stream.width = size
            stream.pix_fmt = pix_fmt
            if transfer is not None:
                stream.codec_context.color_trc = transfer
            if rotation is not None:
                stream.set_display_rotation(rotation)
            for i, when in enumerate(pts):
                frame = av.VideoFrame.from_ndarray(generated(*size, seed=i), format="bgr24")
                frame.pts, frame.time_base = when, time_base
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        if sound is not None:
            tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
            samples = (0.3 * tone).astype(np.float32)[None]
            for start in range(0, SAMPLE_RATE, 1024):
                frame = av.AudioFrame.from_ndarray(
                    samples[:, start : start + 1024], format="flt", layout="mono"
                )
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                frame.time_base = Fraction(1, SAMPLE_RATE)
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
        for i, line in enumerate(subtitles):
            packet = av.Packet(line.encode())
            packet.stream, packet.time_base = text, Fraction(1, 1000)
            packet.pts = packet.dts = 100 * i
            packet.duration = 90
            out.mux(packet)
    return path


def frames_of(path: Path) -> list:
    with av.open(str(path)) as clip:
        return list(clip.decode(clip.streams.video[0]))


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as clip:
        return [bytes(p) for p in clip.demux(clip.streams.audio[0]) if p.size]


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model").path


@pytest.fixture(scope="module")
def rendered(tiny_onnx, tmp_path_factory) -> tuple[Path, Path, str]:
    """A 12-frame clip at 24 fps with a sine tone, and its render (default codec)."""
    folder = tmp_path_factory.mktemp("clip")
    clip = write_clip(folder / "in" / "clip.mp4", list(range(12)))
    code, output = run_cli(tiny_onnx, clip, "--out", folder / "out", "--batch", "4")
    assert code == 0, output
    return clip, folder / "out" / "clip.mp4", output


def test_a_clip_renders_with_its_frame_count_rate_and_size(rendered):
    clip, result, _ = rendered
    with av.open(str(clip)) as a, av.open(str(result)) as b:
        before, after = a.streams.video[0], b.streams.video[0]
        assert after.average_rate == before.average_rate == 24
        assert (after.width, after.height) == (before.width, before.height) == (WIDTH, HEIGHT)
    assert len(frames_of(result)) == len(frames_of(clip)) == 12


def test_the_audio_packets_are_copied_byte_for_byte(rendered):
    clip, result, _ = rendered
    packets = audio_packets(clip)
    assert len(packets) > 10
    assert audio_packets(result) == packets


def test_subtitle_packets_are_copied_with_their_times(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "talk.mkv", list(range(6)), subtitles=("Hello", "there"))
    code, output = run_cli(tiny_onnx, clip, "--out", tmp_path / "out")
    assert code == 0, output
    with av.open(str(tmp_path / "out" / clip.name)) as result:
        cues = [(bytes(p), p.pts, p.duration) for p in result.demux(result.streams.subtitles[0])]
    assert [c for c in cues if c[0]] == [(b"Hello", 0, 90), (b"there", 100, 90)]


def test_the_header_names_the_codec_chosen(rendered):
    _, _, output = rendered
    assert "1 video(s)" in output
    assert "libx264 (yuv420p, crf 18); 1 audio stream(s) copied" in output


def test_variable_frame_rate_timestamps_are_kept(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "vfr.mp4", VFR_PTS, audio=False)
    code, output = run_cli(tiny_onnx, clip, "--out", tmp_path / "out", "--batch", "3")
    assert code == 0, output
    before = [(f.pts, f.time_base) for f in frames_of(clip)]
    assert [(f.pts, f.time_base) for f in frames_of(tmp_path / "out" / "vfr.mp4")] == before
    assert [round(float(p * tb) * 24) for p, tb in before] == VFR_PTS


def test_rotation_metadata_is_kept(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "turned.mov", list(range(4)), audio=False, rotation=90)
    code, output = run_cli(tiny_onnx, clip, "--out", tmp_path / "out")
    assert code == 0, output
    assert frames_of(clip)[0].rotation == 90
    assert [f.rotation for f in frames_of(tmp_path / "out" / "turned.mov")] == [90] * 4


def test_lossless_frames_match_the_frames_rendered_as_pictures(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "clip.mkv", list(range(6)))
    code, output = run_cli(
        tiny_onnx, clip, "--out", tmp_path / "out", "--video-codec", "ffv1",
        "--backend", "onnxruntime", "--batch", "4",
    )  # fmt: skip
    assert code == 0, output
    assert "ffv1 (bgr0, lossless)" in output
    decoded = np.stack([f.to_ndarray(format="bgr24") for f in frames_of(clip)])
    with open_backend(tiny_onnx, "onnxruntime") as backend:
        expected = np.concatenate([backend.run(decoded[i : i + 1])["bokeh"] for i in range(6)])
    result = np.stack(
        [f.to_ndarray(format="bgr24") for f in frames_of(tmp_path / "out" / clip.name)]
    )
    stats = parity_stats(expected, result)
    assert parity_failures(stats, "fp32") == [], stats


@pytest.mark.parametrize(
    ("suffix", "options", "reason"),
    [
        # .mp4 counts its frames; the index first (faststart), so a cut file still opens
        (".mp4", {"movflags": "faststart"}, r"the file ends early \(6 of 12 frames\) at frame 6"),
        # .mkv does not count them: the cut file ends before its duration
        (".mkv", {}, r"the file ends early \(0\.\d+ s of 1\.\d+ s\) at frame \d+"),
    ],
)
def test_a_truncated_clip_fails_at_its_frame_and_leaves_no_output(
    tiny_onnx, tmp_path, suffix, options, reason
):
    whole = write_clip(tmp_path / f"whole{suffix}", list(range(12)), options=options)
    data = whole.read_bytes()
    cut = tmp_path / "in" / f"cut{suffix}"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) * 45 // 100])  # into the frames: some are whole
    fine = write_clip(tmp_path / "in" / "fine.mkv", list(range(3)), audio=False)
    code, output = run_cli(tiny_onnx, tmp_path / "in", "--out", tmp_path / "out")
    assert code == 1, output
    assert re.search(f"FAILED {re.escape(str(cut))}: {reason}", output), output
    assert outputs(tmp_path / "out") == [fine.name]


def test_a_corrupt_clip_fails_at_its_frame_and_leaves_no_output(tiny_onnx, tmp_path):
    whole = write_clip(tmp_path / "whole.mp4", list(range(12)), audio=False)
    data = bytearray(whole.read_bytes())
    start, end = len(data) * 85 // 100, len(data) * 95 // 100  # the last frames' data
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, np.uint8).tobytes()
    broken = tmp_path / "in" / "broken.mp4"
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    code, output = run_cli(tiny_onnx, broken, "--out", tmp_path / "out")
    assert code == 1, output
    assert re.search(rf"FAILED {re.escape(str(broken))}: .+ at frame \d+$", output, re.M), output
    assert outputs(tmp_path / "out") == []


def test_an_avi_output_has_a_constant_rate_and_every_frame(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "vfr.mp4", VFR_PTS, audio=False)
    code, output = run_cli(tiny_onnx, clip, "--out", tmp_path / "out", "--video-format", "avi")
    assert code == 0, output
    assert "constant frame rate (.avi stores no timestamps)" in output
    result = frames_of(tmp_path / "out" / "vfr.avi")
    assert len(result) == len(VFR_PTS)
    assert np.all(np.diff([f.pts for f in result]) == 1)


def test_an_audio_only_file_is_refused_with_the_reason(tiny_onnx, tmp_path):
    sound = write_clip(tmp_path / "sound.mp4", [], video=False)
    code, output = run_cli(tiny_onnx, sound, "--out", tmp_path / "out")
    assert code == 1, output
    assert f"FAILED {sound}: no video stream (only audio)" in output
    assert outputs(tmp_path / "out") == []


def test_a_10_bit_clip_is_converted_to_8_bits_and_says_so(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "deep.mp4", list(range(4)), audio=False, pix_fmt="yuv420p10le")
    code, output = run_cli(tiny_onnx, clip, "--out", tmp_path / "out")
    assert code == 0, output
    assert "; yuv420p10le converted to 8 bits" in output
    with av.open(str(tmp_path / "out" / clip.name)) as result:
        assert result.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_an_hdr_clip_is_refused_with_the_reason(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "hdr.mkv", list(range(2)), audio=False, transfer=16)
    code, output = run_cli(tiny_onnx, clip, "--out", tmp_path / "out")
    assert code == 1, output
    assert f"FAILED {clip}: HDR video (PQ (SMPTE ST 2084) transfer) is not supported" in output
    assert outputs(tmp_path / "out") == []


def test_skip_existing_skips_a_rendered_video(tiny_onnx, rendered):
    clip, result, _ = rendered
    before = result.stat().st_mtime_ns
    code, output = run_cli(tiny_onnx, clip, "--out", result.parent, "--skip-existing")
    assert code == 0, output
    assert "done 0, failed 0, skipped 1" in output
    assert result.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video-codec", "nonesuch"], "this FFmpeg has no encoder 'nonesuch'"),
        (["--video-codec", "aac"], "aac is not a video encoder"),
        (["--video-codec", "mpeg4", "--crf", "20"], "--crf does not apply to mpeg4"),
        (["--video-codec", "ffv1", "--bitrate", "4M"], "ffv1 is lossless"),
        (["--bitrate", "lots"], "bitrate 'lots' is not a positive number"),
    ],
    ids=["unknown", "audio", "crf-mpeg4", "ffv1-bitrate", "bitrate-text"],
)
def test_video_settings_that_cannot_apply_are_bad_usage(
    tiny_onnx, rendered, tmp_path, args, message
):
    clip, _, _ = rendered
    code, output = run_cli(tiny_onnx, clip, "--out", tmp_path, *args)
    assert code == 2, output
    assert message in output
    assert outputs(tmp_path) == []


@pytest.mark.slow
def test_sigterm_mid_video_leaves_no_partial_file(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "long.mp4", list(range(240)), size=(360, 640), audio=False)
    out = tmp_path / "out"
    log = tmp_path / "log"
    command = [sys.executable, "-m", "dbsi.runtime.cli", str(tiny_onnx), str(clip)]
    command += ["--out", str(out), "--no-progress", "--backend", "onnxruntime"]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in out.glob(".long.*.partial.mp4")] if out.exists() else []
        if partial and partial[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    assert process.poll() is None, log.read_text()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143, log.read_text()
    assert "stopped: SIGTERM received" in log.read_text()
    assert outputs(out) == []
