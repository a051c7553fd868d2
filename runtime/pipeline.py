"""The batch run: decode on worker threads, infer on this thread, encode on worker threads.

Every stage is bounded (a fixed number of decodes in flight, a fixed number of decoded
pictures waiting for a batch, a fixed number of encodes in flight), so memory stays flat
whatever the number of files. Same-size pictures are grouped into batches of up to ``batch``
(brought within the backend's ``min_batch``..``max_batch``; a short group is padded);
when too many sizes are waiting, the oldest group runs as it is. Any failure is recorded
against its file with the reason, and the run goes on, with one exception: a disk that
refuses ``DISK_FAILURE_LIMIT`` writes in a row (full, failing, read-only, over quota) is not a
per-file problem, so the run stops taking pictures.

A stop signal (``dbsi.runtime.stop``) also stops the taking of pictures: the batch in flight
is finished and its pictures written, what is being written is waited for, and the pictures
not started are counted as ``left`` (``--skip-existing`` renders them later).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dbsi.runtime.atomic import DISK_ERRNOS, atomic_write_bytes
from dbsi.runtime.backend import Backend
from dbsi.runtime.contract import OUTPUT_NAME, WEIGHTS_NAME
from dbsi.runtime.images import DEFAULT_QUALITY, ImageError, Picture, read_image, write_image
from dbsi.runtime.sources import Problem, Source
from dbsi.runtime.stop import StopSignals
from dbsi.runtime.weight_maps import WEIGHTS_SUFFIX, colour_weights

# atomic_path's temporary names: ".{stem}.{8 random chars}.partial{suffix}".
PARTIAL_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.partial(?P<suffix>\.[^./]+)$")
#: writes refused by the disk (``DISK_ERRNOS``) in a row that stop a run
DISK_FAILURE_LIMIT = 3


@dataclasses.dataclass(frozen=True)
class Job:
    """One picture to render and the files it produces."""

    source: Source
    output: Path
    weights_output: Path | None = None

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.output,) if self.weights_output is None else (self.output, self.weights_output)


@dataclasses.dataclass
class RunOptions:
    batch: int = 1
    quality: int = DEFAULT_QUALITY
    skip_existing: bool = False
    workers: int = 2
    save_weights: bool = False
    progress: bool = True
    #: every picture's aperture (``dbsi.train.aperture``; 1 renders as trained)
    aperture: float = 1.0
    #: videos: how much of each frame's weight maps the next carries (``dbsi.runtime.temporal``;
    #: 0 renders every frame on its own)
    temporal: float = 0.0
    #: the output folder, named when a full disk stops the run
    out_dir: Path | None = None


@dataclasses.dataclass
class Summary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[Problem] = dataclasses.field(default_factory=list)
    #: pictures not started because the run stopped early
    left: int = 0
    #: why the run stopped before its end ("SIGTERM received", or the disk's reason); None:
    #: it did not
    stopped: str | None = None

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        left = f", left {self.left}" if self.stopped is not None else ""
        return (
            f"done {self.done}, failed {self.failed}, skipped {self.skipped}{left} in "
            f"{self.seconds:.1f} s ({self.images_per_second:.2f} images/s)"
        )


def disk_refusal(exc: BaseException) -> str | None:
    """The system's message in lower case ("no space left on device") when ``exc`` is the
    disk refusing a write (``DISK_ERRNOS``), None for any other error."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return (exc.strerror or os.strerror(exc.errno)).lower()
    return None


class WriteFailures:
    """Counts the writes the disk refused (``disk_refusal``) since the last write that
    succeeded. A full or failing disk refuses every write, so after ``limit`` in a row the run
    stops instead of decoding and rendering pictures it cannot store; other failures (a
    picture that cannot be encoded) neither count nor reset the count."""

    def __init__(self, limit: int = DISK_FAILURE_LIMIT) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.last: str | None = None

    def succeeded(self) -> None:
        self.in_a_row = 0

    def failed(self, exc: BaseException) -> bool:
        """Record a failed write; True when it makes ``limit`` disk refusals in a row."""
        refusal = disk_refusal(exc)
        if refusal is None:
            return False
        self.in_a_row += 1
        self.last = refusal
        return self.in_a_row >= self.limit


