"""``bokeh-export``: checkpoint -> ONNX (fp32, fp16 or int8, checked) -> TensorRT engine;
``check`` and ``info`` for existing artefacts.

Exit codes: 0 ok, 1 checks or the build failed or the disk refused a write, 2 bad input or an
environment that cannot do the job, 130 / 143 stopped by SIGINT / SIGTERM (nothing partial is
left: see ``writes_output``). Heavy imports (torch, onnxruntime, TensorRT) happen inside the
commands that need them.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from dbsi.export.calibration import METHODS as CALIBRATION_METHODS
from dbsi.export.engine import DEFAULT_WORKSPACE_GIB
from dbsi.export.int8 import DEFAULT_CALIBRATION_COUNT, DEFAULT_METHOD
from dbsi.export.interrupt import Interrupted, raise_on_signals
from dbsi.runtime.atomic import disk_error_line
from dbsi.runtime.profile import DEFAULT_MAX_SHAPE, DEFAULT_OPT_SHAPE, build_profile, parse_shape
from dbsi.train.stop import exit_status


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def writes_output(command: Callable[..., None]) -> Callable[..., None]:
    """For a command that writes ``output``: SIGINT or SIGTERM stop it (exit 130 or 143) and a
    full or failing disk fails it (exit 1), each in one line; every artefact is written under a
    temporary name and renamed into place (``dbsi.runtime.atomic``), so neither leaves a
    partial file and an earlier file under the name stays as it was."""

    @functools.wraps(command)
    def run(*args: Any, output: Path, **kwargs: Any) -> None:
        with raise_on_signals():
            try:
                command(*args, output=output, **kwargs)
            except Interrupted as exc:
                fail(f"{output}: not written: {exc}", code=exit_status(exc.signum))
            except OSError as exc:
                line = disk_error_line(exc)
                if line is None:
                    raise
                fail(line, code=1)

    return run


def shape_option(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def print_report(report) -> None:
    for line in report.lines():
        click.echo(line)
    click.echo(report.summary())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Export a DBSI bokeh model: checkpoint -> ONNX -> TensorRT engine.

    \b
    bokeh-export onnx model.pt -o model.onnx          # fp32, checked on real photos
    bokeh-export onnx model.pt -o model-fp16.onnx --fp16
    bokeh-export onnx model.pt -o model-int8.onnx --int8 cpu --calibration photos/
    bokeh-export check model.onnx --checkpoint model.pt
    bokeh-export engine model.onnx -o model.engine    # needs TensorRT and an NVIDIA GPU
    bokeh-export info model.onnx
    """


