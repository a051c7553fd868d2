"""``bokeh-bench video``: speed, quality and flicker of rendered video against true defocused
clips (``bokeh-train synth --video``).

Each model runs on each backend at each temporal strength (``bokeh-run --temporal``) through
``bokeh-run``'s own video path (``dbsi.runtime.video_run.VideoRun``: PyAV decode, batches
through the backend, temporal smoothing, encode), so frames per second include decoding and
encoding. The output is lossless FFV1 in Matroska, as the truth is, so the scores see the
render and no codec loss.

Scores per clip, against the truth: PSNR and SSIM of each frame by the protocol of
``dbsi.train.metrics``, averaged over the frames; and the flicker, the mean absolute change of
the output from frame t-1 to frame t (8-bit levels, every channel) over the pixels where the
truth does not change (``static_mask``): there the ideal output stands still, so any change is
flicker. The noisy input clips are scored the same way, a baseline that shows the scale.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from dbsi.benchmarks.contact_sheet import Section, draw_sheet, video_section
from dbsi.benchmarks.machine import describe
from dbsi.benchmarks.models import runtimes_for
from dbsi.benchmarks.run_report import look_at_machine, progress_bar
from dbsi.runtime.backend import Backend
from dbsi.runtime.errors import BackendError
from dbsi.runtime.pipeline import Job, RunOptions
from dbsi.runtime.registry import backend_for, choose_backend, open_backend
from dbsi.runtime.sources import Source
from dbsi.runtime.video import EncodeSettings, VideoError, check_video_settings, load_av
from dbsi.runtime.video_run import VideoRun
from dbsi.train.metrics import protocol_ssim, psnr
from dbsi.train.synthetic_video import CAMERAS, CODEC, EXTENSION, MANIFEST, static_mask

DEFAULT_STRENGTHS = (0.0, 0.6)
# The generator's own lossless codec and container: RGB in, RGB out, bit for bit.
LOSSLESS = EncodeSettings(codec=CODEC)
INPUT_BACKEND = "input (no render)"
METRICS = ("psnr_db", "ssim", "flicker", "maps_change")

COLUMNS = [
    ("model", "model", ""),
    ("backend", "backend", ""),
    ("precision", "precision", ""),
    ("temporal", "temporal", "g"),
    ("clips", "clips", "d"),
    ("frames/s", "frames_per_s", ".1f"),
    ("PSNR dB", "psnr_db", ".3f"),
    ("SSIM", "ssim", ".4f"),
    ("flicker", "flicker", ".3f"),
    ("flicker vs independent", "flicker_ratio", ".3f"),
    ("PSNR change dB", "psnr_change_db", "+.3f"),
    ("PSNR static", "psnr_db_static", ".3f"),
    ("PSNR pan", "psnr_db_pan", ".3f"),
    ("flicker static", "flicker_static", ".3f"),
    ("flicker pan", "flicker_pan", ".3f"),
    ("maps change static", "maps_change_static", ".4f"),
    ("maps change pan", "maps_change_pan", ".4f"),
    ("failed", "failed", "d"),
]


@dataclasses.dataclass(frozen=True)
class Clip:
    """One clip of the set: its noisy input, its true defocused clip and its camera."""

    name: str
    original: Path
    bokeh: Path
    camera: str


def read_manifest(data: Path) -> tuple[dict[str, Any], list[Clip]]:
    """The manifest of ``data`` and its clips; ValueError (one line) when there is no complete
    set there."""
    try:
        manifest = json.loads((data / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{data}: no {MANIFEST}; make a set with: bokeh-train synth --video --out {data}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{data / MANIFEST}: cannot read it ({exc})") from None
    if not isinstance(manifest, dict) or not manifest.get("clips"):
        raise ValueError(
            f"{data / MANIFEST}: lists no clips (an interrupted bokeh-train synth --video? run "
            "it again)"
        )
    try:
        clips = [
            Clip(str(c["name"]), data / c["original"], data / c["bokeh"], str(c["camera"]))
            for c in manifest["clips"]
        ]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{data / MANIFEST}: a clip entry is not one of synth --video's "
                         f"({type(exc).__name__}: {exc})") from None  # fmt: skip
    missing = [p for clip in clips for p in (clip.original, clip.bokeh) if not p.is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: listed in {MANIFEST} but missing")
    return manifest, clips


def check_models(models: Sequence[Path]) -> None:
    """ValueError or BackendError (one line) unless every model is an exported one here."""
    if not models:
        raise ValueError("give at least one --model (an .onnx or a TensorRT .engine)")
    for model in models:
        if not model.is_file():
            raise ValueError(f"{model}: no such model file")
        backend_for(model)  # a checkpoint or an unknown suffix: BackendError, with what to do


def backend_runs(
    model: Path, backends: Sequence[str], gpu: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(backend, options) to open ``model`` with: the named backends (``auto`` resolved, so
    no backend runs twice), or with none named every one here that opens it
    (``runtimes_for``)."""
    if not backends:
        return runtimes_for(backend_for(model), gpu)
    names = [choose_backend(model)[0] if name == "auto" else name for name in backends]
    return [(name, {}) for name in dict.fromkeys(names)]


