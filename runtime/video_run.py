"""The videos of a ``bokeh-run``: each clip is one item, streamed batch by batch (decode a batch,
render it, encode it, repeat) into a temporary file that is renamed onto its output name only
when the whole clip is written (``dbsi.runtime.atomic``).

A clip that fails part way (a corrupt or truncated file, an encoder error) is reported with
the frame it failed at and leaves no output; the run goes on with the next. A stop signal
(``dbsi.runtime.stop``) is read between batches: the clip under way is abandoned (its
temporary file deleted) and counted as left, like the clips not started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from dbsi.runtime.atomic import atomic_path
from dbsi.runtime.backend import Backend
from dbsi.runtime.contract import OUTPUT_NAME, TEMPORAL_MAPS_NAME
from dbsi.runtime.pipeline import Job, RunOptions, Summary, disk_refusal
from dbsi.runtime.sources import Problem
from dbsi.runtime.stop import StopSignals
from dbsi.runtime.temporal import TemporalSmoother
from dbsi.runtime.video import EncodeSettings, VideoError, VideoTranscode


class _Stopped(Exception):
    """A stop signal came while a clip was being rendered."""


def merged(photos: Summary, videos: Summary) -> Summary:
    """One summary for a run's photos and videos (a video counts as one item)."""
    stopped = photos.stopped or videos.stopped
    return Summary(
        done=photos.done + videos.done,
        failed=photos.failed + videos.failed,
        skipped=photos.skipped + videos.skipped,
        seconds=photos.seconds + videos.seconds,
        failures=photos.failures + videos.failures,
        left=photos.left + videos.left,
        stopped=stopped,
    )


class VideoRun:
    """Renders ``jobs`` (one clip each) with ``backend``, ``options.batch`` frames per
    inference, encoding as ``settings`` says; ``execute`` drives it."""

    def __init__(
        self,
        backend: Backend,
        jobs: Sequence[Job],
        options: RunOptions,
        settings: EncodeSettings,
        report: Callable[[str], None] = tqdm.write,
        stop: StopSignals | None = None,
        on_maps: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.backend = backend
        #: called with the weight maps each batch's frames used (N x K x h x w, the graph's
        #: ``temporal_maps``; graphs without it never call it): what benchmarks measure
        self.on_maps = on_maps
        self.jobs = jobs
        self.options = options
        self.settings = settings
        self.report = report
        self.stop = stop
        self.batch = backend.batch_size(options.batch)
        self.summary = Summary()
        self.frames = 0  # frames rendered and written, every clip together
        self.seconds_per_pixel: float | None = None
        self.started = time.perf_counter()

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.requested is not None

    def snapshot(self) -> Summary:
        """The summary so far; when stopping, every clip not finished counts as left (safe to
        call from the stop watcher's thread)."""
        summary = dataclasses.replace(self.summary, failures=list(self.summary.failures))
        summary.seconds = time.perf_counter() - self.started
        if self.stopping():
            summary.stopped = f"{self.stop.requested.name} received"
            summary.left = len(self.jobs) - summary.done - summary.failed - summary.skipped
        return summary

    def execute(self, after: Summary | None = None) -> Summary:
        """Render every clip not skipped, one after the other; never raises for one clip.
        ``after``: the summary of the photos rendered before, whose early stop (a full disk)
        leaves every clip."""
        self.started = time.perf_counter()
        if after is not None and after.stopped is not None:
            self.summary.left = len(self.jobs)
            self.summary.stopped = after.stopped
            return dataclasses.replace(self.summary)
        for job in self.jobs:
            if self.stopping():
                break
            if self.options.skip_existing and job.output.exists():
                self.summary.skipped += 1
                continue
            try:
                self.render_clip(job)
            except _Stopped:
                break
            except VideoError as exc:
                self.fail(job, str(exc))
            except OSError as exc:
                self.fail(job, disk_refusal(exc) or f"cannot write {job.output}: {exc}")
            except Exception as exc:  # PyAV refusing a setting, say: this clip only
                self.fail(job, f"{type(exc).__name__}: {exc}")
            else:
                self.summary.done += 1
        return self.snapshot()

    def fail(self, job: Job, reason: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append(Problem(str(job.source.path), reason))
        self.report(f"FAILED {job.source.path}: {reason}")

    def render_clip(self, job: Job) -> None:
        """Decode, render and encode one clip into its output, atomically."""
        began = time.perf_counter()
        with (
            atomic_path(job.output) as tmp,
            VideoTranscode(job.source.path, tmp, self.settings) as video,
        ):
            self.report(f"video {job.source.path}: {video.describe()}")
            reason = self.backend.accepts((self.batch, video.height, video.width, 3))
            if reason is not None:
                raise VideoError(f"outside what the model accepts: {reason}")
            smoother = None
            if self.options.temporal > 0 and self.backend.metadata.takes_temporal:
                smoother = TemporalSmoother(self.options.temporal, self.backend.metadata.maps)
            with tqdm(
                total=video.stream.frames or None,
                unit="frame",
                desc=job.source.path.name,
                disable=not self.options.progress,
                leave=False,
                mininterval=0.5,
            ) as bar:
                for frames in video.batches(self.batch):
                    if self.stopping():
                        raise _Stopped
                    try:
                        bokeh = self.render(frames, smoother)
                    except Exception as exc:  # any backend error fails this clip only
                        reason = f"inference failed: {type(exc).__name__}: {exc}"
                        raise VideoError(reason, video.written) from None
                    video.write(bokeh)
                    bar.update(len(frames))
            if self.stopping():
                raise _Stopped
            video.finish()
        seconds = time.perf_counter() - began
        self.frames += video.written
        smoothed = ""
        if smoother is not None:
            cuts = ", ".join(map(str, smoother.cuts)) or "none"
            smoothed = f", smoothed over time at {smoother.strength:g} (scene cuts at: {cuts})"
        self.report(
            f"video {job.output}: {video.written} frames in {seconds:.1f} s "
            f"({video.written / seconds:.2f} frames/s){smoothed}"
        )

    def render(self, frames: np.ndarray, smoother: TemporalSmoother | None) -> np.ndarray:
        """The rendered frames of one batch of consecutive frames (uint8 N x H x W x 3 BGR),
        their weight maps smoothed over time by ``smoother`` (None: each frame on its own),
        which carries its state from batch to batch."""
        count = len(frames)
        # A profile whose minimum batch exceeds what is left runs copies of the last frame
        # (the clip's end: the copies follow every real frame, so they change none of them).
        short = self.backend.min_batch - count
        if short > 0:
            frames = np.concatenate([frames, np.repeat(frames[-1:], short, axis=0)])
        temporal = None if smoother is None else smoother.feed(frames)
        pixels = frames.size // 3
        expected = None if self.seconds_per_pixel is None else self.seconds_per_pixel * pixels
        busy = self.stop.uninterruptible(expected) if self.stop else contextlib.nullcontext()
        with busy:
            began = time.perf_counter()
            outputs = self.backend.run(frames, self.options.aperture, temporal)
            rate = (time.perf_counter() - began) / pixels
        if smoother is not None:
            smoother.update(outputs[TEMPORAL_MAPS_NAME], count)
        if self.on_maps is not None and TEMPORAL_MAPS_NAME in outputs:
            self.on_maps(outputs[TEMPORAL_MAPS_NAME][:count])
        if self.seconds_per_pixel is None or rate < self.seconds_per_pixel:
            self.seconds_per_pixel = rate
        return outputs[OUTPUT_NAME][:count]
