"""``bokeh-train``: generate the synthetic set, train the three phases, list the presets."""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

import click
from click.core import ParameterSource
from tqdm import tqdm

from dbsi.train import synthetic_video
from dbsi.train.phases import PRESETS, with_overrides
from dbsi.train.synthetic import SceneSpec, is_generated, prepare_output, write_dataset

CLIP_DEFAULTS = synthetic_video.ClipSpec()  # synth --video's defaults


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train the DBSI bokeh model (PyTorch) and make its synthetic training data."""


class SynthCommand(click.Command):
    """``synth``, whose bad values are one line (``error: ...``, exit 2) with --video."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        video = "--video" in args  # before parsing, which consumes args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not video:
                raise
            click.echo(f"error: {exc.format_message()}", err=True)
            ctx.exit(2)


@main.command(cls=SynthCommand)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write original/, bokeh/, depth/ and dataset.json into (--video: "
    "original/, bokeh/ and video.json).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    show_default="64; --video: 4",
    help="Number of scenes or clips (ids 0..count-1).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Scene or clip i depends only on (seed, i): same seed, same files.",
)
@click.option("--height", type=click.IntRange(min=16), show_default="96; --video: 192")
@click.option("--width", type=click.IntRange(min=16), show_default="128; --video: 256")
@click.option(
    "--max-coc",
    type=float,
    default=0.1,
    show_default=True,
    help="Strongest blur: circle of confusion at infinity, fraction of the long side.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Regenerate even if the same set is already there; write into a folder that holds "
    "files but no dataset.json (--video: video.json) of ours.",
)
@click.option(
    "--video",
    is_flag=True,
    help="Write video clips and their true defocused clips (lossless FFV1 .mkv) instead of stills.",
)
@click.option(
    "--frames",
    type=click.IntRange(min=2),
    default=CLIP_DEFAULTS.frames,
    show_default=True,
    help="--video: frames per clip.",
)
@click.option(
    "--fps",
    default=str(CLIP_DEFAULTS.fps),
    show_default=True,
    help="--video: frame rate, e.g. 24, 30, 29.97 or 24000/1001.",
)
@click.option(
    "--camera",
    type=click.Choice(["static", "pan", "both"]),
    default=CLIP_DEFAULTS.camera,
    show_default=True,
    help="--video: a still camera, a panning one (parallax), or both (even clips static, odd "
    "ones pan).",
)
@click.option(
    "--noise",
    type=float,
    default=CLIP_DEFAULTS.noise,
    show_default=True,
    help="--video: sensor noise of the originals, standard deviation in 8-bit levels at mid "
    "grey (0: none); the truth is noise-free.",
)
def synth(out: Path, count: int | None, seed: int, height: int | None, width: int | None,
          max_coc: float, force: bool, video: bool, frames: int, fps: str, camera: str,
          noise: float) -> None:  # fmt: skip
    """Render a synthetic depth-of-field set in the EBB! layout, or with --video a set of clips.

    Each scene stacks textured shapes at random depths over a far background; the ground truth
    is a thin-lens render (disc aperture, circle of confusion from depth and focus distance,
    layers blurred and composited back to front).

    With --video, each clip animates such a scene (shapes moving along smooth paths; the camera
    still or panning with parallax; the focus on one layer throughout): original/<i>.mkv, with
    mild sensor noise (clips 0, 1, 4, 5, ... with a sine tone too), and its true noise-free
    defocused clip bokeh/<i>.mkv, both lossless, described in video.json. Where the truth does
    not change between frames is given by dbsi.train.synthetic_video.static_mask.

    Regenerating into the same folder with other settings replaces the set: scenes numbered
    >= --count from the earlier set are removed, so training never mixes them in.

    Examples: bokeh-train synth --out demo/data --count 64 --seed 0

    bokeh-train synth --video --out demo/clips --count 4 --frames 24 --fps 24 --camera both
    """
    if video:
        synth_video(out, count, seed, height, width, max_coc, force, frames, fps, camera, noise)
        return
    context = click.get_current_context()
    given = [
        f"--{name}"
        for name in ("frames", "fps", "camera", "noise")
        if context.get_parameter_source(name) is not ParameterSource.DEFAULT
    ]
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with --video")
    count = 64 if count is None else count
    height = 96 if height is None else height
    width = 128 if width is None else width
    try:
        spec = SceneSpec(height=height, width=width, max_coc=max_coc)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if not force and is_generated(out, count, seed, spec):
        click.echo(f"{out}: these {count} scenes (seed {seed}) are already there, nothing to do")
        return
    try:
        removed = prepare_output(out, count, force)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if removed:
        click.echo(f"removed {len(removed)} files of scenes numbered >= {count} (earlier set)")
    with tqdm(total=count, desc="scenes", unit="scene") as bar:
        write_dataset(out, count, seed, spec, on_scene=lambda _: bar.update(1))
    click.echo(f"wrote {count} scenes of {height}x{width} (seed {seed}) to {out}")


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def synth_video(out: Path, count: int | None, seed: int, height: int | None, width: int | None,
                max_coc: float, force: bool, frames: int, fps: str, camera: str,
                noise: float) -> None:  # fmt: skip
    """``synth --video``: every refusal one line, exit 2; a full disk exit 1."""
    from dbsi.runtime.atomic import disk_error_line
    from dbsi.runtime.video import VideoError, load_av

    try:
        rate = Fraction(fps)
    except (ValueError, ZeroDivisionError):
        fail(f"--fps: {fps!r} is not a frame rate (e.g. 24, 29.97 or 24000/1001)")
    count = 4 if count is None else count
    try:
        scene = SceneSpec(
            height=CLIP_DEFAULTS.scene.height if height is None else height,
            width=CLIP_DEFAULTS.scene.width if width is None else width,
            max_coc=max_coc,
        )
        spec = synthetic_video.ClipSpec(scene, frames=frames, fps=rate, camera=camera, noise=noise)
        load_av()
    except (ValueError, VideoError) as exc:
        fail(str(exc))
    if not force and synthetic_video.is_generated(out, count, seed, spec):
        click.echo(f"{out}: these {count} clips (seed {seed}) are already there, nothing to do")
        return
    try:
        removed = synthetic_video.prepare_output(out, count, force)
    except ValueError as exc:
        fail(str(exc))
    if removed:
        click.echo(f"removed {len(removed)} files of clips numbered >= {count} (earlier set)")
    try:
        with tqdm(total=count, desc="clips", unit="clip") as bar:
            synthetic_video.write_videos(out, count, seed, spec, on_clip=lambda _: bar.update(1))
    except OSError as exc:
        line = disk_error_line(exc)
        if line is None:
            raise
        fail(f"{line}; the clips written before it are intact", 1)
    click.echo(
        f"wrote {count} clips of {spec.frames} frames, {scene.height}x{scene.width} at "
        f"{spec.fps} fps (seed {seed}) to {out}"
    )