@main.command("onnx")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="ONNX file to write (written only when every check passes).",
)
@click.option(
    "--fp16",
    is_flag=True,
    help="FP16 graph for strongly typed TensorRT builds (I/O types unchanged; softmax, "
    "blurs and the aperture mix stay fp32); checked at PSNR >= 40 dB against the fp32 render.",
)
@click.option(
    "--with-weights",
    is_flag=True,
    help="Add a second output 'weights' with the blend weight maps (bokeh-run "
    "--save-weights needs it).",
)
@click.option(
    "--skip-checks",
    is_flag=True,
    help="Write without running the graph on the check photos (no parity verdict; not "
    "recommended). The static checks, TensorRT parser rules included, still run.",
)
@click.option(
    "--mode",
    metavar="paper|fullres",
    help="Render mode of the graph (default: the checkpoint's); the weights serve both.",
)
@click.option(
    "--int8",
    type=click.Choice(["cpu", "tensorrt"]),
    help="INT8 graph calibrated on --calibration: 'cpu' for ONNX Runtime's CPU kernels (uint8 "
    "activations), 'tensorrt' for TensorRT's explicit quantization (symmetric int8); checked "
    "at PSNR >= 40 dB against the fp32 render.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    help="Folder of photos like the ones the model will render (searched recursively); "
    "required with --int8.",
)
@click.option(
    "--calibration-count",
    type=click.IntRange(1),
    default=DEFAULT_CALIBRATION_COUNT,
    show_default=True,
    help="Most photos to calibrate on (the first ones by path).",
)
@click.option(
    "--calibration-method",
    type=click.Choice(CALIBRATION_METHODS),
    default=DEFAULT_METHOD,
    show_default=True,
    help="How activation ranges are chosen from the calibration photos.",
)
@writes_output
def onnx_command(
    checkpoint: Path,
    output: Path,
    fp16: bool,
    with_weights: bool,
    skip_checks: bool,
    mode: str | None,
    int8: str | None,
    calibration: Path | None,
    calibration_count: int,
    calibration_method: str,
) -> None:
    """Export CHECKPOINT's whole render (uint8 BGR NHWC and the aperture in, uint8 BGR NHWC
    out) to ONNX in fp32, fp16 or int8 (calibrated on --calibration photos) and check it."""
    import onnx
    from tqdm import tqdm

    if int8 and fp16:
        raise click.UsageError("--int8 and --fp16 are two precisions: choose one")
    if calibration is not None and not int8:
        raise click.UsageError("--calibration goes with --int8")
    if int8 and calibration is None:
        fail(
            "--int8 needs --calibration DIR: a folder of photos like the ones the model will "
            "render (it never calibrates on anything else)"
        )
    if int8 and skip_checks:
        raise click.UsageError(
            "--int8 always runs its checks: the 40 dB check against the fp32 render is what "
            "tells a good calibration from a bad one"
        )

    from dbsi.export.calibration import read_calibration_set
    from dbsi.export.checks import CheckFailed, check_photos, run_checks
    from dbsi.export.fp16 import convert_to_fp16, require_fp16_converter
    from dbsi.export.int8 import quantize, require_quantizer
    from dbsi.export.onnx_graph import checkpoint_onnx, output_names
    from dbsi.runtime.atomic import atomic_path
    from dbsi.runtime.provenance import file_sha256
    from dbsi.train.checkpoint import read_checkpoint, renderer_from_checkpoint

    try:
        renderer = renderer_from_checkpoint(read_checkpoint(checkpoint), str(checkpoint), mode)
        photos = {} if skip_checks else check_photos()
        if int8:
            require_quantizer()
        if fp16:
            require_fp16_converter()
        calibration_set = read_calibration_set(calibration, calibration_count) if int8 else None
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    if calibration_set is not None:
        for reason in calibration_set.skipped:
            click.echo(f"calibration: skipped {reason}", err=True)
        click.echo(
            f"calibration: {len(calibration_set.files)} photos from {calibration}"
            + (f", {len(calibration_set.skipped)} skipped" if calibration_set.skipped else "")
        )
    precision = f"int8-{int8}" if int8 else "fp16" if fp16 else "fp32"
    converted = ["fp16"] if fp16 else ["int8"] if int8 else []
    stages = ["trace", *converted, "write", "check"]
    started = time.perf_counter()
    try:
        with tqdm(total=len(stages), desc="export", unit="stage") as bar:
            bar.set_postfix_str("tracing the render")
            model = checkpoint_onnx(renderer, file_sha256(checkpoint), with_weights=with_weights)
            bar.update()
            if fp16:
                bar.set_postfix_str("converting to fp16")
                model = convert_to_fp16(model)
                bar.update()
            if calibration_set is not None:
                bar.set_postfix_str(f"calibrating ({calibration_method}) and quantizing")
                with tqdm(total=len(calibration_set.files), desc="calibrate", unit="photo") as p:
                    model = quantize(model, int8, calibration_set, calibration_method, p.update)
                bar.update()
            with atomic_path(output) as tmp:
                bar.set_postfix_str("writing")
                onnx.save(model, str(tmp))
                bar.update()
                bar.set_postfix_str("checking" if skip_checks else "checking on real photos")
                report = run_checks(
                    tmp, renderer, photos, name=str(output), run_graph=not skip_checks
                )
                bar.update()
    except CheckFailed as exc:
        print_report(exc.report)
        fail(f"{output}: not written: {exc.report.summary()}", code=1)
    except (ValueError, RuntimeError) as exc:  # the quantizer's and ONNX Runtime's refusals
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(f"{output}: not written: {first_line}")
    print_report(report)
    size_mb = output.stat().st_size / 1e6
    click.echo(
        f"wrote {output} ({precision}, {size_mb:.1f} MB, outputs {output_names(with_weights)}) "
        f"in {time.perf_counter() - started:.1f} s"
        + (" -- not run on photos (--skip-checks)" if skip_checks else "")
    )


@main.command("check")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="The checkpoint MODEL was exported from; without it the graph is run on the "
    "photos but its pixels are not judged.",
)
def check_command(model: Path, checkpoint: Path | None) -> None:
    """Re-run the export checks on MODEL (checker, shape inference, TensorRT parser rules, ONNX
    Runtime against the PyTorch render of CHECKPOINT on real photos)."""
    from dbsi.export.checks import CheckFailed, check_photos, run_checks
    from dbsi.export.metadata import read_metadata
    from dbsi.runtime.provenance import file_sha256
    from dbsi.train.checkpoint import read_checkpoint, renderer_from_checkpoint

    try:
        metadata = read_metadata(model)
        renderer = None
        if checkpoint is not None:
            payload = read_checkpoint(checkpoint)
            if file_sha256(checkpoint) != metadata.checkpoint_sha256:
                raise ValueError(
                    f"{model}: was exported from another checkpoint than {checkpoint} "
                    f"(sha256 {metadata.checkpoint_sha256[:12]}...)"
                )
            config = metadata.config
            # The export may have chosen another render mode; everything else must agree.
            if {**payload["config"], "mode": config["mode"]} != config:
                raise ValueError(f"{model}: render config differs from {checkpoint}'s")
            renderer = renderer_from_checkpoint(payload, str(checkpoint), config["mode"])
        photos = check_photos()
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    try:
        report = run_checks(model, renderer, photos)
    except CheckFailed as exc:
        print_report(exc.report)
        fail(exc.report.summary(), code=1)
    print_report(report)