def frames_of(path: Path) -> Iterator[np.ndarray]:
    """The frames of a clip's first video stream, one at a time (H x W x 3 RGB uint8): memory
    stays flat however long the clip."""
    av = load_av()
    try:
        with av.open(str(path)) as clip:
            for frame in clip.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode ({exc})") from None


def score_clip(truth: Path, candidate: Path) -> dict[str, Any]:
    """``candidate`` (a clip of the same frames) against ``truth``: frames, mean PSNR and SSIM
    over the frames, the flicker (module docstring; None where the truth changes everywhere)
    and the share of pixels it is measured over. ValueError when the clips differ in length or
    frame size."""
    psnrs, ssims = [], []
    change, still, pixels = 0.0, 0, 0
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for want, got in itertools.zip_longest(frames_of(truth), frames_of(candidate)):
        if want is None or got is None:
            more = "more" if want is None else "fewer"
            raise ValueError(f"{candidate} has {more} frames than {truth}")
        psnrs.append(psnr(want, got))  # ValueError when the sizes differ
        ssims.append(protocol_ssim(want, got))
        if previous is not None:
            mask = static_mask(np.stack([previous[0], want]))[0]
            moved = np.abs(got.astype(np.int16) - previous[1].astype(np.int16))
            change += float(moved[mask].sum())
            still += int(mask.sum())
            pixels += mask.size
        previous = (want, got)
    if not psnrs:
        raise ValueError(f"{candidate}: no frames")
    return {
        "frames": len(psnrs),
        "psnr_db": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "flicker": change / (3 * still) if still else None,
        "static_share": still / pixels if pixels else None,
    }


