"""``bokeh-bench``: speed, parity, quality, scaling, per-layer profiles and video of DBSI
models on every backend here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dbsi.benchmarks.report import console_table, plot_scaling, write_reports
from dbsi.runtime.cli import finite_numbers
from dbsi.runtime.contract import APERTURE_RANGE
from dbsi.runtime.registry import BACKENDS

DEFAULT_CACHE = Path.home() / ".cache" / "dbsi-bokeh" / "bench"


def echo(text: str) -> None:
    click.echo(text, err=True)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def apply_options(fn: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        fn = option(fn)
    return fn


def timing_options(fn: Callable) -> Callable:
    """--repeats and --warmup, for the commands that time things."""
    return apply_options(
        fn,
        [
            click.option(
                "--repeats", type=click.IntRange(1), help="Measured calls (CPU 3, GPU 30)."
            ),
            click.option(
                "--warmup", type=click.IntRange(0), help="Unmeasured calls first (CPU 1, GPU 5)."
            ),
        ],
    )


OUT_OPTION = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-reports"),
    show_default=True,
    help="Folder for the JSON and markdown reports (and the scaling PNG).",
)


def common_options(fn: Callable) -> Callable:
    """--model, --out, --cache on every command."""
    options = [
        click.option(
            "--model",
            "models",
            multiple=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="Checkpoint (.pt: PyTorch reference, and an ONNX exported into --cache when no "
            ".onnx is given), ONNX (every ONNX Runtime provider here) or TensorRT .engine. "
            "Repeatable. None: a randomly initialised full-width model.",
        ),
        OUT_OPTION,
        click.option(
            "--cache",
            type=click.Path(file_okay=False, path_type=Path),
            default=DEFAULT_CACHE,
            show_default=True,
            help="Where exported ONNX files and the random checkpoint are kept between runs.",
        ),
    ]
    return apply_options(fn, options)


def environment_errors(fn: Callable) -> Callable:
    """Bad input or environment: a one-line error and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dbsi.runtime.errors import BackendError

        try:
            return fn(*args, **kwargs)
        except (ValueError, BackendError) as exc:
            fail(str(exc))

    return wrapper


def finish(report: dict[str, Any], columns: list, out: Path, stem: str) -> None:
    click.echo(f"Machine: {report['machine_summary']}")
    for note in report["notes"]:
        click.echo(f"note: {note}")
    click.echo(console_table(report["rows"], columns))
    paths = write_reports(report, columns, out, stem)
    click.echo("Reports: " + ", ".join(str(p) for p in paths.values()))