@main.command("engine")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Engine file to write; its sidecar goes to OUTPUT.json.",
)
@click.option("--min-shape", help="Smallest input NxHxWx3 (default 1 x min side x min side x 3).")
@click.option(
    "--opt-shape", help=f"Shape to tune for (default {'x'.join(map(str, DEFAULT_OPT_SHAPE))})."
)
@click.option(
    "--max-shape",
    help=f"Largest input NxHxWx3 (default {'x'.join(map(str, DEFAULT_MAX_SHAPE))}).",
)
@click.option(
    "--workspace",
    type=click.FloatRange(min=0.0625),
    default=DEFAULT_WORKSPACE_GIB,
    show_default=True,
    help="Builder workspace limit in GiB.",
)
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    help="Timing cache file, read if present (one from another GPU or TensorRT version is "
    "replaced by a fresh one) and updated after the build [default: "
    "tensorrt-<version>-sm<capability>.timing-cache next to OUTPUT].",
)
@click.option(
    "--tf32/--no-tf32",
    default=False,
    show_default=True,
    help="Allow TF32 for fp32 layers (faster on Ampere and newer, not fp32 parity).",
)
@click.option(
    "--version-compatible",
    is_flag=True,
    help="Build a version-compatible engine (loading it needs --allow-host-code).",
)
@writes_output
def engine_command(
    model: Path,
    output: Path,
    min_shape: str | None,
    opt_shape: str | None,
    max_shape: str | None,
    workspace: float,
    timing_cache: Path | None,
    tf32: bool,
    version_compatible: bool,
) -> None:
    """Build a TensorRT engine (strongly typed; precision from MODEL's types) and its sidecar."""
    from dbsi.export.engine import (
        BuildFailed,
        EnvironmentProblem,
        build_engine,
        default_timing_cache,
        require_tensorrt_and_gpu,
        tensorrt_graph_metadata,
    )

    shapes = shape_option(min_shape), shape_option(opt_shape), shape_option(max_shape)
    try:
        profile = build_profile(tensorrt_graph_metadata(model), *shapes)
        trt, gpu = require_tensorrt_and_gpu()
    except ValueError as exc:
        fail(str(exc))
    except EnvironmentProblem as exc:
        fail(f"cannot build a TensorRT engine here: {exc}")
    cache = timing_cache or default_timing_cache(output, trt.__version__, gpu["compute_capability"])
    click.echo(f"building {output} from {model} (profile {json.dumps(profile)}) ...")
    try:
        sidecar = build_engine(
            model,
            output,
            profile=profile,
            workspace_bytes=int(workspace * (1 << 30)),
            timing_cache=cache,
            tf32=tf32,
            version_compatible=version_compatible,
            log=click.echo,
        )
    except BuildFailed as exc:
        fail(str(exc), code=1)
    click.echo(
        f"wrote {output} and {output.name}.json: TensorRT {sidecar.tensorrt_version}, "
        f"{sidecar.gpu_name} (sm {sidecar.compute_capability}), {sidecar.precision}, "
        f"TF32 {'on' if tf32 else 'off'}, built in {sidecar.build_seconds:.1f} s; "
        f"timing cache {cache}"
    )


@main.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of aligned text.")
def info_command(file: Path, as_json: bool) -> None:
    """Print an ONNX's dbsi metadata, or an engine's sidecar (FILE is the engine or its .json)."""
    from dbsi.export.metadata import read_metadata
    from dbsi.runtime.errors import BackendError
    from dbsi.runtime.sidecar import ENGINE_SUFFIXES, read_sidecar

    try:
        if file.suffix in (*ENGINE_SUFFIXES, ".json"):
            # For display: the engine file itself is not needed, so its hash is not checked.
            info = read_sidecar(file).to_dict()
        else:
            info = read_metadata(file).to_props()
    except (ValueError, BackendError) as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    width = max(len(key) for key in info)
    for key, value in info.items():
        text = value if isinstance(value, str) else json.dumps(value)
        click.echo(f"{key:<{width}}  {text}")


if __name__ == "__main__":
    main()