def mean_of(scores: Sequence[dict[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over the scores that have it; None when none has."""
    values = [s[key] for s in scores if s.get(key) is not None]
    return float(np.mean(values)) if values else None


def summary_row(label: dict[str, Any], scores: Sequence[dict[str, Any]], failed: int) -> dict:
    """One row: ``label`` (model, backend, precision, temporal), the clips scored, and each
    metric's mean over them, over all clips and per camera kind."""
    row = {**label, "clips": len(scores), "failed": failed}
    row["frames"] = sum(s["frames"] for s in scores)
    for key in METRICS:
        row[key] = mean_of(scores, key)
        for camera in CAMERAS:
            row[f"{key}_{camera}"] = mean_of([s for s in scores if s["camera"] == camera], key)
    return row


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def change(value: float | None, base: float | None) -> float | None:
    """``value - base`` in dB; None when either is missing or infinite (identical frames)."""
    if value is None or base is None or not math.isfinite(value) or not math.isfinite(base):
        return None
    return value - base


def compare_with_independent(rows: list[dict[str, Any]]) -> None:
    """Fill each rendered row's flicker ratio and PSNR change against the temporal 0 row of the
    same model and backend (all clips and per camera)."""
    independent = {(r["model"], r["backend"]): r for r in rows if r["temporal"] == 0}
    for row in rows:
        base = independent.get((row["model"], row["backend"]))
        if base is None:
            continue
        for suffix in ("", *(f"_{camera}" for camera in CAMERAS)):
            row[f"flicker_ratio{suffix}"] = ratio(row[f"flicker{suffix}"], base[f"flicker{suffix}"])
            row[f"psnr_change{suffix}_db"] = change(
                row[f"psnr_db{suffix}"], base[f"psnr_db{suffix}"]
            )


def quiet(line: str) -> None:
    """VideoRun's per-clip lines: the report carries the figures, and failures come back in
    its summary."""


class MapsChange:
    """The weight maps' mean change from one frame to the next: per pixel of the network
    size, the L1 distance between the frames' K maps (0: still, 2: all weight moved), averaged
    over pixels and frame pairs. What temporal smoothing steadies, before any pixel noise."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None
        self.total, self.pairs = 0.0, 0

    def add(self, maps: np.ndarray) -> None:
        """The next frames' maps, N x K x h x w, in order."""
        frames = maps if self.previous is None else np.concatenate([self.previous, maps])
        if len(frames) > 1:
            self.total += float(np.abs(np.diff(frames, axis=0)).sum(axis=1).mean(axis=(1, 2)).sum())
            self.pairs += len(frames) - 1
        self.previous = frames[-1:]

    @property
    def mean(self) -> float | None:
        return self.total / self.pairs if self.pairs else None


def render_clip(
    backend: Backend, clip: Clip, strength: float, batch: int, folder: Path
) -> tuple[Path, float, int, float | None]:
    """Render ``clip`` as ``bokeh-run --temporal strength --video-codec ffv1`` does, into
    ``folder``: (output, seconds, frames written, the maps' ``MapsChange``: None for a graph
    without the maps output). VideoError with the reason when it fails."""
    job = Job(
        Source(clip.original, PurePath(clip.original.name)), folder / f"{clip.name}{EXTENSION}"
    )
    options = RunOptions(batch=batch, progress=False, temporal=strength)
    maps = MapsChange()
    run = VideoRun(backend, [job], options, LOSSLESS, report=quiet, on_maps=maps.add)
    summary = run.execute()
    if summary.failures:
        raise VideoError(summary.failures[0].reason)
    return job.output, summary.seconds, run.frames, maps.mean


def measure_row(
    backend: Backend,
    label: dict[str, Any],
    clips: Sequence[Clip],
    batch: int,
    folder: Path,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Render and score every clip for one row: (the row, its per-clip rows). First the first
    clip is rendered untimed ``backend.warmup_calls`` times: every clip of a set has the same
    size and length, so that gives each input shape of the row (full and last batch, first and
    carried temporal state) the calls that bring it to its steady speed (OpenVINO compiles a
    model per shape on its second call), a cost a long video pays once."""
    strength = label["temporal"]
    for _ in range(backend.warmup_calls):
        try:
            render_clip(backend, clips[0], strength, batch, folder)[0].unlink()
        except VideoError as exc:  # the timed render of the clip reports it
            log(f"warm-up of {label['backend']} at temporal {strength:g} failed: {exc}")
            break
    per_clip, scores = [], []
    seconds = frames = 0
    desc = f"{label['backend']} temporal {strength:g}"
    with progress_bar(len(clips), desc, "clip") as bar:
        for clip in clips:
            entry = {**label, "clip": clip.name, "camera": clip.camera}
            try:
                output, took, written, maps = render_clip(backend, clip, strength, batch, folder)
                try:
                    score = score_clip(clip.bokeh, output)
                finally:
                    output.unlink(missing_ok=True)
            except (VideoError, ValueError) as exc:
                log(f"FAILED {clip.original} ({desc}): {exc}")
                per_clip.append({**entry, "failure": str(exc)})
            else:
                seconds += took
                frames += written
                entry.update(score, maps_change=maps, seconds=took, frames_per_s=written / took)
                per_clip.append(entry)
                scores.append(entry)
            bar.update()
    row = summary_row(label, scores, failed=len(clips) - len(scores))
    row["seconds"] = seconds
    row["frames_per_s"] = frames / seconds if seconds else None
    return row, per_clip


def picked_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The ``wanted`` frames of a clip by index, BGR (only those are kept in memory)."""
    return {i: f[..., ::-1] for i, f in enumerate(frames_of(path)) if i in wanted}


def strip_section(
    backend: Backend,
    clip: Clip,
    frames: int,
    strengths: Sequence[float],
    batch: int,
    folder: Path,
) -> Section:
    """Three frames of ``clip`` (``frames`` long): its input, its render by ``backend`` at
    each temporal strength, its truth, and how much each changed since the frame before."""
    shown = sorted({max(1, frames * k // 4) for k in (1, 2, 3)})
    wanted = {i for index in shown for i in (index - 1, index)}
    clips = [("input", picked_frames(clip.original, wanted))]
    for strength in strengths:
        output = render_clip(backend, clip, strength, batch, folder)[0]
        try:
            clips.append((f"temporal {strength:g}", picked_frames(output, wanted)))
        finally:
            output.unlink()
    clips.append(("ground truth", picked_frames(clip.bokeh, wanted)))
    title = f"clip {clip.name} ({clip.camera} camera) on {backend.name}"
    return video_section(title, clips, shown)


def input_baseline(clips: Sequence[Clip]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The noisy inputs scored as if they were renders: the scale of the flicker figures."""
    label = {"model": "-", "backend": INPUT_BACKEND, "precision": "-", "temporal": None}
    per_clip = [
        {**label, "clip": c.name, "camera": c.camera, **score_clip(c.bokeh, c.original)}
        for c in clips
    ]
    return summary_row(label, per_clip, failed=0), per_clip


def video_report(
    data: Path,
    models: Sequence[Path],
    *,
    backends: Sequence[str] = (),
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    batch: int = 4,
    strip: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``bokeh-bench video``'s report (module docstring): a row per model x backend x temporal
    strength, after the inputs' own row. Temporal 0 always runs: the other rows are compared
    with it. ValueError or BackendError (one line) for a bad set, a model that is no exported
    one, no lossless encoder here, or no backend that opens. ``strip``: where to draw three
    frames of the first static clip on the first backend (``strip_section``)."""
    manifest, clips = read_manifest(data)
    check_models(models)
    try:
        check_video_settings(LOSSLESS)
    except VideoError as exc:
        raise ValueError(str(exc)) from None
    machine, gpu = look_at_machine()
    notes: list[str] = []
    if 0 not in strengths:
        notes.append("temporal 0 added: the other rows are compared with it")
    strengths = sorted({0.0, *strengths})
    log(f"Scoring the {len(clips)} input clips of {data} against their truth ...")
    baseline, per_clip = input_baseline(clips)
    rows = [baseline]
    opened: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    drawn: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="bokeh-bench-video-") as work:
        for model in models:
            for name, options in backend_runs(model, backends, gpu):
                try:
                    backend = open_backend(model, name, **options)
                except (BackendError, ValueError, ImportError, OSError) as exc:
                    reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
                    skipped.append({"name": f"{model} ({name})", "reason": reason})
                    continue
                with backend:
                    takes = backend.metadata.takes_temporal
                    opened.append(
                        {"model": str(model), "name": backend.name, "device": backend.device,
                         "precision": backend.precision, "takes_temporal": takes}
                    )  # fmt: skip
                    if not takes and strengths != [0.0]:
                        notes.append(
                            f"{model} ({backend.name}): exported before the temporal inputs, so "
                            "temporal 0 only (re-export it with bokeh-export onnx to smooth)"
                        )
                    for strength in strengths if takes else [0.0]:
                        label = {"model": str(model), "backend": backend.name,
                                 "precision": backend.precision, "temporal": strength}  # fmt: skip
                        row, clip_rows = measure_row(backend, label, clips, batch, Path(work), log)
                        rows.append(row)
                        per_clip += clip_rows
                    if strip is not None and not drawn:
                        shown = next((c for c in clips if c.camera == "static"), clips[0])
                        used = strengths if takes else [0.0]
                        frames = int(manifest["frames"])
                        section = strip_section(backend, shown, frames, used, batch, Path(work))
                        drawn.append(draw_sheet([section], strip, title=f"{model}: {data}"))
                        log(f"Strip: {strip}")
    if not opened:
        raise ValueError(
            "no backend could be opened here: " + "; ".join(s["reason"] for s in skipped)
        )
    compare_with_independent(rows)
    notes += [f"not run: {s['name']}: {s['reason']}" for s in skipped]
    notes += report_notes(clips, per_clip, batch)
    return {
        "command": "video",
        "machine": machine,
        "machine_summary": describe(machine),
        "data": str(data),
        "set": {k: manifest.get(k) for k in ("count", "frames", "fps", "height", "width", "noise")},
        "models": [str(m) for m in models],
        "backends": opened,
        "skipped": skipped,
        "temporal": strengths,
        "batch": batch,
        "rows": rows,
        "per_clip": per_clip,
        "notes": notes,
    }


def report_notes(clips: Sequence[Clip], per_clip: Sequence[dict[str, Any]], batch: int) -> list:
    """What the figures mean, and how much of each camera kind the flicker is measured over."""
    shares = []
    for camera in CAMERAS:
        mine = [r for r in per_clip if r["backend"] == INPUT_BACKEND and r["camera"] == camera]
        share = mean_of(mine, "static_share")
        if share is not None:
            shares.append(f"{share:.0%} of the pixels of {camera} clips")
    return [
        f"{len(clips)} clips, rendered through bokeh-run's video path (PyAV decode, batch {batch}, "
        "lossless FFV1 .mkv into a temporary folder); frames/s over every clip of the row, "
        "decoding and encoding included; before each row the first clip is rendered untimed as "
        "many times as the backend needs to reach its steady speed (its warmup_calls).",
        "PSNR and SSIM: each frame against the true defocused frame (the paper author's "
        "protocol), mean over the frames, then over the clips.",
        "flicker: mean absolute change of the output from one frame to the next, in 8-bit "
        "levels over every channel, where the truth does not change (" + ", ".join(shares) + "); "
        f"'{INPUT_BACKEND}' is the noisy input clip scored the same way.",
        "flicker vs independent: the row's flicker over its temporal 0 row's (same model and "
        "backend); PSNR change: its PSNR minus that row's. Static and pan: the clips of each "
        "camera kind.",
        "maps change: the weight maps' mean change from frame to frame, at the network size "
        "(per pixel the L1 distance of the maps, 0 still, 2 all weight moved): what --temporal "
        "steadies; the pixel flicker also holds the noise the blend keeps where it stays sharp.",
    ]
