"""``bokeh-bench``: speed, parity, quality and scaling of DBSI models on every backend here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from dbsi.benchmarks import machine as machine_info_module
from dbsi.benchmarks.report import console_table, plot_scaling, write_reports

# Fewer repeats on CPU so the default run (HD, full width, two backends) ends in minutes.
CPU_DEFAULTS = {"repeats": 3, "warmup": 1}
GPU_DEFAULTS = {"repeats": 30, "warmup": 5}
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
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("bench-reports"),
            show_default=True,
            help="Folder for the JSON and markdown reports (and the scaling PNG).",
        ),
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
        from dbsi.runtime.backend import BackendError

        try:
            return fn(*args, **kwargs)
        except (ValueError, BackendError) as exc:
            fail(str(exc))

    return wrapper


def settings(repeats: int | None, warmup: int | None, gpu: bool) -> tuple[int, int]:
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    return (
        repeats if repeats is not None else defaults["repeats"],
        warmup if warmup is not None else defaults["warmup"],
    )


def open_models(models: tuple[Path, ...], cache: Path, gpu: bool, **kwargs: Any):
    from dbsi.benchmarks.models import resolve_models

    return resolve_models(models, cache, gpu_present=gpu, log=echo, **kwargs)


def base_report(command: str, machine: dict[str, Any], model_set: Any, **extra: Any) -> dict:
    notes = []
    if model_set.random_weights:
        notes.append(
            "Weights are RANDOM (seed 0, full width): speed figures are real, quality is not."
        )
    notes.extend(f"not run: {s['name']}: {s['reason']}" for s in model_set.skipped)
    return {
        "command": command,
        "machine": machine,
        "machine_summary": machine_info_module.describe(machine),
        "random_weights": model_set.random_weights,
        "checkpoint": model_set.checkpoint,
        "backends": [
            {
                "name": c.name,
                "device": c.device,
                "precision": c.precision,
                "source": c.source,
                "reference": c.is_reference,
            }
            for c in model_set.candidates
        ],
        "skipped": model_set.skipped,
        "notes": notes,
        **extra,
    }


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
    quality by the paper's protocol, and scaling with resolution and batch size.

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
    help="Image size, repeatable. Default: HD 1024x1536 and the paper's 1024x1575.",
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
@environment_errors
def speed(models, out, repeats, warmup, cache, sizes, batches, no_codec, pytorch_only) -> None:
    """Latency (median, p90, p99) and images/s of every backend, with and without JPEG
    decode+encode, FLOPs and achieved FLOP/s, and speed-up against the PyTorch reference
    ("x ref": reference median / backend median, same run). On a CUDA GPU the PyTorch rows
    include bf16 and fp16 autocast with channels_last, and a CUDA-graph replay."""
    from dbsi.benchmarks.speed import COLUMNS, DEFAULT_SIZES, run_speed

    machine = machine_info_module.machine_info()
    gpu = bool(machine["gpus"])
    repeats, warmup = settings(repeats, warmup, gpu)
    size_list = parse_sizes(sizes, DEFAULT_SIZES)
    batch_list = list(batches) or [1]
    model_set = open_models(models, cache, gpu, torch_variants=True, with_backends=not pytorch_only)
    if not model_set.candidates:
        fail(
            "no backend could be opened here: " + "; ".join(s["reason"] for s in model_set.skipped)
        )
    calls = len(size_list) * len(batch_list) * len(model_set.candidates) * repeats
    calls *= 1 if no_codec else 2
    try:
        with tqdm(total=calls, desc="speed", unit="call", file=sys.stderr) as bar:
            rows = run_speed(
                model_set,
                size_list,
                batch_list,
                repeats=repeats,
                warmup=warmup,
                with_codec=not no_codec,
                progress=bar.update,
                log=echo,
            )
    finally:
        model_set.close()
    report = base_report(
        "speed",
        machine,
        model_set,
        rows=rows,
        settings={"repeats": repeats, "warmup": warmup, "sizes": size_list, "batches": batch_list},
    )
    report["notes"].append(
        f"{repeats} measured calls after {warmup} warm-up per row; p90/p99 by linear "
        "interpolation (numpy 'linear'); x ref = reference median / row median."
    )
    finish(report, COLUMNS, out, "speed")


@main.command()
@common_options
@environment_errors
def parity(models, out, cache) -> None:
    """Every backend against the PyTorch fp32 render of the same real photos (scikit-image's
    astronaut, coffee, chelsea, motorcycle): max abs error, PSNR, share of pixels off by more
    than one level, pass/fail by precision (fp32: max 2 levels and at most 0.1% of pixels off by
    more than 1; fp16 and bf16: PSNR >= 40 dB). On a CUDA GPU the PyTorch bf16/fp16 autocast
    and CUDA-graph renders are judged too. Exit code 1 when any backend fails."""
    from dbsi.benchmarks.images import real_photos
    from dbsi.benchmarks.parity import COLUMNS, run_parity

    machine = machine_info_module.machine_info()
    model_set = open_models(models, cache, bool(machine["gpus"]), torch_variants=True)
    photos, real = real_photos()
    try:
        if model_set.reference is None:
            fail(
                "parity needs the PyTorch reference: give the checkpoint with --model "
                "(and torch installed)"
            )
        others = [c for c in model_set.candidates if not c.is_reference]
        if not others:
            fail(
                "no backend to compare with the reference: "
                + ("; ".join(s["reason"] for s in model_set.skipped) or "give an ONNX or engine")
            )
        with tqdm(
            total=len(others) * len(photos), desc="parity", unit="photo", file=sys.stderr
        ) as bar:
            rows = run_parity(model_set, photos, progress=bar.update)
    finally:
        model_set.close()
    report = base_report("parity", machine, model_set, rows=rows, real_photos=real)
    if not real:
        report["notes"].append(
            "scikit-image is not installed: GENERATED images stood in for the real photos."
        )
    finish(report, COLUMNS, out, "parity")
    failed = sorted({r["backend"] for r in rows if not r["passed"]})
    if failed:
        click.echo(f"Parity FAILED for: {', '.join(failed)}")
        sys.exit(1)
    click.echo(f"Parity passed for all {len({r['backend'] for r in rows})} backends.")


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
@environment_errors
def quality(models, out, cache, data, subset, split_file, modes, limit, lpips_backbone):
    """PSNR, SSIM and LPIPS on DATA, an EBB!-layout folder (Training/original+bokeh,
    train/original+bokeh, or original/+bokeh/, e.g. `bokeh-train synth` output), by the paper
    author's protocol, for the model in each render mode and for two baselines: identity and a
    global 75x75 Gaussian blur. LPIPS is "unavailable" without the AlexNet backbone file.
    Exit code 1 when some pair could not be evaluated.

    Example: bokeh-bench quality demo/data --split-file demo/run/split.json --model best.pt"""
    from dbsi.benchmarks.lpips_alex import load_lpips
    from dbsi.benchmarks.pairs import select_pairs
    from dbsi.benchmarks.quality import (
        COLUMNS,
        PROTOCOL,
        candidate_method,
        evaluate,
        global_blur,
        identity,
    )

    try:
        import skimage  # noqa: F401
    except ImportError:
        fail(
            "quality needs scikit-image for the protocol's PSNR and SSIM "
            "(pip install 'dbsi-bokeh[dev]')"
        )
    machine = machine_info_module.machine_info()
    gpu = bool(machine["gpus"])
    pairs, chosen, left_out = select_pairs(data, subset, split_file)
    for reason in left_out:
        echo(f"left out: {reason}")
    pairs = pairs[:limit] if limit else pairs
    echo(f"{chosen}; evaluating {len(pairs)} pairs")
    lpips_model, lpips_status = load_lpips(lpips_backbone)
    echo(f"LPIPS: {lpips_status}")
    methods = [("identity", "-", identity), ("gaussian-blur-75", "-", global_blur)]
    opened = []
    checkpoints = [m for m in models if m.suffix.lower() in (".pt", ".pth", ".ckpt")]
    runtimes = [m for m in models if m not in checkpoints]
    for mode in modes or ("paper", "fullres"):
        if checkpoints or not models:
            model_set = open_models(tuple(checkpoints), cache, gpu, with_backends=False, mode=mode)
            opened.append(model_set)
            for c in model_set.candidates:
                methods.append((f"model ({c.name})", mode, candidate_method(c)))
    if runtimes:
        model_set = open_models(tuple(runtimes), cache, gpu)
        opened.append(model_set)
        for c in model_set.candidates:
            methods.append((f"model ({c.name})", c.config.get("mode", "?"), candidate_method(c)))
    try:
        with tqdm(total=len(pairs), desc="quality", unit="pair", file=sys.stderr) as bar:
            rows, per_pair = evaluate(
                methods, pairs, lpips_model, lpips_status, progress=bar.update, log=echo
            )
    finally:
        for model_set in opened:
            model_set.close()
    report = base_report(
        "quality",
        machine,
        opened[0] if opened else empty_set(),
        rows=rows,
        per_pair=per_pair,
        data=chosen,
        protocol=PROTOCOL,
        lpips=lpips_status,
    )
    report["notes"].append(f"Data: {chosen}. Protocol: {PROTOCOL}.")
    report["notes"].append(f"LPIPS: {lpips_status}")
    finish(report, COLUMNS, out, "quality")
    if any(r["failed"] for r in rows):
        sys.exit(1)


def empty_set():
    from dbsi.benchmarks.models import ModelSet

    return ModelSet([], [], False, None)


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
    from dbsi.benchmarks.scaling import COLUMNS, DEFAULT_BATCHES, DEFAULT_RESOLUTIONS, run_scaling

    machine = machine_info_module.machine_info()
    gpu = bool(machine["gpus"])
    repeats, warmup = settings(repeats, warmup, gpu)
    resolutions = parse_sizes(sizes, DEFAULT_RESOLUTIONS)
    batch_list = list(batches) or list(DEFAULT_BATCHES)
    batch_size = parse_sizes((batch_at,), ())[0]
    model_set = open_models(models, cache, gpu)
    if not model_set.candidates:
        fail(
            "no backend could be opened here: " + "; ".join(s["reason"] for s in model_set.skipped)
        )
    calls = (len(resolutions) + len(batch_list)) * len(model_set.candidates) * repeats
    try:
        with tqdm(total=calls, desc="scaling", unit="call", file=sys.stderr) as bar:
            rows = run_scaling(
                model_set,
                resolutions,
                batch_list,
                batch_size,
                repeats=repeats,
                warmup=warmup,
                progress=bar.update,
                log=echo,
            )
    finally:
        model_set.close()
    report = base_report(
        "scaling",
        machine,
        model_set,
        rows=rows,
        settings={
            "repeats": repeats,
            "warmup": warmup,
            "resolutions": resolutions,
            "batches": batch_list,
            "batch_size": batch_size,
        },
    )
    finish(report, COLUMNS, out, "scaling")
    png = plot_scaling(rows, out / "scaling.png")
    click.echo(f"Plot: {png}")


if __name__ == "__main__":
    main()