def plan_jobs(
    sources: Sequence[Source], out_dir: Path, fmt: str | None, save_weights: bool
) -> tuple[list[Job], list[Problem]]:
    """Output paths mirroring each source's relative path under ``out_dir``; an output that
    would overwrite an input, or another job's output, is a problem, not a job."""
    jobs: list[Job] = []
    problems: list[Problem] = []
    inputs = {s.path.resolve() for s in sources}
    claimed: dict[Path, Path] = {}
    for source in sources:
        suffix = f".{fmt.lower().lstrip('.')}" if fmt else source.relative.suffix
        output = out_dir / source.relative.with_suffix(suffix)
        weights = output.with_name(output.stem + WEIGHTS_SUFFIX) if save_weights else None
        targets = [output] if weights is None else [output, weights]
        clash = next((t for t in targets if t.resolve() in inputs), None)
        if clash is not None:
            problems.append(
                Problem(str(source.path), f"output {clash} is an input; refusing to overwrite it")
            )
            continue
        owner = next((claimed[t] for t in targets if t in claimed), None)
        if owner is not None:
            problems.append(
                Problem(str(source.path), f"output {output} is already the output of {owner}")
            )
            continue
        for target in targets:
            claimed[target] = source.path
        jobs.append(Job(source, output, weights))
    return jobs, problems


def remove_stale_partials(jobs: Sequence[Job]) -> int:
    """Delete temporary files that a killed run left for this run's own outputs (a rename
    never happened, so they are incomplete). Files of other runs and shards are left alone."""
    targets = {path for job in jobs for path in job.outputs}
    removed = 0
    for folder in {path.parent for path in targets}:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = PARTIAL_NAME.match(entry.name)
            if match and folder / (match["stem"] + match["suffix"]) in targets:
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
    return removed


def _write_outputs(job: Job, picture: Picture, weights: np.ndarray | None, quality: int) -> None:
    if weights is not None and job.weights_output is not None:
        ok, png = cv2.imencode(".png", colour_weights(weights))
        if not ok:
            raise ImageError("OpenCV cannot encode the weight picture")
        atomic_write_bytes(job.weights_output, png.tobytes())
    write_image(job.output, picture, quality)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ImageError):
        return str(exc)
    refusal = disk_refusal(exc)
    if refusal is not None:
        return refusal
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