@main.command()
def presets() -> None:
    """Show the built-in plans (phases, sizes, epochs, batch sizes, kernels, width)."""
    for name, plan in PRESETS.items():
        click.echo(f"{name}: kernels {list(plan.kernel_sizes)}, width {plan.width}, "
                   f"mode {plan.mode}, lr {plan.lr_start:g} -> {plan.lr_end:g}")  # fmt: skip
        for p in plan.phases:
            click.echo(f"  {p.name}: {p.height}x{p.width}, loss {p.loss}, "
                       f"{p.epochs} epochs, batch {p.batch_size}")  # fmt: skip


def parse_kernels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of odd sizes") from None


@main.command()
@click.argument("phases", nargs=-1)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Dataset root: AIM (Training/), PyNET (train/) or original/+bokeh/.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: plan.json, split.json, phaseN/{best,last}.pt, logs, grids.",
)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True)
@click.option(
    "--sizes",
    help="Training size HxW for every phase, or one per phase: 384x512,768x1024,768x1024.",
)
@click.option("--epochs", help="Epochs for every phase, or one per phase: 20,10,5.")
@click.option("--batch-size", help="Batch size (per process) for every phase, or one per phase.")
@click.option("--kernels", help="Blur kernel sizes, e.g. 25,45,75.")
@click.option("--width", type=float, help="Channel width multiplier (1.0 = MegaDepth).")
@click.option(
    "--mode", type=click.Choice(["fullres", "paper"]), help="Render mode stored in the checkpoints."
)
@click.option("--lr", type=float, help="Starting learning rate (decays to --lr-end over the run).")
@click.option("--lr-end", type=float, help="Final learning rate.")
@click.option("--seed", type=int, help="Seed for init, split, shuffling and flips.")
@click.option(
    "--megadepth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MegaDepth weights to initialise the backbone (width 1.0 only).",
)
@click.option(
    "--split-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON {"train": [stems], "val": [stems]} overriding the default split.',
)
@click.option("--resume", is_flag=True, help="Continue an unfinished phase from its last.pt.")
@click.option("--force", is_flag=True, help="Redo the selected phases even if finished.")
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    help="Stop (resumably) once the run reaches this global step.",
)
@click.option(
    "--save-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also write last.pt every N steps (0: at each epoch's end).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--amp/--no-amp",
    default=None,
    help="Autocast (bf16, else fp16). Default: on for CUDA, off for CPU.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=min(4, os.cpu_count() or 1),
    show_default=True,
    help="DataLoader worker processes decoding images.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars (logs only).")
