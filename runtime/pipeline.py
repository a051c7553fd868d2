"""The batch run: decode on worker threads, infer on this thread, encode on worker threads.

Every stage is bounded (a fixed number of decodes in flight, a fixed number of decoded
pictures waiting for a batch, a fixed number of encodes in flight), so memory stays flat
whatever the number of files. Same-size pictures are grouped into batches of up to ``batch``
(brought within the backend's ``min_batch``..``max_batch``; a short group is padded);
when too many sizes are waiting, the oldest group runs as it is. Any failure is recorded
against its file with the reason, and the run goes on.
"""

from __future__ import annotations

import collections
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

from dbsi.runtime.atomic import atomic_write_bytes
from dbsi.runtime.backend import Backend
from dbsi.runtime.contract import OUTPUT_NAME, WEIGHTS_NAME
from dbsi.runtime.images import DEFAULT_QUALITY, ImageError, Picture, read_image, write_image
from dbsi.runtime.sources import Problem, Source
from dbsi.runtime.weight_maps import WEIGHTS_SUFFIX, colour_weights

# atomic_path's temporary names: ".{stem}.{8 random chars}.partial{suffix}".
PARTIAL_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.partial(?P<suffix>\.[^./]+)$")


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


@dataclasses.dataclass
class Summary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"done {self.done}, failed {self.failed}, skipped {self.skipped} in "
            f"{self.seconds:.1f} s ({self.images_per_second:.2f} images/s)"
        )


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
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


class _Run:
    """State of one run; ``execute`` drives it."""

    def __init__(
        self, backend: Backend, jobs: Sequence[Job], options: RunOptions, report: Callable
    ) -> None:
        self.backend = backend
        self.jobs = jobs
        self.options = options
        self.report = report
        self.summary = Summary()
        self.bar = tqdm(
            total=len(jobs),
            unit="img",
            desc="bokeh",
            disable=not options.progress,
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
            else:
                self.fail(job, _reason(exc))

    def infer(self, group: list[tuple[Job, Picture]]) -> None:
        self.waiting -= len(group)
        pictures = [picture.bgr for _, picture in group]
        # A profile whose minimum batch exceeds what is left runs copies of the last picture;
        # their outputs are dropped below.
        pictures += pictures[-1:] * (self.backend.min_batch - len(pictures))
        batch = np.stack(pictures)
        try:
            outputs = self.backend.run(batch, self.options.aperture)
        except Exception as exc:  # any backend error fails this batch only; the run goes on
            for job, _ in group:
                self.fail(job, f"inference failed: {_reason(exc)}")
            return
        weights = outputs.get(WEIGHTS_NAME) if self.options.save_weights else None
        for i, (job, picture) in enumerate(group):
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
        while len(self.decoding) < self.lookahead:
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
        start = time.perf_counter()
        workers = max(1, self.options.workers)
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="decode") as self.decode_pool,
            ThreadPoolExecutor(workers, thread_name_prefix="encode") as self.encode_pool,
            self.bar,
        ):
            pending = iter(self.jobs)
            self.queue_decodes(pending)
            while self.decoding:
                job, future = self.decoding.popleft()
                self.queue_decodes(pending)
                exc = future.exception()
                if exc is not None:
                    self.fail(job, _reason(exc))
                else:
                    self.take(job, future.result())
                self.finish_encodes(self.max_encoding)
            while self.groups:
                self.infer(self.groups.pop(next(iter(self.groups))))
            self.finish_encodes(0)
        self.summary.seconds = time.perf_counter() - start
        return self.summary


def run_jobs(
    backend: Backend,
    jobs: Sequence[Job],
    options: RunOptions,
    report: Callable[[str], None] = tqdm.write,
) -> Summary:
    """Render every job with ``backend``; returns what happened. Never raises for one file."""
    return _Run(backend, jobs, options, report).execute()