class Run:
    """One run over ``jobs``; ``execute`` drives it. ``stop``: the signals that stop it early
    (``dbsi.runtime.stop``), read between pictures."""

    def __init__(
        self,
        backend: Backend,
        jobs: Sequence[Job],
        options: RunOptions,
        report: Callable[[str], None] = tqdm.write,
        stop: StopSignals | None = None,
    ) -> None:
        self.backend = backend
        self.jobs = jobs
        self.options = options
        self.report = report
        self.stop = stop
        self.summary = Summary()
        self.bar = tqdm(
            total=len(jobs),
            unit="img",
            desc="bokeh",
            # No bar for a run of videos only: each clip has its own.
            disable=not options.progress or not jobs,
            file=sys.stderr,
            mininterval=0.5,
        )
        self.decoding: collections.deque[tuple[Job, Future]] = collections.deque()
        self.encoding: collections.deque[tuple[Job, Future]] = collections.deque()
        self.groups: dict[tuple[int, int], list[tuple[Job, Picture]]] = {}
        self.waiting = 0
        workers = max(1, options.workers)
        self.batch = batch = backend.batch_size(options.batch)
        self.lookahead = 2 * workers + batch
        self.max_waiting = 2 * batch
        self.max_encoding = workers + batch
        self.write_failures = WriteFailures()
        #: why the run stopped taking pictures by itself (the disk), None while it did not
        self.halted: str | None = None
        #: the fastest inference seen, seconds per pixel: what a batch in flight is expected
        #: to take when a stop signal comes
        self.seconds_per_pixel: float | None = None
        self.started = time.perf_counter()

    def stopping(self) -> bool:
        """True once no new picture is to be started: a stop signal, or a disk refusing
        writes."""
        signalled = self.stop is not None and self.stop.requested is not None
        return signalled or self.halted is not None

    def snapshot(self) -> Summary:
        """The summary so far, with every picture not accounted for counted as left (safe to
        call from another thread, as the stop watcher does)."""
        summary = dataclasses.replace(self.summary, failures=list(self.summary.failures))
        summary.seconds = time.perf_counter() - self.started
        # Written but not collected yet (list() of a deque is one step for other threads).
        written = [f for _, f in list(self.encoding) if f.done() and not f.cancelled()]
        summary.done += sum(1 for f in written if f.exception() is None)
        if self.stop is not None and self.stop.requested is not None:
            summary.stopped = f"{self.stop.requested.name} received"
        elif self.halted is not None:
            summary.stopped = self.halted
        if summary.stopped is not None:
            summary.left = len(self.jobs) - summary.done - summary.failed - summary.skipped
        return summary

    def fail(self, job: Job, reason: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append(Problem(str(job.source.path), reason))
        self.report(f"FAILED {job.source.path}: {reason}")
        self.bar.update(1)

    def finish_encodes(self, keep: int) -> None:
        """Collect finished encodes; wait for the oldest until at most ``keep`` are in flight."""
        while self.encoding and (len(self.encoding) > keep or self.encoding[0][1].done()):
            job, future = self.encoding.popleft()
            exc = future.exception()
            if exc is None:
                self.summary.done += 1
                self.bar.update(1)
                self.write_failures.succeeded()
                continue
            self.fail(job, _reason(exc))
            if self.write_failures.failed(exc) and self.halted is None:
                where = self.options.out_dir or job.output.parent
                self.halted = (
                    f"{self.write_failures.in_a_row} writes in a row failed "
                    f"({self.write_failures.last}) on {where}"
                )

    def uninterruptible(self, pixels: int) -> contextlib.AbstractContextManager:
        """Tells the stop watcher that an inference of ``pixels`` is in flight and how long it
        should take."""
        if self.stop is None:
            return contextlib.nullcontext()
        rate = self.seconds_per_pixel
        return self.stop.uninterruptible(None if rate is None else rate * pixels)

    def infer(self, group: list[tuple[Job, Picture]]) -> None:
        self.waiting -= len(group)
        if self.stopping():  # the group's pictures are left
            return
        pictures = [picture.bgr for _, picture in group]
        # A profile whose minimum batch exceeds what is left runs copies of the last picture;
        # their outputs are dropped below.
        pictures += pictures[-1:] * (self.backend.min_batch - len(pictures))
        batch = np.stack(pictures)
        try:
            with self.uninterruptible(batch.size // 3):
                began = time.perf_counter()
                outputs = self.backend.run(batch, self.options.aperture)
                rate = (time.perf_counter() - began) / (batch.size // 3)
        except Exception as exc:  # any backend error fails this batch only; the run goes on
            for job, _ in group:
                self.fail(job, f"inference failed: {_reason(exc)}")
            return
        if self.seconds_per_pixel is None or rate < self.seconds_per_pixel:
            self.seconds_per_pixel = rate
        weights = outputs.get(WEIGHTS_NAME) if self.options.save_weights else None
        # A stop signal lets the batch finish: its pictures are written. A disk that refuses
        # writes does not: the rest of the batch is left.
        for i, (job, picture) in enumerate(group):
            if self.halted is not None:
                break
            result = Picture(outputs[OUTPUT_NAME][i], picture.alpha)
            self.finish_encodes(self.max_encoding - 1)
            future = self.encode_pool.submit(
                _write_outputs,
                job,
                result,
                None if weights is None else weights[i],
                self.options.quality,
            )
            self.encoding.append((job, future))
        self.finish_encodes(self.max_encoding)

    def queue_decodes(self, pending: Iterator[Job]) -> None:
        while len(self.decoding) < self.lookahead and not self.stopping():
            job = next(pending, None)
            if job is None:
                return
            if self.options.skip_existing and all(p.exists() for p in job.outputs):
                self.summary.skipped += 1
                self.bar.update(1)
                continue
            self.decoding.append((job, self.decode_pool.submit(read_image, job.source.path)))

    def take(self, job: Job, picture: Picture) -> None:
        """Put a decoded picture in its size group; run groups that are full, or the oldest
        group when too many pictures wait."""
        reason = self.backend.accepts((self.batch, *picture.size, 3))
        if reason is not None:
            self.fail(job, f"outside what the model accepts: {reason}")
            return
        group = self.groups.setdefault(picture.size, [])
        group.append((job, picture))
        self.waiting += 1
        if len(group) >= self.batch:
            self.infer(self.groups.pop(picture.size))
        elif self.waiting > self.max_waiting:
            self.infer(self.groups.pop(next(iter(self.groups))))

    def execute(self) -> Summary:
        self.started = time.perf_counter()
        workers = max(1, self.options.workers)
        self.decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self.encode_pool = ThreadPoolExecutor(workers, thread_name_prefix="encode")
        try:
            with self.bar:
                pending = iter(self.jobs)
                self.queue_decodes(pending)
                while self.decoding and not self.stopping():
                    job, future = self.decoding.popleft()
                    self.queue_decodes(pending)
                    exc = future.exception()
                    if exc is not None:
                        self.fail(job, _reason(exc))
                    else:
                        self.take(job, future.result())
                    self.finish_encodes(self.max_encoding)
                while self.groups and not self.stopping():
                    self.infer(self.groups.pop(next(iter(self.groups))))
                self.finish_encodes(0)  # what is being written is finished, even when stopping
        finally:
            # Stopping: decodes not started are dropped and those under way not waited for
            # (the caller ends the process without joining their threads).
            self.decode_pool.shutdown(wait=not self.stopping(), cancel_futures=True)
            self.encode_pool.shutdown(wait=True)
        return self.snapshot()


def run_jobs(
    backend: Backend,
    jobs: Sequence[Job],
    options: RunOptions,
    report: Callable[[str], None] = tqdm.write,
    stop: StopSignals | None = None,
) -> Summary:
    """Render every job with ``backend``; returns what happened. Never raises for one file."""
    return Run(backend, jobs, options, report, stop).execute()
