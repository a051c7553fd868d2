"""``bokeh-run``: render bokeh for many pictures with an exported model (ONNX or TensorRT)."""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import click
from tqdm import tqdm

from dbsi.runtime.contract import APERTURE_RANGE, MAX_BATCH, WEIGHTS_NAME
from dbsi.runtime.errors import BackendError
from dbsi.runtime.images import DEFAULT_QUALITY, ImageError, check_opencv
from dbsi.runtime.onnxruntime_backend import PROVIDERS
from dbsi.runtime.pipeline import Run, RunOptions, Summary, plan_jobs, remove_stale_partials
from dbsi.runtime.registry import BACKENDS, choose_backend, open_backend
from dbsi.runtime.sources import (
    Problem,
    collect_sources,
    missing_inputs,
    resolve_shard,
    select_shard,
)
from dbsi.runtime.stop import StopSignals, exit_status
from dbsi.runtime.video import (
    VIDEO_EXTENSIONS,
    EncodeSettings,
    VideoError,
    check_video_settings,
    is_video_name,
    parse_bitrate,
)
from dbsi.runtime.video_run import VideoRun, merged

FORMATS = ("jpg", "jpeg", "png", "tif", "tiff", "webp", "bmp")
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def finite_numbers(
    ctx: click.Context, param: click.Parameter, value: float | tuple[float, ...]
) -> float | tuple[float, ...]:
    """click callback for ``FloatRange`` options: FloatRange lets ``nan`` through (every
    comparison with it is false), which would fail every picture instead of being bad usage."""
    values = value if isinstance(value, tuple) else (value,)
    if any(not math.isfinite(v) for v in values):
        raise click.BadParameter(f"must be a number from {param.type.min:g} to {param.type.max:g}")
    return value