def run(phases: tuple[str, ...], data: Path, out: Path, preset: str, sizes: str | None,
        epochs: str | None, batch_size: str | None, kernels: str | None, width: float | None,
        mode: str | None, lr: float | None, lr_end: float | None, seed: int | None,
        megadepth: Path | None, split_file: Path | None, resume: bool, force: bool,
        max_steps: int | None, save_every: int, device: str, amp: bool | None, workers: int,
        no_progress: bool) -> None:  # fmt: skip
    """Train all phases of a preset, or only the PHASES named (phase1 phase2 phase3).

    Each phase starts from the previous phase's best.pt; a finished phase is skipped on a
    rerun. Under torchrun (several GPUs or machines) each process trains its shard with DDP.
    Ctrl-C or SIGTERM stops after the current step with a resumable last.pt (exit 130 or 143;
    continue with --resume); a full disk stops the run with exit 1, earlier files intact.

    Example: bokeh-train run --preset tiny --data demo/data --out demo/run
    """
    from dbsi.runtime.atomic import disk_error_line
    from dbsi.train.loop import TrainingDiverged
    from dbsi.train.run_context import RunOptions
    from dbsi.train.run_folder import RunDirError
    from dbsi.train.stop import STOP_SIGNALS, exit_status
    from dbsi.train.trainer import Trainer

    try:
        plan = with_overrides(
            PRESETS[preset], sizes=sizes, epochs=epochs, batch_size=batch_size,
            kernel_sizes=parse_kernels(kernels), width=width, mode=mode, lr_start=lr,
            lr_end=lr_end, seed=seed,
        )  # fmt: skip
        options = RunOptions(
            data=data, out=out, device=device, amp=amp, workers=workers, split_file=split_file,
            megadepth=megadepth, resume=resume, force=force, max_steps=max_steps,
            save_every=save_every, progress=not no_progress,
        )  # fmt: skip
        trainer = Trainer(plan, options, log=lambda m: click.echo(m, err=True))
        results = trainer.run(list(phases) or None)
    except TrainingDiverged as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        # A full or failing disk: the write was atomic, so the last good files are intact.
        line = disk_error_line(exc)
        if line is None:
            raise
        click.echo(f"error: {line}; the files written before it are intact", err=True)
        sys.exit(1)
    except (RunDirError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if trainer.context.dist.main:
        summarise(results)
    # A signal exits with the shell's code for it (130 for SIGINT, 143 for SIGTERM) even when
    # --max-steps was also given; reaching --max-steps is a planned stop and exits 0.
    signals = {signum.name: signum for signum in STOP_SIGNALS}
    for result in results:
        if result.stopped_by in signals:
            sys.exit(exit_status(signals[result.stopped_by]))


def summarise(results: list) -> None:
    click.echo("summary:")
    for r in results:
        best = r.best_metrics
        scores = (
            f"best val PSNR {best['val_psnr']:.2f} dB, SSIM {best['val_ssim']:.4f}"
            if best else "no validation yet"
        )  # fmt: skip
        click.echo(f"  {r.phase}: {r.status}, {scores}, checkpoint {r.best}")


if __name__ == "__main__":
    main()
