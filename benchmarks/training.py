"""``bokeh-bench training``: how fast the real trainer trains, and the device memory it needs.

It runs ``bokeh-train``'s own trainer (``dbsi.train.trainer``) for one phase of the chosen
preset at the chosen size, so what is timed is what a training run does: the DataLoader
decoding JPEG pairs, flips, autocast (bf16 on CUDA, else fp16 with a grad scaler) with
channels_last on CUDA, the loss, the optimiser step. A first session of ``warmup_steps``
steps stops resumably (cuDNN and allocator warm-up happen there); a second session resumes it
for ``steps`` more and is the one measured: images per second over its training loop (the
trainer's own figure: validation and checkpoint writes are outside it) and, on CUDA, the
allocator's peak over the session.

The pairs are synthetic scenes (``dbsi.train.synthetic``) at the training size; a few distinct
scenes are rendered and their files repeated to fill one epoch, since speed does not depend on
what the pictures show and rendering hundreds of scenes would cost more than the benchmark.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbsi.benchmarks.machine import describe, machine_info
from dbsi.runtime.atomic import atomic_write_bytes

COLUMNS = [
    ("device", "device", ""),
    ("preset", "preset", ""),
    ("size", "size", ""),
    ("width", "width", "g"),
    ("batch", "batch", "d"),
    ("precision", "precision", ""),
    ("layout", "layout", ""),
    ("steps", "steps", "d"),
    ("img/s", "images_per_s", ".1f"),
    ("peak GPU MiB", "peak_gpu_memory_mib", ".0f"),
]
# Distinct scenes rendered; their files are repeated to fill the epoch.
DISTINCT_SCENES = 8
# The trainer holds out a seeded 10% for validation: room so that the training share still
# fills warm-up and measured steps within one epoch (no validation among the measured steps).
HOLDOUT = 0.1


def write_training_pairs(folder: Path, count: int, height: int, width: int) -> None:
    """``count`` pairs (``original/i.jpg``, ``bokeh/i.jpg``) of synthetic scenes at
    ``height`` x ``width``, cycling through ``DISTINCT_SCENES`` rendered ones."""
    from dbsi.train.synthetic import SceneSpec, encode, render_scene

    spec = SceneSpec(height=height, width=width)
    encoded = []
    for index in range(min(count, DISTINCT_SCENES)):
        scene = render_scene(0, index, spec)
        encoded.append(
            (encode(scene.original, ".jpg", spec.jpeg_quality), encode(scene.bokeh, ".jpg"))
        )
    for index in range(count):
        original, bokeh = encoded[index % len(encoded)]
        atomic_write_bytes(folder / "original" / f"{index}.jpg", original)
        atomic_write_bytes(folder / "bokeh" / f"{index}.jpg", bokeh)


def training_rows(
    size: tuple[int, int],
    batch: int,
    steps: int,
    warmup_steps: int,
    *,
    preset: str = "paper",
    width: float | None = None,
    device: str = "auto",
    amp: bool | None = None,
    workers: int = 4,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train ``warmup_steps`` steps, then ``steps`` more in a resumed session, and return the
    measured session as one row (see the module docstring)."""
    import torch

    from dbsi.train.phases import PRESETS, with_overrides
    from dbsi.train.run_context import RunOptions
    from dbsi.train.trainer import Trainer

    height, width_px = size
    plan = with_overrides(
        PRESETS[preset],
        sizes=f"{height}x{width_px}",
        epochs="1",
        batch_size=str(batch),
        width=width,
    )
    phase = plan.phases[0]
    count = math.ceil(batch * (warmup_steps + steps) / (1 - HOLDOUT)) + 2
    work = Path(tempfile.mkdtemp(prefix="bokeh-bench-training-"))
    try:
        log(f"Writing {count} training pairs at {height}x{width_px} ...")
        write_training_pairs(work / "data", count, height, width_px)

        def session(max_steps: int, resume: bool) -> Any:
            options = RunOptions(
                work / "data",
                work / "run",
                device=device,
                amp=amp,
                workers=workers,
                resume=resume,
                max_steps=max_steps,
                progress=False,
            )
            trainer = Trainer(plan, options, log=lambda message: None)
            return trainer, trainer.run([phase.name])[0]

        log(f"Warm-up: {warmup_steps} steps ...")
        session(warmup_steps, resume=False)
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        log(f"Measuring: {steps} steps ...")
        trainer, result = session(warmup_steps + steps, resume=True)
        context = trainer.context
        peak = torch.cuda.max_memory_allocated() if context.device.type == "cuda" else None
        precision = str(context.amp_dtype).replace("torch.", "") if context.amp_dtype else "fp32"
        return [
            {
                "device": torch.cuda.get_device_name(context.device)
                if context.device.type == "cuda"
                else "CPU",
                "preset": preset,
                "size": f"{height}x{width_px}",
                "height": height,
                "width": plan.width,
                "batch": phase.batch_size,
                "precision": f"{precision} autocast" if context.amp_dtype else precision,
                "layout": "channels_last" if context.channels_last else "contiguous",
                "steps": result.steps - warmup_steps,
                "warmup_steps": warmup_steps,
                "images_per_s": result.images_per_s,
                "peak_gpu_memory_bytes": peak,
                "peak_gpu_memory_mib": None if peak is None else peak / 2**20,
                "workers": workers,
            }
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def training_report(
    size: tuple[int, int], batch: int, steps: int, warmup_steps: int, **options: Any
) -> dict[str, Any]:
    """``bokeh-bench training``'s report: the machine, the row, and what the figures mean."""
    machine = machine_info()
    rows = training_rows(size, batch, steps, warmup_steps, **options)
    return {
        "command": "training",
        "machine": machine,
        "machine_summary": describe(machine),
        "rows": rows,
        "notes": [
            "images/s: the trainer's own figure over the measured session's training loop "
            f"({rows[0]['steps']} steps after {warmup_steps} warm-up steps in an earlier "
            "session; JPEG decoding in the DataLoader included, validation and checkpoint "
            "writes not); weights are randomly initialised.",
            "peak GPU MiB: PyTorch's caching-allocator peak over the measured session "
            "(weights, Adam state, activations, gradients).",
        ],
    }