def parse_sizes(values: tuple[str, ...], default: tuple) -> list[tuple[int, int]]:
    from dbsi.benchmarks.speed import parse_size

    try:
        return [parse_size(v) for v in values] if values else list(default)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmark DBSI bokeh models: speed at HD, parity against the PyTorch reference,
    quality by the paper's protocol, scaling with resolution and batch size, where a graph's
    time goes layer by layer on the CPU runtimes (profile), and video:
    quality and flicker against true defocused clips, with and without temporal smoothing.

    Every command writes a console table plus JSON (all raw figures and the machine) and
    markdown reports into --out. Exit codes: 0 ok, 1 some check or item failed, 2 bad usage or
    environment.
    """


@main.command()
@common_options
@timing_options
@click.option(
    "--size",
    "sizes",
    multiple=True,
    metavar="HxW",
    help="Image size HxW, repeatable; 4k for 2160x3840. Default: HD 1024x1536 and the paper's "
    "1024x1575.",
)
@click.option(
    "--batch",
    "batches",
    multiple=True,
    type=click.IntRange(1),
    help="Batch size, repeatable. Default: 1.",
)
@click.option("--no-codec", is_flag=True, help="Skip the JPEG decode+encode measurements.")
@click.option(
    "--pytorch-only",
    is_flag=True,
    help="Time only the PyTorch renders of the checkpoint (no ONNX export, no runtime backends).",
)
@click.option(
    "--openvino-bf16",
    is_flag=True,
    help="Also run OpenVINO in bf16 (judged like fp16; slow on CPUs without native bf16).",
)
@environment_errors
def speed(
    models, out, repeats, warmup, cache, sizes, batches, no_codec, pytorch_only, openvino_bf16
) -> None:
    """Latency (median, p90, p99) and images/s of every backend, with and without JPEG
    decode+encode, FLOPs and achieved FLOP/s, and speed-up against the PyTorch reference
    ("x ref": reference median / backend median, same run). On a CUDA GPU the PyTorch rows
    include bf16 and fp16 autocast with channels_last, and a CUDA-graph replay."""
    from dbsi.benchmarks.speed import COLUMNS, DEFAULT_SIZES, speed_report

    report = speed_report(
        models,
        cache,
        parse_sizes(sizes, DEFAULT_SIZES),
        list(batches) or [1],
        repeats=repeats,
        warmup=warmup,
        with_codec=not no_codec,
        pytorch_only=pytorch_only,
        openvino_bf16=openvino_bf16,
        log=echo,
    )
    finish(report, COLUMNS, out, "speed")


@main.command()
@common_options
@click.option(
    "--pytorch-only",
    is_flag=True,
    help="Judge only the PyTorch 16-bit renders of the checkpoint (CUDA), no ONNX export or "
    "runtime backends.",
)
@click.option(
    "--openvino-bf16",
    is_flag=True,
    help="Also run OpenVINO in bf16 (judged like fp16; slow on CPUs without native bf16).",
)
@environment_errors
def parity(models, out, cache, pytorch_only, openvino_bf16) -> None:
    """Every backend against the PyTorch fp32 render of the same real photos (scikit-image's
    astronaut, coffee, chelsea, motorcycle): max abs error, PSNR, share of pixels off by more
    than one level, pass/fail by precision (fp32: max 2 levels and at most 0.1% of pixels off by
    more than 1; fp16 and bf16: PSNR >= 40 dB). On a CUDA GPU the PyTorch bf16/fp16 autocast
    and CUDA-graph renders are judged too. Exit code 1 when any backend fails."""
    from dbsi.benchmarks.parity import COLUMNS, failed_backends, parity_report

    report = parity_report(
        models, cache, log=echo, pytorch_only=pytorch_only, openvino_bf16=openvino_bf16
    )
    finish(report, COLUMNS, out, "parity")
    failed = failed_backends(report["rows"])
    if failed:
        click.echo(f"Parity FAILED for: {', '.join(failed)}")
        sys.exit(1)
    click.echo(f"Parity passed for all {len({r['backend'] for r in report['rows']})} backends.")


@main.command()
@common_options
@click.argument("data", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--subset",
    type=click.Choice(["auto", "val294", "all"]),
    default="auto",
    show_default=True,
    help="auto: Val294 (ids 4400-4693) when every one of them has a pair (the training "
    "split's rule), else every pair.",
)
@click.option(
    "--split-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='A training run\'s split.json ({"train": [...], "val": [...]}): evaluate only its '
    "val stems, so training pairs are not scored. Overrides --subset.",
)
@click.option(
    "--mode",
    "modes",
    multiple=True,
    type=click.Choice(["paper", "fullres"]),
    help="Render modes for the checkpoint (overriding its config). Default: both.",
)
@click.option("--limit", type=click.IntRange(1), help="Evaluate only the first N pairs.")
@click.option(
    "--lpips-backbone",
    type=click.Path(dir_okay=False, path_type=Path),
    help="torchvision's alexnet-owt-7be5be79.pth, if not in the torch hub cache.",
)
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a contact sheet PNG here: per pair input | model per mode | ground truth "
    "| weight maps (colours explained in its legend).",
)
@click.option(
    "--sheet-pairs",
    type=click.IntRange(1),
    default=6,
    show_default=True,
    help="Rows of the contact sheet (the first pairs evaluated; photos of --sheet-photos too).",
)
@click.option(
    "--sheet-photos",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of photos without ground truth to add to the sheet: input | bokeh (the "
    "checkpoint in fullres) | weight maps.",
)
@click.option(
    "--aperture",
    "apertures",
    type=click.FloatRange(*APERTURE_RANGE),
    callback=finite_numbers,
    multiple=True,
    help="Also score the model at this run-time aperture (repeat for several; rows show the "
    "mode as e.g. 'fullres a=0.5'). The plain rows are aperture 1, the model as trained.",
)
@environment_errors
def quality(
    models,
    out,
    cache,
    data,
    subset,
    split_file,
    modes,
    limit,
    lpips_backbone,
    sheet,
    sheet_pairs,
    sheet_photos,
    apertures,
):
    """PSNR, SSIM and LPIPS on DATA, an EBB!-layout folder (Training/original+bokeh,
    train/original+bokeh, or original/+bokeh/, e.g. `bokeh-train synth` output), by the paper
    author's protocol, for the model in each render mode and for two baselines: identity and a
    global 75x75 Gaussian blur. Without the AlexNet backbone file LPIPS is not computed: one
    note says so, and its column is empty ("-"; null in the JSON).
    Exit code 1 when some pair could not be evaluated.

    Example: bokeh-bench quality demo/data --split-file demo/run/split.json --model best.pt
    --sheet sheet.png"""
    from dbsi.benchmarks.quality import COLUMNS, RENDER_MODES, quality_report

    if sheet_photos is not None and sheet is None:
        fail("--sheet-photos adds to a contact sheet: give --sheet PATH too")

    report = quality_report(
        data,
        models,
        cache,
        subset=subset,
        split_file=split_file,
        modes=modes or RENDER_MODES,
        limit=limit,
        lpips_backbone=lpips_backbone,
        sheet=sheet,
        sheet_pairs=sheet_pairs,
        sheet_photos=sheet_photos,
        apertures=apertures,
        log=echo,
    )
    finish(report, COLUMNS, out, "quality")
    if any(r["failed"] for r in report["rows"]):
        sys.exit(1)


@main.command()
@common_options
@timing_options
@click.option(
    "--size",
    "sizes",
    multiple=True,
    metavar="HxW",
    help="Resolution sweep sizes, repeatable. Default: 512x768 up to 4K (2160x3840).",
)
@click.option(
    "--batch",
    "batches",
    multiple=True,
    type=click.IntRange(1),
    help="Batch sweep sizes, repeatable. Default: 1, 2, 4.",
)
@click.option(
    "--batch-size",
    "batch_at",
    default="1024x1536",
    show_default=True,
    metavar="HxW",
    help="Image size of the batch sweep.",
)
@environment_errors
def scaling(models, out, repeats, warmup, cache, sizes, batches, batch_at) -> None:
    """Time against resolution (batch 1) and against batch size, cost per megapixel, and a PNG
    of both curves (scaling.png)."""
    from dbsi.benchmarks.scaling import (
        COLUMNS,
        DEFAULT_BATCHES,
        DEFAULT_RESOLUTIONS,
        scaling_report,
    )

    report = scaling_report(
        models,
        cache,
        parse_sizes(sizes, DEFAULT_RESOLUTIONS),
        list(batches) or list(DEFAULT_BATCHES),
        parse_sizes((batch_at,), ())[0],
        repeats=repeats,
        warmup=warmup,
        log=echo,
    )
    finish(report, COLUMNS, out, "scaling")
    png = plot_scaling(report["rows"], out / "scaling.png")
    click.echo(f"Plot: {png}")


@main.command()
@common_options
@timing_options
@click.option(
    "--size",
    "sizes",
    multiple=True,
    metavar="HxW",
    help="Picture size, repeatable; 4k for 2160x3840. Default: 1024x1536 and 4K.",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(["openvino", "onnxruntime", "openvino-bf16"]),
    help="Profiler to run, repeatable. Default: openvino and onnxruntime (openvino-bf16: "
    "OpenVINO computing the graph in bf16, as bokeh-run --openvino-precision bf16).",
)
@environment_errors
def profile(models, out, repeats, warmup, cache, sizes, backends) -> None:
    """Where an ONNX graph's time goes on this CPU, from OpenVINO's per-layer counters and
    ONNX Runtime's profiling trace: milliseconds per call by layer kind and the kernel that
    ran it (an int8 layer on reference code shows here), and the slowest single layers. Each
    backend runs as bokeh-run opens it. For speed figures use `speed`."""
    from dbsi.benchmarks.layer_profile import COLUMNS, DEFAULT_PROFILERS, profile_report
    from dbsi.benchmarks.speed import parse_size

    report = profile_report(
        models,
        cache,
        parse_sizes(sizes, ((1024, 1536), parse_size("4k"))),
        list(backends) or list(DEFAULT_PROFILERS),
        warmup=3 if warmup is None else warmup,
        repeats=repeats or 3,
        log=echo,
    )
    finish(report, COLUMNS, out, "profile")


@main.command()
@OUT_OPTION
@click.option("--size", default="384x512", show_default=True, metavar="HxW", help="Training size.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True, help="Batch size.")
@click.option(
    "--steps", type=click.IntRange(1), default=20, show_default=True, help="Measured steps."
)
@click.option(
    "--warmup-steps",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Steps of an earlier, unmeasured session.",
)
@click.option("--preset", type=click.Choice(["paper", "tiny"]), default="paper", show_default=True)
@click.option("--width", type=float, help="Channel width multiplier (default: the preset's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--amp/--no-amp", default=None, help="Autocast (default: on for CUDA, as bokeh-train)."
)
@click.option(
    "--workers", type=click.IntRange(0), default=4, show_default=True, help="DataLoader workers."
)
@environment_errors
def training(out, size, batch, steps, warmup_steps, preset, width, device, amp, workers) -> None:
    """Training speed (images/s) and peak GPU memory of bokeh-train's own trainer: one phase
    of the preset at --size on synthetic pairs, a warm-up session, then a resumed session that
    is measured. On CUDA it trains as bokeh-train does there: bf16 autocast (fp16 with a grad
    scaler where bf16 is missing) and channels_last."""
    from dbsi.benchmarks.training import COLUMNS, training_report

    report = training_report(
        parse_sizes((size,), ())[0],
        batch,
        steps,
        warmup_steps,
        preset=preset,
        width=width,
        device=device,
        amp=amp,
        workers=workers,
        log=echo,
    )
    finish(report, COLUMNS, out, "training")


@main.command()
@OUT_OPTION
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ONNX or engine to run. Default: a random tiny model (kernels 5/11/21, network "
    "long side 64, width 0.125) exported into --cache.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_CACHE,
    show_default=True,
    help="Where the default model is kept between runs.",
)
@click.option("--count", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--size", default="96x128", show_default=True, metavar="HxW")
@click.option("--backend", default="auto", show_default=True, help="bokeh-run's --backend.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True)
@environment_errors
def soak(out, model, cache, count, size, backend, batch) -> None:
    """bokeh-run over --count small generated pictures, watched from outside: peak memory,
    open file descriptors (most, and at the end), and throughput over the first and the last
    thousand pictures of the same run. Exit code 1 when bokeh-run did not exit 0."""
    from dbsi.benchmarks.models import cached_onnx, random_checkpoint
    from dbsi.benchmarks.soak import COLUMNS, soak_report

    if model is None:
        tiny = random_checkpoint(cache, 0.125, kernel_sizes=(5, 11, 21), net_long_side=64)
        model = cached_onnx(tiny, cache, echo)
    report = soak_report(
        model, count, parse_sizes((size,), ())[0], backend=backend, batch=batch, log=echo
    )
    finish(report, COLUMNS, out, "soak")
    if report["rows"][0]["exit_code"] != 0:
        fail(f"bokeh-run exited {report['rows'][0]['exit_code']}", code=1)


@main.command()
@click.argument("data", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Exported model to render with: ONNX or TensorRT .engine. Repeatable.",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(BACKENDS),
    help="bokeh-run's --backend, repeatable. Default: every backend here that opens the model "
    "(each ONNX Runtime provider, OpenVINO when installed; TensorRT for an engine).",
)
@click.option(
    "--temporal",
    "strengths",
    multiple=True,
    type=click.FloatRange(0, 1, max_open=True),
    callback=finite_numbers,
    help="bokeh-run's --temporal strength, repeatable. Default: 0 and 0.6. Temporal 0 (every "
    "frame on its own) always runs: the other rows are compared with it.",
)
@click.option(
    "--batch", type=click.IntRange(1), default=4, show_default=True, help="Frames per inference."
)
@click.option(
    "--strip",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw this PNG: three frames of the first static clip on the first backend, "
    "input, each temporal strength and the truth, with each one's change since the frame "
    "before (flicker shows as speckle where the scene stands still).",
)
@OUT_OPTION
@environment_errors
def video(data, models, backends, strengths, batch, strip, out) -> None:
    """Render every clip of DATA, a `bokeh-train synth --video` set, through bokeh-run's video
    path (decode, render, lossless FFV1 encode) per model, backend and temporal strength, and
    score it against the true defocused clip: frames/s (decoding and encoding included), PSNR
    and SSIM (mean over frames, then clips) and flicker (the output's mean frame-to-frame
    change, in 8-bit levels, where the truth stands still), over all clips and per camera kind
    (static, pan). "flicker vs independent" and "PSNR change" compare each row with the same
    model and backend at temporal 0. The noisy inputs get a row of their own for scale.
    Exit code 1 when some clip failed.

    Example: bokeh-bench video demo/clips --model demo/model.onnx --temporal 0 --temporal 0.6"""
    from dbsi.benchmarks.video import COLUMNS, DEFAULT_STRENGTHS, video_report

    report = video_report(
        data,
        models,
        backends=backends,
        strengths=strengths or DEFAULT_STRENGTHS,
        batch=batch,
        strip=strip,
        log=echo,
    )
    finish(report, COLUMNS, out, "video")
    if any(r["failed"] for r in report["rows"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