def _report(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def _conclude(
    summary: Summary,
    problems: list[Problem],
    signum: signal.Signals | None,
    abandoned: str | None = None,
) -> int:
    """Print how the run ended (why it stopped early, then the summary line); return the exit
    status: a stop signal's (143, 130), else 1 when a picture failed, else 0."""
    summary.failed += len(problems)
    summary.failures[:0] = problems
    if summary.stopped is not None:
        how = f"; {abandoned}" if abandoned else ""
        rest = ""
        if signum is not None and summary.left:
            rest = f"; {summary.left} picture(s) left: rerun with --skip-existing to render them"
        _report(f"bokeh-run: stopped: {summary.stopped}{how}{rest}")
    click.echo(summary.line())
    if signum is not None:
        return exit_status(signum)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1)
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder; the input tree is mirrored below it.",
)
@click.option(
    "--list",
    "list_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Text file of input paths, one a line (same as @FILE among INPUTS).",
)
@click.option(
    "--backend",
    "backend_name",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto: native TensorRT for .engine; for .onnx, ONNX Runtime on an NVIDIA machine, "
    "else OpenVINO when installed (--provider or --openvino-precision name their backend). "
    "The run's header says which and why.",
)
@click.option(
    "--provider",
    type=click.Choice(tuple(PROVIDERS)),
    default=None,
    help="ONNX Runtime execution provider (default: the best available, tensorrt > cuda > cpu).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    default=1,
    show_default=True,
    help="Pictures per inference call; only same-size pictures share a batch. Brought within "
    "what the model takes (an engine's profile).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Output format (default: the input's).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=DEFAULT_QUALITY,
    show_default=True,
    help="JPEG / WebP quality.",
)
@click.option("--skip-existing", is_flag=True, help="Skip pictures whose output exists (resume).")
@click.option(
    "--shard",
    default=None,
    metavar="i/n|auto[/n]",
    help="i/n: render only this machine's share (0-based). auto: from a Slurm array job "
    "(SLURM_ARRAY_TASK_ID less SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT); auto/n: "
    "the task id as it is (Slurm's, or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX, "
    "which comes with no count) of n.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=min(4, os.cpu_count() or 1),
    show_default=True,
    help="Decode threads and encode threads (each).",
)
@click.option(
    "--save-weights",
    is_flag=True,
    help="Also write NAME.weights.png, the weight maps in colour (needs a model exported "
    "with its weights output).",
)
@click.option(
    "--aperture",
    type=click.FloatRange(*APERTURE_RANGE),
    callback=finite_numbers,
    default=1.0,
    show_default=True,
    help="Blur strength: 1 renders as trained, 0 keeps every picture sharp, 2 doubles every "
    "blur (up to the strongest the model has); graphs exported before this option take only 1.",
)
@click.option(
    "--openvino-precision",
    type=click.Choice(["f32", "bf16"]),
    default=None,
    help="OpenVINO's float precision (default f32; bf16 changes pixels and is slow on CPUs "
    "without native bf16).",
)
@click.option(
    "--allow-host-code",
    is_flag=True,
    help="Load version-compatible TensorRT engines (loading them runs code in the engine).",
)
@click.option(
    "--temporal",
    type=click.FloatRange(0.0, 0.95),
    callback=finite_numbers,
    default=0.0,
    show_default=True,
    help="Videos: how steady the blur stays from frame to frame. Each frame's weight maps "
    "carry this share of the previous frame's (an exponential average, restarted at scene "
    "cuts); every frame is still blurred from its own pixels. 0 renders each frame on its own; "
    "0.5-0.8 steadies the maps (fast subjects trail by about 1/(1-S) frames). Graphs exported "
    "before it render frames on their own.",
)
@click.option(
    "--video-codec",
    default=None,
    metavar="ENCODER",
    help="Video encoder (default: libx264, H.264, when this FFmpeg has it and the container "
    "holds it, else the container's default). ffv1 is lossless (in .mkv: --video-format mkv).",
)
@click.option(
    "--crf",
    type=click.IntRange(0, 63),
    default=None,
    help="Constant quality for libx264/libx265/libvpx-vp9/libaom-av1 (lower is better; "
    "default 18 for libx264).",
)
@click.option(
    "--bitrate",
    default=None,
    metavar="RATE",
    help="Video bitrate instead of constant quality, e.g. 8M or 800k.",
)
@click.option(
    "--video-format",
    type=click.Choice([e.lstrip(".") for e in VIDEO_EXTENSIONS]),
    default=None,
    help="Container of the output videos (default: the input's).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def main(
    model: Path,
    inputs: tuple[str, ...],
    out_dir: Path,
    list_files: tuple[Path, ...],
    backend_name: str,
    provider: str | None,
    batch: int,
    fmt: str | None,
    quality: int,
    skip_existing: bool,
    shard: str | None,
    workers: int,
    save_weights: bool,
    allow_host_code: bool,
    aperture: float,
    openvino_precision: str | None,
    temporal: float,
    video_codec: str | None,
    crf: int | None,
    bitrate: str | None,
    video_format: str | None,
    no_progress: bool,
) -> None:
    """Render synthetic bokeh for every picture in INPUTS with MODEL (.onnx or .engine).

    INPUTS are files, folders (searched recursively), glob patterns (quote them; ** recurses)
    or @LIST files. Outputs mirror the input tree under --out and are written atomically.

    \b
    Array jobs, one shard per task (see the README for the whole recipes):
      Slurm:      sbatch --array=0-15 --wrap "bokeh-run m.onnx in/ -o out/ --shard auto"
      Kubernetes: an Indexed Job (completionMode: Indexed, completions: 16) whose
                  container runs bokeh-run m.onnx in/ -o out/ --shard auto/16
                  (or --shard $(JOB_COMPLETION_INDEX)/16)

    Exit status: 0 all rendered, 1 some pictures failed (each is reported with the reason)
    or the disk refused 3 writes in a row (full, read-only: the run stops), 2 bad usage (an
    input that does not exist among them), unusable model or missing backend, 143 / 130
    stopped by SIGTERM / SIGINT (only whole files written; --skip-existing renders the rest).
    """
    if not inputs and not list_files:
        raise click.UsageError("give at least one input (file, folder, glob or @list)")
    try:
        shard_index, shard_count, shard_origin = resolve_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from exc
    missing = missing_inputs(inputs, list_files)
    if missing:
        named = ", ".join(missing)
        click.echo(f"bokeh-run: no such input file or folder: {named}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        check_opencv()
    except ImageError as exc:
        click.echo(f"bokeh-run: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    backend_options = {
        "provider": provider,
        "allow_host_code": allow_host_code,
        "openvino_precision": openvino_precision,
    }
    try:
        # The header says which backend runs and why (auto picks by machine and options).
        chosen, why = backend_name, f"--backend {backend_name}"
        if backend_name == "auto":
            chosen, why = choose_backend(model, backend_options)
        backend = open_backend(model, chosen, **backend_options)
    except BackendError as exc:
        click.echo(f"bokeh-run: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    with backend:
        if aperture != 1 and not backend.metadata.takes_aperture:
            click.echo(
                f"bokeh-run: {model}: exported without the aperture input, so it renders only at "
                "--aperture 1; re-export it with bokeh-export onnx to choose the blur strength",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        if save_weights and WEIGHTS_NAME not in backend.outputs:
            click.echo(
                f"bokeh-run: {model}: --save-weights needs a model exported with its 'weights' "
                "output (bokeh-export onnx --with-weights)",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        sources, problems = collect_sources(inputs, list_files, out_dir)
        sources = select_shard(sources, shard_index, shard_count)
        # A video is one item, kept in its container (or --video-format's); --format and
        # --save-weights are about pictures.
        videos = [s for s in sources if is_video_name(s.path)]
        photos = [s for s in sources if not is_video_name(s.path)]
        jobs, plan_problems = plan_jobs(photos, out_dir, fmt, save_weights)
        video_jobs, video_problems = plan_jobs(videos, out_dir, video_format, False)
        problems += plan_problems + video_problems
        if not jobs and not video_jobs and not problems:
            click.echo("bokeh-run: no input images or videos found", err=True)
            sys.exit(EXIT_USAGE)
        settings = EncodeSettings(video_codec, crf, None)
        if video_jobs:
            try:
                settings = EncodeSettings(video_codec, crf, bitrate and parse_bitrate(bitrate))
                check_video_settings(settings)
            except (ValueError, VideoError) as exc:
                click.echo(f"bokeh-run: {exc}", err=True)
                sys.exit(EXIT_USAGE)
        usable = backend.batch_size(batch)
        if usable != batch:
            _report(
                f"bokeh-run: --batch {batch} is outside the {backend.min_batch}..."
                f"{backend.max_batch} this model takes; using {usable}"
            )
            batch = usable
        removed = remove_stale_partials([*jobs, *video_jobs])
        if removed:
            _report(f"removed {removed} incomplete file(s) left by an interrupted run")
        origin = f" from {shard_origin}" if shard_origin else ""
        clips = f", {len(video_jobs)} video(s)" if video_jobs else ""
        share = f" (shard {shard_index}/{shard_count}{origin})" if shard else ""
        _report(
            f"bokeh-run: {len(jobs)} picture(s){clips}{share} on {backend.name} ({backend.device}, "
            f"{backend.precision}), batch {batch}, {workers} worker(s); backend {chosen} ({why})"
        )
        if video_jobs and temporal > 0 and not backend.metadata.takes_temporal:
            _report(
                f"bokeh-run: {model}: exported without the temporal inputs, so --temporal "
                f"{temporal:g} is ignored and every frame is rendered on its own; re-export it "
                "with bokeh-export onnx to smooth videos over time"
            )
        for problem in problems:  # after the header, like the failures of the run itself
            _report(f"FAILED {problem.path}: {problem.reason}")
        options = RunOptions(
            batch=batch,
            quality=quality,
            skip_existing=skip_existing,
            workers=workers,
            save_weights=save_weights,
            progress=not no_progress,
            aperture=aperture,
            temporal=temporal,
            out_dir=out_dir,
        )
        # SIGTERM / SIGINT: no new picture, the batch in flight finished or abandoned, only
        # whole files left, the summary, exit 143 / 130 (dbsi.runtime.stop).
        with StopSignals() as stop:
            run = Run(backend, jobs, options, _report, stop)
            clips_run = VideoRun(backend, video_jobs, options, settings, _report, stop)
            stop.on_abandon = lambda signum, how: _conclude(
                merged(run.snapshot(), clips_run.snapshot()), problems, signum, how
            )
            summary = run.execute()
            summary = merged(summary, clips_run.execute(after=summary))
            with stop.ending():
                code = _conclude(summary, problems, stop.requested)
                if stop.requested is not None:
                    stop.exit(code)  # no waiting for decode threads still reading
    sys.exit(code)


if __name__ == "__main__":
    main()
